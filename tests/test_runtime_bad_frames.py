"""The runtime command on bad input: a corrupt frame, a signal, a bad argument, and where its log goes.

Every run goes through the real command line (``run_main``, or ``runtime/run.py`` in a subprocess
where signals are sent) on the bundled sample pairs copied into ``tmp_path``, one file replaced
by garbage where a bad frame is wanted, with the stand-in ONNX model of the pipeline tests.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from test_runtime_pipeline import QUIET, SlowRunner, standin_onnx
from test_runtime_sources import FakeCamera

from mrfs_edge.assets import SAMPLES
from mrfs_edge.core.errors import ImageError, SinkError
from mrfs_edge.io.pairing import PairedSource
from mrfs_edge.io.sinks import NullSink
from mrfs_edge.io.uri import parse_uri
from mrfs_edge.runtime import Pipeline, PipelineOptions
from mrfs_edge.tools.run import run_main

REPO = Path(__file__).resolve().parents[1]
NAMES = sorted(p.stem for p in (SAMPLES / "vi").glob("*.png"))       # 12 pairs
BAD = 8                                                               # the 9th pair is corrupt
GARBAGE = bytes(range(256)) * 2


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return standin_onnx(tmp_path_factory.mktemp("model") / "standin.onnx")


def copy_pairs(root: Path, copies: int = 1) -> Path:
    """The bundled pairs under ``root/vi`` and ``root/ir`` (``copies`` times, with prefixed names)."""
    for sub in ("vi", "ir"):
        (root / sub).mkdir(parents=True)
        for copy in range(copies):
            for name in NAMES:
                shutil.copy(SAMPLES / sub / f"{name}.png", root / sub / (f"{copy:02d}_{name}.png" if copies > 1
                                                                          else f"{name}.png"))
    return root


@pytest.fixture()
def corrupt(tmp_path) -> Path:
    """The 12 pairs with the 9th visible image replaced by bytes that are no image."""
    root = copy_pairs(tmp_path / "pairs")
    (root / "vi" / f"{NAMES[BAD]}.png").write_bytes(GARBAGE)
    return root


def run(model: Path, pairs: Path, *args: str) -> int:
    """``run_main`` on ``pairs``; an argparse error's ``SystemExit`` is returned as its status."""
    try:
        return run_main(["--model", str(model), "--visible", str(pairs / "vi"), "--infrared", str(pairs / "ir"),
                         "--threads", "1", "--no-display", *args])
    except SystemExit as exc:
        return int(exc.code)


def error_lines(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]


def jpg_names(folder: Path) -> list[str]:
    return sorted(p.stem for p in folder.glob("*.jpg"))


# --- a bad frame ------------------------------------------------------------------------------

@pytest.mark.parametrize("stream", ["vi", "ir"])
def test_corrupt_frame_writes_every_frame_before_it_then_fails_in_one_line(tmp_path, model, stream, capsys):
    pairs = copy_pairs(tmp_path / "pairs")
    bad = pairs / stream / f"{NAMES[BAD]}.png"
    bad.write_bytes(GARBAGE)
    out = tmp_path / "out"
    assert run(model, pairs, "--output", str(out), "--save-raw") == 2
    assert error_lines(capsys) == [f"error: {bad}: unreadable or corrupt image ({len(GARBAGE)} bytes)"]
    assert jpg_names(out) == NAMES[:BAD]                      # every frame read before the bad one
    assert len(list((out / "label").glob("*.png"))) == BAD
    log = json.loads((out / "runtime_log.json").read_text())
    assert {k: log["frames"][k] for k in ("captured", "processed", "written")} == dict.fromkeys(
        ("captured", "processed", "written"), BAD)
    assert log["stopped_by"] == "error" and str(bad) in log["error"]


def test_skip_mode_writes_every_good_frame_and_names_the_bad_one(corrupt, tmp_path, model, capsys):
    out = tmp_path / "out"
    assert run(model, corrupt, "--output", str(out), "--on-bad-frame", "skip") == 0
    assert jpg_names(out) == NAMES[:BAD] + NAMES[BAD + 1:]
    log = json.loads((out / "runtime_log.json").read_text())
    assert log["frames"]["written"] == 11 and log["frames"]["skipped"] == 1 and log["on_bad_frame"] == "skip"
    assert log["skipped_frames"] == [{"stream": "visible", "name": NAMES[BAD], "index": BAD,
                                      "error": f"{corrupt / 'vi' / NAMES[BAD]}.png: unreadable or corrupt image "
                                               f"({len(GARBAGE)} bytes)"}]
    err = capsys.readouterr().err
    summary = [line for line in err.splitlines() if line.startswith("warning: skipped ")]
    assert summary == [f"warning: skipped 1 bad frame: visible {NAMES[BAD]}; all in {out / 'runtime_log.json'}"]


def test_cameras_skip_bad_frames_by_default_and_files_stop():
    class Glitching(FakeCamera):
        def _grab(self):
            if self._index == 3:
                raise ImageError("fake://visible: undecodable frame")
            return super()._grab()

    source = PairedSource(Glitching("visible", 10_000, 0.002), FakeCamera("infrared", 10_000, 0.002), 0.05)
    log = Pipeline(SlowRunner(0.0), source, [NullSink()], options=PipelineOptions(max_frames=10, **QUIET)).run()
    assert log["on_bad_frame"] == "skip" and log["frames"]["skipped"] == 1 and log["stopped_by"] == "max_frames"
    assert log["skipped_frames"][0]["name"] == "visible_000003"


# --- where the log goes -------------------------------------------------------------------------

