"""The CLI base every command shares: exit statuses, one-line errors, -q/-v, signals, logging.

Signals and exit statuses are checked on real commands in a subprocess (what a shell or systemd
sees); the graceful-stop case runs the real runtime pipeline in this process.
"""
from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from mrfs_edge.assets import SAMPLES
from mrfs_edge.core.cli import EXIT_SIGINT, EXIT_SIGTERM, CliParser, run_cli
from mrfs_edge.core.log import ROOT_LOGGER, ConsoleHandler, configure_logging

REPO = Path(__file__).resolve().parents[1]
REGISTER = [sys.executable, str(REPO / "runtime" / "register.py")]
TRAIN = [sys.executable, "-m", "mrfs_edge.train"]
GOOD_POINTS = ["--points", "0,0:0,0", "--points", "10,0:10,0", "--points", "10,10:10,10", "--points", "0,10:0,10"]


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(args, check=False, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


# --- exit statuses and one-line errors ------------------------------------------------------

def test_user_error_is_one_line_and_exit_2(tmp_path):
    done = _run([*REGISTER, "--visible-size", "20x20", "--output", str(tmp_path / "r.yaml"), "--points", "1,2;3,4"],
                tmp_path)
    assert done.returncode == 2
    assert done.stderr.splitlines() == ["error: point pair '1,2;3,4': expected 'x,y:x,y' (infrared point : visible point)"]


def test_argument_mistake_is_one_line_and_exit_2(tmp_path):
    done = _run([*REGISTER, "--visible-size", "20x20"], tmp_path)
    assert done.returncode == 2
    assert done.stderr.splitlines() == ["error: the following arguments are required: --output (see --help)"]


def test_unexpected_error_is_one_line_naming_it_and_exit_1(tmp_path):
    occupied = tmp_path / "r.yaml"
    occupied.mkdir()     # the output path is a folder: the final rename fails with an OSError
    done = _run([*REGISTER, "--visible-size", "20x20", "--output", str(occupied), *GOOD_POINTS], tmp_path)
    assert done.returncode == 1
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert done.stderr.startswith("error: IsADirectoryError: ")
    assert done.stderr.rstrip().endswith("(run with -v for the traceback)")
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]    # atomic write cleaned up


def test_verbose_shows_the_traceback(tmp_path):
    occupied = tmp_path / "r.yaml"
    occupied.mkdir()
    done = _run([*REGISTER, "-v", "--visible-size", "20x20", "--output", str(occupied), *GOOD_POINTS], tmp_path)
    assert done.returncode == 1
    assert "Traceback (most recent call last):" in done.stderr and "os.replace" in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: IsADirectoryError: ") and "run with -v" not in last


def test_help_exits_0_and_lists_quiet_and_verbose(tmp_path):
    done = _run([*REGISTER, "--help"], tmp_path)
    assert done.returncode == 0 and "-q, --quiet" in done.stdout and "-v, --verbose" in done.stdout


# --- -q / -v and the handler ---------------------------------------------------------------

def _parse(argv: list[str]) -> int:
    CliParser(prog="t").parse_args(argv)
    logging.getLogger("mrfs_edge.tools.t").info("an info line")
    logging.getLogger("mrfs_edge.tools.t").warning("a warning line")
    logging.getLogger("mrfs_edge.tools.t").debug("a debug line")
    return 0


@pytest.mark.parametrize(("flags", "expected"), [
    ([], ["[mrfs-edge] an info line", "warning: a warning line"]),
    (["-q"], ["warning: a warning line"]),
    (["--verbose"], ["[mrfs-edge] an info line", "warning: a warning line", "[mrfs-edge] a debug line"]),
])
def test_quiet_and_verbose_set_what_reaches_stderr(flags, expected, capsys):
    assert run_cli(_parse, flags) == 0
    assert capsys.readouterr().err.splitlines() == expected


