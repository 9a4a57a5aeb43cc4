"""Pipeline vs model-only throughput: consistent figures, replayed sources, stages overlapping.

No assertion here depends on how fast this machine is; the overlap test uses sleeping stages,
whose timing holds even when the CPU is busy with other work.
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from test_runtime_pipeline import SlowRunner, standin_onnx

from mrfs_edge.assets import SAMPLES
from mrfs_edge.backends import open_runner
from mrfs_edge.io.pairing import open_pair
from mrfs_edge.io.sinks import Rendered, Sink
from mrfs_edge.runtime import Pipeline, PipelineOptions
from mrfs_edge.runtime.pipeline import STAGES
from mrfs_edge.runtime.throughput import RepeatedPairs, measure_throughput
from mrfs_edge.tools.run import fps_main

NAMES = ["00147D", "00508D", "00530D"]


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return standin_onnx(tmp_path_factory.mktemp("model") / "standin.onnx")


@pytest.fixture(scope="module")
def pairs_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pairs")
    for sub in ("vi", "ir"):
        (root / sub).mkdir()
        for name in NAMES:
            shutil.copy(SAMPLES / sub / f"{name}.png", root / sub)
    return root


def test_repeated_pairs_replay_a_folder_until_count(pairs_dir):
    pairs = list(RepeatedPairs(open_pair(str(pairs_dir / "vi"), str(pairs_dir / "ir")), 7))
    assert [v.name for v, _ in pairs] == NAMES * 2 + NAMES[:1]
    assert all(v.name == i.name for v, i in pairs)
    assert np.array_equal(pairs[3][0].image, pairs[0][0].image)


def test_measure_throughput_figures_are_consistent(model, pairs_dir):
    runner = open_runner(model, threads=1)
    with runner:      # 3 pairs, 9 frames: the folder is replayed
        result = measure_throughput(runner, open_pair(str(pairs_dir / "vi"), str(pairs_dir / "ir")), 7, 2)
    assert result.frames == 7 and result.warmup == 2 and result.dropped == 0
    assert result.model_only_fps > 0 and result.end_to_end_fps > 0
    assert result.ratio == pytest.approx(result.end_to_end_fps / result.model_only_fps)
    assert list(result.stage_ms) == list(STAGES) and all(ms >= 0 for ms in result.stage_ms.values())
    assert result.threads == 1 and result.backend == "onnxruntime" and result.device == "cpu"
    assert json.loads(json.dumps(result.as_dict()))["stage_ms"] == result.stage_ms
    table = result.table()
    assert "model-only" in table and "end-to-end" in table and f"ratio {result.ratio:.3f}" in table


class SleepySink(Sink):
    """An output that takes ``delay_s`` per frame, like a video encoder or a display."""

    uri = "sleepy://"

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s

    def write(self, frame: Rendered) -> None:
        time.sleep(self.delay_s)


def test_model_and_output_stages_overlap(pairs_dir):
    """A 100 ms model and a 100 ms output run at ~10 fps together, not ~5 fps one after the other."""
    source = RepeatedPairs(open_pair(str(pairs_dir / "vi"), str(pairs_dir / "ir")), 14)
    pipeline = Pipeline(SlowRunner(0.1, 480, 640), source, [SleepySink(0.1)],
                        options=PipelineOptions(status_interval_s=0, warmup_frames=2))
    log = pipeline.run()
    assert log["frames"]["written"] == 14 and log["steady"]["frames"] == 12
    assert log["steady"]["fps"] > 6.0


def test_fps_script_writes_json_and_errors_are_one_line(tmp_path, model, pairs_dir, capsys):
    out = tmp_path / "fps.json"
    assert fps_main(["--model", str(model), "--visible", str(pairs_dir / "vi"), "--infrared", str(pairs_dir / "ir"),
                     "--threads", "1", "--frames", "4", "--warmup", "1", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    result = json.loads(out.read_text())
    assert result["frames"] == 4 and result["threads"] == 1 and f"{result['end_to_end_fps']:.2f} fps" in printed
    with pytest.raises(SystemExit) as exited:       # an argument error: argparse exits with 2 after its line
        fps_main(["--model", str(model), "--frames", "0"])
    assert exited.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: argument --frames: must be a positive whole number, got 0 (see --help)"]