def test_log_goes_beside_the_outputs_not_into_the_working_folder(tmp_path, model, monkeypatch):
    pairs = copy_pairs(tmp_path / "pairs")
    monkeypatch.chdir(tmp_path)
    assert run(model, pairs, "--output", "frames", "--max-frames", "2") == 0
    assert json.loads((tmp_path / "frames" / "runtime_log.json").read_text())["frames"]["written"] == 2
    assert run(model, pairs, "--output", "clips/drive.avi", "--max-frames", "2") == 0
    assert json.loads((tmp_path / "clips" / "drive.runtime_log.json").read_text())["frames"]["written"] == 2
    assert not (tmp_path / "runs").exists()


def test_display_or_null_output_writes_a_log_only_when_asked(tmp_path, model, monkeypatch):
    pairs = copy_pairs(tmp_path / "pairs")
    monkeypatch.chdir(tmp_path)
    before = sorted(tmp_path.rglob("*"))
    assert run(model, pairs, "--output", "null://", "--max-frames", "2") == 0
    assert sorted(tmp_path.rglob("*")) == before                          # nothing written at all
    assert run(model, pairs, "--output", "null://", "--max-frames", "2", "--log", "logs/run.json") == 0
    assert json.loads((tmp_path / "logs" / "run.json").read_text())["outputs"] == ["null://"]


def test_run_failing_before_its_first_frame_leaves_no_log_and_no_folder(tmp_path, model, monkeypatch, capsys):
    pairs = copy_pairs(tmp_path / "pairs")
    (pairs / "ir" / f"{NAMES[0]}.png").write_bytes(GARBAGE)
    monkeypatch.chdir(tmp_path)
    assert run(model, pairs, "--output", "out") == 2
    assert error_lines(capsys) == [f"error: {pairs / 'ir' / NAMES[0]}.png: unreadable or corrupt image "
                                   f"({len(GARBAGE)} bytes)"]
    assert not (tmp_path / "out").exists() and not (tmp_path / "runs").exists()


def test_unwritable_log_fails_in_one_line_before_the_run(tmp_path, model, capsys):
    pairs = copy_pairs(tmp_path / "pairs")
    (tmp_path / "a_file").write_text("not a folder\n")
    out = tmp_path / "out"
    for log, why in ((tmp_path / "a_file" / "run.json", f"{tmp_path / 'a_file'} is not a folder"),
                     (tmp_path, "is a folder")):
        assert run(model, pairs, "--output", str(out), "--log", str(log)) == 2
        lines = error_lines(capsys)
        assert len(lines) == 1 and lines[0].startswith(f"error: --log {log}: ") and why in lines[0]
        assert not out.exists()                                          # no frame was processed


# --- argument sanity ------------------------------------------------------------------------------

@pytest.mark.parametrize(("args", "message"), [
    (["--max-frames", "0"], "--max-frames"), (["--max-frames", "-1"], "--max-frames"),
    (["--threads", "-3"], "--threads"), (["--queue", "0"], "--queue"),
])
def test_out_of_range_arguments_are_one_line_errors(tmp_path, model, args, message, capsys):
    out = tmp_path / "out"
    assert run(model, copy_pairs(tmp_path / "pairs"), "--output", str(out), *args) == 2
    lines = error_lines(capsys)
    assert len(lines) == 1 and message in lines[0] and not out.exists()


def test_output_with_an_unsupported_extension_is_a_one_line_error(tmp_path, model, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert run(model, copy_pairs(tmp_path / "pairs"), "--output", "o.gif") == 2
    assert error_lines(capsys) == [
        "error: o.gif: unsupported output extension '.gif' (videos: .mp4 .avi .mkv .mov .webm .m4v .mpg .mpeg "
        ".ts .flv; a folder of images: no extension, or end it with '/')"]
    assert not (tmp_path / "o.gif").exists()


def test_output_uri_is_a_video_or_a_folder():
    assert parse_uri("runs/v1.2/", "sink").path == Path("runs/v1.2")      # a dotted folder, said with '/'
    assert parse_uri("out.MKV", "sink").is_video and not parse_uri("frames", "sink").is_video
    for text in ("frame.png", "file://x/o.gif?codec=MJPG"):
        with pytest.raises(SinkError, match="unsupported output extension"):
            parse_uri(text, "sink")
    assert parse_uri("o.gif", "source").path == Path("o.gif")           # a source may be an image


# --- signals --------------------------------------------------------------------------------------

def test_sigterm_twice_leaves_no_partial_file_and_a_playable_video(tmp_path, model):
    """The second SIGTERM drops the queued frames, but the frame being written completes and both
    outputs are finalised: as many video frames as composites, no ``.partial`` anywhere."""
    pairs = copy_pairs(tmp_path / "pairs", copies=20)
    out = tmp_path / "out"
    env = {**os.environ, "DISPLAY": ""}
    process = subprocess.Popen([sys.executable, str(REPO / "runtime" / "run.py"), "--model", str(model),
                                "--visible", str(pairs / "vi"), "--infrared", str(pairs / "ir"), "--threads", "1",
                                "--output", str(out / "frames"), "--output", str(out / "drive.avi"), "--save-raw",
                                "-q"], env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while len(list((out / "frames").glob("*.jpg"))) < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGTERM)
    time.sleep(0.02)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 143, err
    assert not [p for p in out.rglob("*") if "partial" in p.name]
    written = len(list((out / "frames").glob("*.jpg")))
    assert 3 <= written < 240
    capture = cv2.VideoCapture(str(out / "drive.avi"))
    frames = 0
    while capture.read()[0]:
        frames += 1
    assert frames == written and np.isfinite(capture.get(cv2.CAP_PROP_FPS))
