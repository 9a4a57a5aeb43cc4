"""Every command checks its arguments and paths before heavy work (issue 14).

Each case drives the real command line (a tool's ``main`` through ``run_cli``, or a subprocess
where what matters is what the process imported) and expects one ``error:`` line naming the
argument or file, a non-zero status, and no folder left behind.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mrfs_edge.core.cli import run_cli
from mrfs_edge.tools import benchmark, calibrate, export_onnx, model_card

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "onnx", "onnxruntime", "matplotlib")


@pytest.fixture
def a_file(tmp_path: Path) -> Path:
    """A regular file that output folders are asked to go under."""
    path = tmp_path / "notes.txt"
    path.write_text("not a folder\n")
    return path


def status(main, argv: list[str]) -> int:
    """What the command exits with: argument errors leave ``run_cli`` as argparse's ``SystemExit``."""
    try:
        return run_cli(main, argv)
    except SystemExit as exc:
        return int(exc.code)


def one_error(main, argv: list[str], capsys) -> str:
    """The status must be 2 (a user error) and the last stderr line an ``error:`` line; returns that line."""
    code = status(main, argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    assert err and err[-1].startswith("error: "), err
    assert not any("Traceback" in line for line in err), err
    return err[-1]


def python(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], check=False, cwd=REPO, capture_output=True, text=True,
                          timeout=120)


# --- export_onnx.py ---------------------------------------------------------------------------

