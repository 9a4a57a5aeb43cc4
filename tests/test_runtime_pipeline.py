"""The runtime loop end to end on a tiny stand-in ONNX model that follows the export contract.

The real MRFS ONNX comes from the exporter; the stand-in has the same inputs, outputs and
metadata (seg = 1×1 conv over concat(visible, infrared), fused = visible), so everything the
runtime does around the model is exercised in well under a second per run.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from test_runtime_sources import FakeCamera, write_video

from mrfs_edge.assets import SAMPLES
from mrfs_edge.backends import open_runner
from mrfs_edge.backends.base import Runner
from mrfs_edge.core.contract import ModelContract
from mrfs_edge.core.errors import ModelFileError, SourceError
from mrfs_edge.io.images import read_infrared, read_visible
from mrfs_edge.io.pairing import PairedSource, open_pair
from mrfs_edge.io.sinks import ImageFolderSink, VideoFileSink, open_sinks
from mrfs_edge.processing.adapter import ModelAdapter
from mrfs_edge.processing.postprocess import argmax_classes
from mrfs_edge.processing.preprocess import fit_to_model, to_network_inputs
from mrfs_edge.processing.registration import Registration
from mrfs_edge.processing.visualize import composite
from mrfs_edge.runtime import Pipeline, PipelineOptions
from mrfs_edge.tools.run import run_main

REPO = Path(__file__).resolve().parents[1]
NAMES = ["00147D", "00508D", "00530D"]
QUIET = {"status_interval_s": 0}


def standin_onnx(path: Path, height: int = 480, width: int = 640, num_classes: int = 9,
                 uint8_io: bool = False, seg_output: str = "logits") -> Path:
    """A contract-following ONNX graph built with ``onnx.helper`` (deterministic weights)."""
    pytest.importorskip("onnx", reason="writes its stand-in model with onnx.helper (not in the core install)")
    from onnx import TensorProto, helper, numpy_helper, save

    weight = np.random.default_rng(0).normal(size=(num_classes, 4, 1, 1)).astype(np.float32)
    initializers = [numpy_helper.from_array(weight, "weight")]
    if uint8_io:
        inputs = [helper.make_tensor_value_info("visible", TensorProto.UINT8, [1, height, width, 3]),
                  helper.make_tensor_value_info("infrared", TensorProto.UINT8, [1, height, width, 1])]
        initializers.append(numpy_helper.from_array(np.array(1 / 255, np.float32), "scale"))
        nodes = [node for name in ("visible", "infrared") for node in (
            helper.make_node("Cast", [name], [f"{name}_f"], to=TensorProto.FLOAT),
            helper.make_node("Transpose", [f"{name}_f"], [f"{name}_t"], perm=[0, 3, 1, 2]),
            helper.make_node("Mul", [f"{name}_t", "scale"], [f"{name}_n"]))]
        concat_inputs = ["visible_n", "infrared_n"]
        fused = helper.make_tensor_value_info("fused", TensorProto.UINT8, [1, height, width, 3])
    else:
        inputs = [helper.make_tensor_value_info("visible", TensorProto.FLOAT, [1, 3, height, width]),
                  helper.make_tensor_value_info("infrared", TensorProto.FLOAT, [1, 1, height, width])]
        nodes, concat_inputs = [], ["visible", "infrared"]
        fused = helper.make_tensor_value_info("fused", TensorProto.FLOAT, [1, 3, height, width])
    nodes += [helper.make_node("Concat", concat_inputs, ["both"], axis=1),
              helper.make_node("Conv", ["both", "weight"], ["logits"]),
              helper.make_node("Identity", ["visible"], ["fused"])]
    if seg_output == "labels":
        nodes += [helper.make_node("ArgMax", ["logits"], ["argmax"], axis=1, keepdims=0),
                  helper.make_node("Cast", ["argmax"], ["seg_labels"], to=TensorProto.INT32)]
        seg = helper.make_tensor_value_info("seg_labels", TensorProto.INT32, [1, height, width])
    else:
        nodes[-2].output[0] = "seg_logits"
        seg = helper.make_tensor_value_info("seg_logits", TensorProto.FLOAT, [1, num_classes, height, width])
    model = helper.make_model(helper.make_graph(nodes, "standin", inputs, [seg, fused], initializers),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    contract = ModelContract(backbone="standin", num_classes=num_classes, decoder_embed_dim=0, height=height,
                             width=width, uint8_io=uint8_io, seg_output=seg_output)
    helper.set_model_props(model, contract.metadata())
    save(model, str(path))
    return path


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return standin_onnx(tmp_path_factory.mktemp("model") / "standin.onnx")


@pytest.fixture()
def pairs_dir(tmp_path) -> Path:
    for sub in ("vi", "ir"):
        (tmp_path / sub).mkdir()
        for name in NAMES:
            shutil.copy(SAMPLES / sub / f"{name}.png", tmp_path / sub)
    return tmp_path


def run_pipeline(model: Path, source: PairedSource, out: Path, **options) -> dict:
    sinks = [ImageFolderSink(out, save_raw=True)]
    runner = open_runner(model, "onnxruntime-cpu", threads=1)
    return Pipeline(runner, source, sinks, options=PipelineOptions(**{**QUIET, **options})).run()


def raw_outputs(folder: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    labels = sorted((folder / "label").glob("*.png"))
    return [(cv2.imread(str(p), cv2.IMREAD_UNCHANGED), cv2.imread(str(folder / "fused" / p.name))) for p in labels]


def test_feed_equals_evaluation_preprocessing_at_model_size(model):
    contract = open_runner(model).contract
    visible, infrared = read_visible(SAMPLES / "vi" / "00147D.png"), read_infrared(SAMPLES / "ir" / "00147D.png")
    feed, fit = fit_to_model(visible, infrared, contract)
    vis, ir, padding = to_network_inputs(visible, infrared, (480, 640))
    assert np.array_equal(feed["visible"], vis) and np.array_equal(feed["infrared"], ir)
    assert not fit.resized and fit.frame_size == (480, 640) and fit.padding == padding


@pytest.mark.parametrize("size, resized", [((960, 1280), True), ((480, 600), False), ((600, 640), True)])
def test_other_frame_sizes_are_fitted_and_outputs_mapped_back(tmp_path, size, resized):
    runner = open_runner(standin_onnx(tmp_path / "m.onnx"), threads=1)
    visible = cv2.resize(read_visible(SAMPLES / "vi" / "00147D.png"), size[::-1])
    infrared = cv2.resize(read_infrared(SAMPLES / "ir" / "00147D.png"), size[::-1])
    adapter = ModelAdapter(runner.contract)
    feed, (fit,) = adapter.feed([(visible, infrared)])
    assert feed["visible"].shape == (1, 3, 480, 640) and fit.resized == resized
    (output,) = adapter.restore(runner.infer(feed), [fit])
    labels, fused = output.labels, output.fused_rgb()
    assert labels.shape == size and labels.dtype == np.uint8 and fused.shape == (*size, 3)
    if not resized:                                        # padding only: the fused output is the input
        assert np.array_equal(fused, visible)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_argmax_classes_equals_numpy_argmax_including_ties(dtype):
    rng = np.random.default_rng(3)
    for logits in (rng.normal(size=(9, 48, 64)), rng.integers(0, 3, size=(9, 48, 64))):   # the second: many ties
        logits = logits.astype(dtype)
        labels = argmax_classes(logits)
        assert labels.dtype == np.uint8 and np.array_equal(labels, logits.argmax(axis=0))


def test_uint8_labels_model_agrees_with_float_logits_model(tmp_path, model):
    float_runner = open_runner(model, threads=1)
    uint8_runner = open_runner(standin_onnx(tmp_path / "u8.onnx", 480, 640, uint8_io=True, seg_output="labels"),
                               threads=1)
    visible = read_visible(SAMPLES / "vi" / "00508D.png")[:, 20:620]        # 480×600: padded sideways
    infrared = read_infrared(SAMPLES / "ir" / "00508D.png")[:, 20:620]
    results = []
    for runner in (float_runner, uint8_runner):
        (output,) = ModelAdapter(runner.contract).run(runner, [(visible, infrared)])
        results.append((output.labels, output.fused_rgb()))
    (labels_f, fused_f), (labels_u, fused_u) = results
    assert np.mean(labels_f == labels_u) > 0.999           # float rounding may flip near-ties only
    assert np.array_equal(fused_f, fused_u) and np.array_equal(fused_u, visible)


def test_folder_pairs_and_lossless_videos_give_identical_outputs(tmp_path, model, pairs_dir):
    vis_video = write_video(tmp_path / "vi.mkv", [cv2.imread(str(pairs_dir / "vi" / f"{n}.png")) for n in NAMES])
    ir_video = write_video(tmp_path / "ir.mkv", [read_infrared(pairs_dir / "ir" / f"{n}.png") for n in NAMES], grey=True)
    folder_log = run_pipeline(model, open_pair(str(pairs_dir / "vi"), str(pairs_dir / "ir")), tmp_path / "from_folder",
                              log_path=tmp_path / "folder.json")
    run_pipeline(model, open_pair(str(vis_video), str(ir_video)), tmp_path / "from_video")
    from_folder, from_video = raw_outputs(tmp_path / "from_folder"), raw_outputs(tmp_path / "from_video")
    assert len(from_folder) == len(from_video) == len(NAMES)
    for (labels_a, fused_a), (labels_b, fused_b) in zip(from_folder, from_video):
        assert np.array_equal(labels_a, labels_b) and np.array_equal(fused_a, fused_b)
    assert sorted(p.stem for p in (tmp_path / "from_folder").glob("*.jpg")) == NAMES
    log = json.loads((tmp_path / "folder.json").read_text())
    assert log == json.loads(json.dumps(folder_log))
    assert log["frames"] == {"captured": 3, "processed": 3, "written": 3, "dropped_before_model": 0,
                             "dropped_before_output": 0, "unpaired": 0, "skipped": 0}
    assert log["on_bad_frame"] == "stop" and log["skipped_frames"] == []
    assert set(log["stages"]) == {"capture", "preprocess", "model", "postprocess", "output"}
    assert log["stopped_by"] == "end" and log["contract"]["input_size"] == [480, 640]


def test_smaller_sixteen_bit_infrared_is_gain_controlled_and_registered(tmp_path, model, pairs_dir):
    ir16_dir = tmp_path / "ir16"
    ir16_dir.mkdir()
    for name in NAMES:                                  # a 320×240 Y16 thermal camera
        ir8 = read_infrared(pairs_dir / "ir" / f"{name}.png")[::2, ::2]
        cv2.imwrite(str(ir16_dir / f"{name}.png"), ir8.astype(np.uint16) * 50 + 3000)
    registration = Registration("affine", [[2, 0, 0], [0, 2, 0]], (640, 480))
    runner = open_runner(model, threads=1)
    pipeline = Pipeline(runner, open_pair(str(pairs_dir / "vi"), str(ir16_dir)), [ImageFolderSink(tmp_path / "out")],
                        registration=registration, options=PipelineOptions(**QUIET))
    assert pipeline.run()["frames"]["written"] == 3
    visible, infrared = next(iter(open_pair(str(pairs_dir / "vi"), str(ir16_dir))))
    infrared8 = pipeline.prepare(visible, infrared).infrared8
    assert infrared8.shape == (480, 640) and infrared8.dtype == np.uint8 and infrared8.max() == 255


class SlowRunner(Runner):
    """A contract-following fake model that takes ``delay_s`` per frame."""

    backend = "fake"

    def __init__(self, delay_s: float, height: int = 8, width: int = 8) -> None:
        super().__init__(ModelContract("fake", 9, 0, height, width), "fake:slow")
        self.delay_s = delay_s

    def _activate(self) -> None:
        pass

    def _infer(self, feed):
        time.sleep(self.delay_s)
        visible = feed["visible"]
        return {"seg_logits": np.zeros((1, 9, *visible.shape[2:]), np.float32), "fused": visible}


def test_slow_model_on_live_cameras_drops_oldest_frames_and_counts_them(tmp_path):
    source = PairedSource(FakeCamera("visible", 10_000, 0.004), FakeCamera("infrared", 10_000, 0.004), 0.05)
    pipeline = Pipeline(SlowRunner(0.05), source, [ImageFolderSink(tmp_path)],
                        options=PipelineOptions(queue_size=1, max_frames=30, **QUIET))
    log = pipeline.run()
    frames = log["frames"]
    assert log["stopped_by"] == "max_frames" and frames["captured"] == 30
    assert frames["dropped_before_model"] > 0
    assert frames["processed"] + frames["dropped_before_model"] == 30          # queued frames are drained at stop
    names = sorted(int(p.stem.rsplit("_", 1)[1]) for p in tmp_path.glob("*.jpg"))
    assert names[-1] > frames["processed"]                 # later frames were kept, older ones dropped


def test_sigterm_stops_the_run_and_finalises_the_video(tmp_path):
    source = PairedSource(FakeCamera("visible", 10_000, 0.01), FakeCamera("infrared", 10_000, 0.01), 0.05)
    video = tmp_path / "out" / "drive.avi"
    pipeline = Pipeline(SlowRunner(0.0, 32, 32), source, [VideoFileSink(video, fps=10)], options=PipelineOptions(**QUIET))
    timer = threading.Timer(0.6, os.kill, (os.getpid(), signal.SIGTERM))
    timer.start()
    log = pipeline.run()
    timer.join()
    assert log["stopped_by"] == "signal" and log["frames"]["written"] > 0
    assert video.is_file() and not list(video.parent.glob(".*partial*"))
    capture = cv2.VideoCapture(str(video))
    assert capture.isOpened() and int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == log["frames"]["written"]


def test_mismatched_pair_sizes_are_a_one_line_error(tmp_path, model, pairs_dir):
    small = read_infrared(pairs_dir / "ir" / "00508D.png")[::2, ::2]
    cv2.imwrite(str(pairs_dir / "ir" / "00508D.png"), small)
    with pytest.raises(SourceError) as exc:
        run_pipeline(model, open_pair(str(pairs_dir / "vi"), str(pairs_dir / "ir")), tmp_path / "out")
    message = str(exc.value)
    assert "\n" not in message and "320x240 but visible 00508D is 640x480" in message and "--registration" in message


def test_composite_and_sinks(tmp_path, caplog, monkeypatch):
    visible = read_visible(SAMPLES / "vi" / "00147D.png")
    labels = np.zeros((480, 640), np.uint8)
    labels[100:200, 100:300] = 2
    contract = ModelContract("fake", 9, 0, 480, 640)
    image = composite(visible, read_infrared(SAMPLES / "ir" / "00147D.png"), visible, labels,
                      contract.class_names, contract.palette, "frame 1 | 10.0 fps")
    assert image.shape[1] == 2560 and image.shape[0] > 480
    overlay = image[:480, 1920:]
    assert np.array_equal(overlay[0, 0], visible[0, 0]) and not np.array_equal(overlay[150, 200], visible[150, 200])
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    sinks = open_sinks(["display://0", str(tmp_path / "v.mkv"), f"file://{tmp_path / 'frames'}"])
    assert [type(s).__name__ for s in sinks] == ["VideoFileSink", "ImageFolderSink"]
    assert caplog.text.count("no display available") == 1


def test_open_runner_errors_are_one_line(tmp_path, model):
    with pytest.raises(ModelFileError, match="unknown model type '.pt'"):
        open_runner(tmp_path / "model.pt")
    with pytest.raises(ModelFileError, match="no such ONNX model"):
        open_runner(tmp_path / "missing.onnx")
    with pytest.raises(ModelFileError, match="ONNX Runtime runs .onnx"):
        open_runner(tmp_path / "m.engine", "onnxruntime")
    assert open_runner(model, "onnxruntime-trt").providers[-1] == "CPUExecutionProvider"


@pytest.mark.skipif(__import__("importlib").util.find_spec("tensorrt") is not None, reason="TensorRT is installed")
def test_engine_without_tensorrt_suggests_the_onnx(tmp_path):
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"engine")
    (tmp_path / "m.onnx").write_bytes(b"onnx")
    with pytest.raises(ModelFileError) as exc:
        open_runner(engine)
    assert "TensorRT is not available" in str(exc.value) and str(tmp_path / "m.onnx") in str(exc.value)


BLOCK_TORCH = """
import importlib.abc, runpy, sys
class BlockTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] == 'torch' or name.startswith('mrfs_edge.model'):
            raise ImportError('blocked for this test: ' + name)