def test_quiet_silences_a_real_command(tmp_path, capsys):
    from test_runtime_pipeline import standin_onnx

    from mrfs_edge.tools.run import fps_main

    model = standin_onnx(tmp_path / "standin.onnx", 64, 64)
    args = ["--model", str(model), "--frames", "1", "--warmup", "0", "--json", str(tmp_path / "fps.json")]
    assert fps_main(args) == 0
    err = capsys.readouterr().err
    assert "[mrfs-edge] no --visible/--infrared given" in err and "[mrfs-edge] wrote " in err
    assert fps_main(["-q", *args]) == 0
    captured = capsys.readouterr()
    assert captured.err == "" and "fps" in captured.out      # the result itself still reaches stdout


def test_configuring_twice_keeps_one_handler(capsys):
    configure_logging()
    configure_logging()
    logger = logging.getLogger(ROOT_LOGGER)
    assert sum(isinstance(h, ConsoleHandler) for h in logger.handlers) == 1
    logging.getLogger("mrfs_edge.x").info("once")
    assert capsys.readouterr().err.splitlines() == ["[mrfs-edge] once"]


def test_a_message_does_not_tear_a_progress_bar(capsys):
    from tqdm import tqdm

    configure_logging()
    with tqdm(total=3, file=sys.stderr, ascii=True, mininterval=0) as bar:
        bar.update(1)
        logging.getLogger("mrfs_edge.x").info("between updates")
        bar.update(1)
    err = capsys.readouterr().err
    # tqdm.write clears the bar first, so the message starts its own segment (a plain print would
    # append it to the bar's text) and the bar is redrawn after it.
    segments = [s for part in err.split("\r") for s in part.split("\n")]
    assert "[mrfs-edge] between updates" in segments
    assert "2/3" in err[err.index("between updates"):]


# --- signals -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def train_pairs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pairs")
    for folder in ("vi", "ir", "label"):
        (root / folder).mkdir()
        for image in sorted((SAMPLES / folder).glob("*.png"))[:2]:
            shutil.copyfile(image, root / folder / image.name)
    return root


@pytest.mark.parametrize(("sig", "status", "said"), [
    (signal.SIGTERM, EXIT_SIGTERM, "warning: terminated (SIGTERM)"),
    (signal.SIGINT, EXIT_SIGINT, "warning: interrupted (SIGINT)"),
])
def test_signal_during_training_exits_128_plus_signal(sig, status, said, train_pairs, tmp_path):
    pytest.importorskip("torch")
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen([*TRAIN, "--data", str(train_pairs), "--out-dir", str(out), "--iterations", "100000",
                                "--batch-size", "1", "--crop", "64", "96", "--scales", "0.25", "--threads", "1",
                                "--save-every", "1000000"],
                               cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (out / "log.jsonl").exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert process.poll() is None, process.communicate()
        time.sleep(0.5)                 # inside the training loop
        process.send_signal(sig)
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == status, err
    assert err.strip().splitlines()[-1] == said and "Traceback" not in err     # the bar is closed, not redrawn


def test_signal_a_command_handles_gracefully_still_sets_the_status(tmp_path):
    """The runtime pipeline takes SIGTERM as 'finish the queued frames'; the exit status still says SIGTERM."""
    from test_runtime_pipeline import SlowRunner
    from test_runtime_sources import FakeCamera

    from mrfs_edge.io.pairing import PairedSource
    from mrfs_edge.runtime import Pipeline, PipelineOptions

    logs = []

    def main(_argv):
        source = PairedSource(FakeCamera("visible", 10_000, 0.01), FakeCamera("infrared", 10_000, 0.01), 0.05)
        pipeline = Pipeline(SlowRunner(0.0, 32, 32), source, [], options=PipelineOptions(status_interval_s=0))
        timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGTERM))
        timer.start()
        logs.append(pipeline.run())
        timer.join()
        return 0

    previous = signal.getsignal(signal.SIGTERM)
    assert run_cli(main, []) == EXIT_SIGTERM
    assert logs[0]["stopped_by"] == "signal" and logs[0]["frames"]["written"] > 0
    assert signal.getsignal(signal.SIGTERM) is previous       # the base's handler is gone again


def test_without_a_signal_the_command_status_stands():
    assert run_cli(lambda _argv: 3, []) == 3