@pytest.mark.parametrize("batch", ["0", "-1"])
def test_export_batch_must_be_positive(batch, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    line = one_error(export_onnx.main, ["--batch", batch], capsys)
    assert "--batch" in line and f"got {batch}" in line
    assert not (tmp_path / "build").exists()


def test_export_huge_image_is_refused_before_allocating(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    line = one_error(export_onnx.main, ["--height", "32768", "--width", "32768"], capsys)
    assert "--height" in line and "8192" in line


def test_export_output_under_a_regular_file(a_file, capsys):
    line = one_error(export_onnx.main, ["--output", str(a_file / "model.onnx")], capsys)
    assert "--output" in line and f"{a_file} is a file, not a folder" in line


def test_export_default_output_under_a_regular_file(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "build").write_text("a file where the default output folder goes\n")
    line = one_error(export_onnx.main, [], capsys)
    assert "--output" in line and "build is a file, not a folder" in line


def test_export_bad_parity_data_is_found_before_torch_is_imported(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    probe = ("import sys\nfrom mrfs_edge.core.cli import run_cli\nfrom mrfs_edge.tools.export_onnx import main\n"
             f"code = run_cli(main, ['--parity-data', {str(empty)!r}, '--output', {str(tmp_path / 'm.onnx')!r}])\n"
             f"print(code, [m for m in {HEAVY!r} if m in sys.modules])\n")
    done = python("-c", probe)
    assert done.stdout.split("\n")[0] == "2 []", done.stdout + done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: --parity-data: ") and str(empty) in last
    assert not (tmp_path / "m.onnx").exists()


def test_export_parity_data_that_is_a_file(a_file, capsys, tmp_path):
    line = one_error(export_onnx.main, ["--parity-data", str(a_file), "--output", str(tmp_path / "m.onnx")], capsys)
    assert "--parity-data" in line and "is a file, not a folder" in line


# --- calibrate.py and training ----------------------------------------------------------------

def test_calibrate_output_dir_under_a_regular_file(a_file, capsys):
    line = one_error(calibrate.main, ["--output-dir", str(a_file / "int8")], capsys)
    assert "--output-dir" in line and f"{a_file} is a file, not a folder" in line


def test_calibrate_bad_calib_dir_creates_no_output_dir(tmp_path, capsys):
    out = tmp_path / "new" / "int8"
    line = one_error(calibrate.main, ["--output-dir", str(out), "--calib-dir", str(tmp_path / "missing")], capsys)
    assert "--calib-dir" in line and "missing" in line
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("content, problem", [(b"not a model\n", "not a readable ONNX protobuf"),
                                              (b"PK\x03\x04rest of a zip", "a PyTorch checkpoint, not an ONNX model")])
def test_calibrate_onnx_that_is_not_one_fails_before_any_work(tmp_path, capsys, content, problem):
    """The same torch-free check as build_engine.py's: one line naming --onnx, no output folder made."""
    bad = tmp_path / "model.onnx"
    bad.write_bytes(content)
    out = tmp_path / "new" / "int8"
    line = one_error(calibrate.main, ["--onnx", str(bad), "--output-dir", str(out)], capsys)
    assert line.startswith(f"error: --onnx {bad}: ") and problem in line
    assert not (tmp_path / "new").exists()


def test_train_out_dir_under_a_regular_file(a_file, capsys):
    from mrfs_edge.assets import SAMPLES
    from mrfs_edge.train.__main__ import main as train_main

    code = status(train_main, ["--data", str(SAMPLES), "--out-dir", str(a_file / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("error: argument --out-dir: ") and str(a_file) in err[-1]


def test_train_bad_split_leaves_no_empty_run_folder(tmp_path, capsys):
    from mrfs_edge.assets import SAMPLES
    from mrfs_edge.train.__main__ import main as train_main

    out = tmp_path / "run"
    code = status(train_main, ["--data", str(SAMPLES), "--train-split", "no-such-split.txt", "--out-dir", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("error: --data (split no-such-split.txt): ")
    assert not out.exists()


# --- benchmarks/run.py ------------------------------------------------------------------------

def test_benchmark_output_dir_under_a_regular_file_is_refused_before_measuring(a_file, capsys):
    line = one_error(benchmark.main, ["--output-dir", str(a_file / "bench"), "--no-progress"], capsys)
    assert "--output-dir" in line and f"{a_file} is a file, not a folder" in line


@pytest.mark.parametrize("flag,value", [("--runs", "0"), ("--warmup", "-1"), ("--batch", "0"), ("--threads", "0")])
def test_benchmark_counts(flag, value, tmp_path, capsys):
    out = tmp_path / "bench"
    line = one_error(benchmark.main, [flag, value, "--output-dir", str(out), "--no-progress"], capsys)
    assert f"argument {flag}" in line and f"got {value}" in line
    assert not out.exists()


@pytest.fixture(scope="module")
def one_tiny_pair(tmp_path_factory) -> Path:
    """One bundled labelled pair cropped to 64x96, so a reference row costs a second."""
    cv2 = pytest.importorskip("cv2")
    from mrfs_edge.assets import EVAL_SPLIT, SAMPLES
    from mrfs_edge.io.pairs import PairFolder

    root = tmp_path_factory.mktemp("tiny_pair")
    for folder, path in zip(("vi", "ir", "label"), PairFolder(SAMPLES, EVAL_SPLIT).paths(0)):
        (root / folder).mkdir()
        image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        cv2.imwrite(str(root / folder / path.name), image[200:264, 280:376])
    return root


def asked_mode_fails(argv: list[str], mode: str, out: Path, capsys) -> dict:
    """The benchmark exits 3, names ``mode`` on stderr, and still writes the report with the reason."""
    pytest.importorskip("torch")
    code = status(benchmark.main, [*argv, "--runs", "1", "--warmup", "0", "--threads", "1", "--grid-pairs", "1",
                                    "--no-progress", "--output-dir", str(out)])
    err = capsys.readouterr().err
    assert code == benchmark.EXIT_MODE_FAILED, err
    assert f"error: {mode} was asked for but not measured: " in err
    report = json.loads((out / "report.json").read_text())
    row = next(r for r in report["rows"] if r["mode"] == mode)
    assert row["latency"] is None and row["reasons"]["latency"]
    assert mode in (out / "report.md").read_text() or row["label"] in (out / "report.md").read_text()
    return row


def test_benchmark_a_failed_onnx_row_is_a_failure(one_tiny_pair, tmp_path, capsys):
    text = tmp_path / "model.onnx"
    text.write_text("this is not an ONNX model\n")
    row = asked_mode_fails(["--onnx", str(text), "--modes", "ort-fp32", "--data", str(one_tiny_pair)],
                           "onnxruntime-fp32", tmp_path / "out", capsys)
    assert row["reasons"]["latency"].startswith("failed: ")


def test_benchmark_an_engine_that_cannot_run_is_a_failure(one_tiny_pair, tmp_path, capsys):
    from fake_tensorrt import tiny_contract

    from mrfs_edge.backends.sidecar import EngineSidecar, write_sidecar

    engine = tmp_path / "fake.engine"
    engine.write_bytes(b"not a plan")
    write_sidecar(engine, EngineSidecar(
        engine_file=engine.name, engine_sha256="0" * 64, tensorrt_version="10.3.0", gpu_name="Orin",
        compute_capability=(8, 7), precision="fp16", strongly_typed=False, quant=None, dla_core=None, pins={},
        input_shapes={}, profiles=[], onnx_file="fake.onnx", onnx_sha256="0" * 64, build_time_s=1.0,
        built_at="2026-12-01T00:00:00+00:00", toolkit_version="test", contract=tiny_contract(height=64, width=96)))
    asked_mode_fails(["--engine", str(engine), "--modes", "trt-fp16", "--data", str(one_tiny_pair)],
                     "tensorrt-fp16", tmp_path / "out", capsys)


def test_benchmark_exit_status_is_in_the_help():
    assert f"{benchmark.EXIT_MODE_FAILED}    a mode asked for by name" in benchmark.build_parser().format_help()


# --- --help: fast, complete, plain ------------------------------------------------------------

COMMANDS = {"export_onnx": ["export/export_onnx.py"], "calibrate": ["calibration/calibrate.py"],
            "benchmark": ["benchmarks/run.py"], "train": ["-m", "mrfs_edge.train"],
            "model_card": ["-m", "mrfs_edge.tools.model_card"], "build_engine": ["export/build_engine.py"],
            "run": ["runtime/run.py"], "register": ["runtime/register.py"], "runtime_fps": ["benchmarks/runtime_fps.py"]}


@pytest.mark.parametrize("name", COMMANDS)
def test_help_imports_no_heavy_package(name):
    """``--help`` as a user types it; ``-X importtime`` lists every module the process imported."""
    done = python("-X", "importtime", *COMMANDS[name], "--help")
    assert done.returncode == 0 and "usage:" in done.stdout, done.stderr[-2000:]
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    assert not imported & set(HEAVY), sorted(imported & set(HEAVY))


def parsers():
    from mrfs_edge.tools import build_engine, run
    from mrfs_edge.train.__main__ import build_parser as train_parser

    return {"export_onnx": export_onnx.build_parser(), "calibrate": calibrate.build_parser(),
            "benchmark": benchmark.build_parser(), "train": train_parser(), "model_card": model_card.build_parser(),
            "build_engine": build_engine.build_parser(), "run": run.run_parser(), "register": run.register_parser(),
            "runtime_fps": run.fps_parser()}


@pytest.mark.parametrize("name", COMMANDS)
def test_every_flag_has_plain_help(name):
    parser = parsers()[name]
    silent = [a.option_strings[0] for a in parser._actions if a.option_strings and not a.help]
    assert not silent, f"{name}: flags without help: {silent}"
    assert "``" not in parser.format_help()