sys.meta_path.insert(0, BlockTorch())
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name='__main__')
"""


def run_script(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": "", "DISPLAY": ""}
    return subprocess.run([sys.executable, "-c", BLOCK_TORCH, str(REPO / "runtime" / "run.py"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def test_run_script_works_with_torch_unimportable(tmp_path, model, pairs_dir):
    result = run_script("--model", str(model), "--visible", str(pairs_dir / "vi"), "--infrared",
                        str(pairs_dir / "ir"), "--save-raw", "--threads", "1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    runs = list((tmp_path / "runs" / "runtime").iterdir())
    assert len(runs) == 1 and sorted(p.stem for p in runs[0].glob("*.jpg")) == NAMES
    assert len(list((runs[0] / "label").glob("*.png"))) == 3
    log = json.loads((runs[0] / "runtime_log.json").read_text())
    assert log["frames"]["written"] == 3 and "saving composites to" in result.stderr

    failed = run_script("--model", str(model), "--visible", str(tmp_path / "nope"), "--infrared",
                        str(pairs_dir / "ir"), cwd=tmp_path)
    assert failed.returncode == 2
    assert failed.stderr.strip().splitlines() == [f"error: {tmp_path / 'nope'}: no such folder, image or video"]


def test_cli_errors_are_one_line_with_exit_code_2(tmp_path, model, capsys):
    assert run_main(["--model", str(model), "--visible", str(SAMPLES / "vi")]) == 2
    assert capsys.readouterr().err.strip().splitlines() == ["error: --infrared is required with --visible"]
    assert run_main(["--model", str(tmp_path / "m.engine"), "--visible", "v4l2:///dev/video99",
                     "--infrared", "x"]) == 2
    assert capsys.readouterr().err.startswith("error: ")
    with pytest.raises(SystemExit) as exc:
        run_main(["--bogus"])
    assert exc.value.code == 2 and capsys.readouterr().err.strip().splitlines() == [
        "error: unrecognized arguments: --bogus (see --help)"]


def test_failing_default_model_is_one_line(monkeypatch, capsys):
    import mrfs_edge.deploy.demo as demo

    def no_torch() -> Path:
        raise ImportError("No module named 'torch'")

    monkeypatch.setattr(demo, "default_onnx", no_torch)
    assert run_main(["--no-display"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "error: no --model given and the bundled demo model could not be prepared as ONNX "
        "(ImportError: No module named 'torch'); pass --model PATH.onnx")
