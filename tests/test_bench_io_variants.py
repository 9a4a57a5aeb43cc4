"""Every export layout the runtime runs is one the benchmark scores, with the runtime's own figures.

The benchmark's accuracy used to build float NCHW inputs itself, so a ``--uint8-io`` export that
the runtime ran failed there. Now both go through one model I/O adapter: for each variant the
demo checkpoint is exported with the export CLI, benchmarked with the benchmark CLI (ONNX Runtime
FP32 row on ``--onnx``) and run with the runtime CLI writing its class maps, and the mIoU and pixel
accuracy of the runtime's class maps against the labels must be the benchmark row's, on 2 pairs.
"""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import pytest

pytest.importorskip("torch")
pytest.importorskip("onnx")

from test_bench import small_pairs  # noqa: F401  (the fixture: 2 labelled 224×320 pairs)

from mrfs_edge.backends.onnxruntime_runner import read_onnx_contract
from mrfs_edge.io.pairs import PairFolder
from mrfs_edge.metrics.segmentation import SegmentationScore
from mrfs_edge.tools.benchmark import main as benchmark_main
from mrfs_edge.tools.export_onnx import main as export_main
from mrfs_edge.tools.run import run_main

VARIANTS = {"uint8-io": (["--uint8-io"], {"uint8_io": True}),
            "labels-output": (["--seg-output", "labels"], {"seg_output": "labels"}),
            "ir-channels-3": (["--ir-channels", "3"], {"ir_channels": 3})}


def runtime_score(model: Path, pairs: Path, out: Path) -> SegmentationScore:
    """The runtime CLI over ``pairs`` (label PNGs saved), scored against the pairs' labels."""
    assert run_main(["--model", str(model), "--backend", "onnxruntime-cpu", "--threads", "1",
                     "--visible", str(pairs / "vi"), "--infrared", str(pairs / "ir"), "--output", str(out),
                     "--save-raw", "--no-display"]) == 0
    contract = read_onnx_contract(model)
    score = SegmentationScore(contract.num_classes, tuple(contract.class_names))
    folder = PairFolder(pairs, None)
    for index in range(len(folder)):
        pair = folder[index]
        labels = cv2.imread(str(out / "label" / f"{pair.name}.png"), cv2.IMREAD_UNCHANGED)
        assert labels is not None and labels.shape == pair.size, pair.name
        score.update(pair.label, labels)
    return score


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_variant_export_is_benchmarked_with_the_runtimes_accuracy(variant, small_pairs, tmp_path,  # noqa: F811
                                                                   one_torch_thread):
    flags, expected = VARIANTS[variant]
    model = tmp_path / f"demo_{variant}.onnx"
    assert export_main(["--height", "224", "--width", "320", *flags, "--output", str(model)]) == 0
    contract = read_onnx_contract(model)
    assert {key: getattr(contract, key) for key in expected} == expected

    out = tmp_path / "bench"
    assert benchmark_main(["--onnx", str(model), "--modes", "ort-fp32", "--data", str(small_pairs),
                           "--runs", "1", "--warmup", "0", "--threads", "1", "--grid-pairs", "1",
                           "--no-progress", "--output-dir", str(out)]) == 0
    rows = {row["mode"]: row for row in json.loads((out / "report.json").read_text())["rows"]}
    row = rows["onnxruntime-fp32"]
    assert row["model_file"] == str(model)
    assert row["latency"] is not None and row["accuracy"] is not None, row["reasons"]
    assert row["accuracy"]["pairs"] == 2

    runtime = runtime_score(model, small_pairs, tmp_path / "runtime")
    assert row["accuracy"]["miou"] == pytest.approx(runtime.miou, abs=1e-12)
    assert row["accuracy"]["pixel_accuracy"] == pytest.approx(runtime.accuracy, abs=1e-12)
    assert 0.0 < runtime.accuracy <= 1.0
    # The same network as the PyTorch reference row: only float rounding may flip a pixel.
    assert row["accuracy"]["agreement"] >= 0.999
