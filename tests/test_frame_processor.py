"""The synchronous frame processor and the model I/O adapter under it.

The threaded runtime must give the pixels of ``FrameProcessor.process``; the adapter must feed
and restore a batch of frames of different sizes as it does each frame alone; evaluation (the
benchmark's accuracy path) must score a uint8-I/O, labels-output model as the float one.
"""
from __future__ import annotations

import numpy as np
import pytest
from test_runtime_pipeline import QUIET, model, pairs_dir, raw_outputs, standin_onnx  # noqa: F401

from mrfs_edge.assets import SAMPLES
from mrfs_edge.backends import open_runner
from mrfs_edge.core.contract import ModelContract
from mrfs_edge.evaluation import predict_labels
from mrfs_edge.io.images import read_infrared, read_visible
from mrfs_edge.io.pairing import open_pair
from mrfs_edge.io.pairs import Pair
from mrfs_edge.io.sinks import ImageFolderSink
from mrfs_edge.processing.adapter import ModelAdapter
from mrfs_edge.processing.frame import FrameProcessor, PairSizeError
from mrfs_edge.runtime import Pipeline, PipelineOptions


class LinearModel:
    """A numpy model of the export contract with a dynamic batch: logits = a per-pixel linear map."""

    def __init__(self) -> None:
        self.contract = ModelContract("linear", 4, 0, 96, 128, dynamic={"batch": [1, 2, 4]})
        self.weight = np.random.default_rng(1).normal(size=(4, 4)).astype(np.float32)

    def infer(self, feed):
        both = np.concatenate([feed["visible"], feed["infrared"]], axis=1)
        return {"seg_logits": np.einsum("kc,nchw->nkhw", self.weight, both), "fused": feed["visible"]}


def test_threaded_pipeline_gives_the_pixels_of_the_synchronous_processor(tmp_path, model, pairs_dir):  # noqa: F811
    runner = open_runner(model, threads=1)
    Pipeline(runner, open_pair(str(pairs_dir / "vi"), str(pairs_dir / "ir")), [ImageFolderSink(tmp_path, save_raw=True)],
             options=PipelineOptions(**QUIET)).run()
    threaded = raw_outputs(tmp_path)
    processor = FrameProcessor(runner)
    names = sorted(p.stem for p in (pairs_dir / "vi").glob("*.png"))
    assert len(threaded) == len(names) == 3
    for name, (labels, fused_bgr) in zip(names, threaded):
        result = processor.process(read_visible(pairs_dir / "vi" / f"{name}.png"),
                                   read_infrared(pairs_dir / "ir" / f"{name}.png"), status=name)
        assert np.array_equal(result.labels, labels) and np.array_equal(result.fused, fused_bgr[..., ::-1])
        assert result.composite.shape[1] == 2560 and result.composite.dtype == np.uint8


def test_batch_of_frames_of_different_sizes_restores_each_as_alone():
    linear = LinearModel()
    adapter = ModelAdapter(linear.contract)
    rng = np.random.default_rng(2)
    sizes = [(96, 128), (80, 100), (192, 256)]          # exact, padded, resized
    frames = [(rng.integers(0, 256, (*s, 3), np.uint8), rng.integers(0, 256, s, np.uint8)) for s in sizes]
    feed, fits = adapter.feed(frames)
    assert feed["visible"].shape == (3, 3, 96, 128) and [f.resized for f in fits] == [False, False, True]
    batched = adapter.restore(linear.infer(feed), fits)
    for (visible, infrared), output in zip(frames, batched):
        (alone,) = adapter.run(linear, [(visible, infrared)])
        assert output.labels.shape == visible.shape[:2] and np.array_equal(output.labels, alone.labels)
        assert np.array_equal(output.fused_rgb(), alone.fused_rgb())
    assert np.array_equal(batched[1].fused_rgb(), frames[1][0])     # padding only: fused is the visible frame


def test_a_static_batch_is_filled_and_only_the_frames_are_restored():
    contract = ModelContract("linear", 4, 0, 96, 128, batch=4)
    frame = (np.zeros((96, 128, 3), np.uint8), np.zeros((96, 128), np.uint8))
    feed, fits = ModelAdapter(contract).feed([frame, frame])
    assert feed["visible"].shape[0] == 4 and len(fits) == 2


def test_uint8_labels_model_is_scored_as_the_float_logits_model(tmp_path, model):  # noqa: F811
    """The benchmark's accuracy path (evaluation.predict_labels) on the layouts the runtime runs."""
    float_runner = open_runner(model, threads=1)
    uint8_runner = open_runner(standin_onnx(tmp_path / "u8.onnx", uint8_io=True, seg_output="labels"), threads=1)
    pair = Pair("00508D", read_visible(SAMPLES / "vi" / "00508D.png"), read_infrared(SAMPLES / "ir" / "00508D.png"))
    labels_f, fused_f = predict_labels(float_runner, pair)
    labels_u, fused_u = predict_labels(uint8_runner, pair)
    assert labels_u.shape == labels_f.shape == pair.size and np.mean(labels_f == labels_u) > 0.999
    assert fused_u.dtype == np.float32 and fused_u.shape == (3, *pair.size)
    np.testing.assert_allclose(fused_u, fused_f, atol=1e-6)           # the stand-in's fused is the visible frame


def test_unregistered_pairs_of_two_sizes_are_refused(model):  # noqa: F811
    processor = FrameProcessor(open_runner(model, threads=1))
    with pytest.raises(PairSizeError, match="infrared frame is 320x240 but visible is 640x480"):
        processor.process(np.zeros((480, 640, 3), np.uint8), np.zeros((240, 320), np.uint8))
