"""The benchmark harness on 2 small labelled pairs and 2 runs: outputs, schema, and consistent figures."""
from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("matplotlib")

from mrfs_edge.assets import EVAL_SPLIT, SAMPLES  # noqa: E402
from mrfs_edge.bench import report as bench_report  # noqa: E402
from mrfs_edge.bench.accuracy import NO_LABELS, PairOutputs, score_mode  # noqa: E402
from mrfs_edge.bench.compare import compare_reports  # noqa: E402
from mrfs_edge.bench.modes import REFERENCE, parse_modes  # noqa: E402
from mrfs_edge.core.cli import run_cli  # noqa: E402
from mrfs_edge.io.pairs import Pair, PairFolder  # noqa: E402
from mrfs_edge.tools.benchmark import main  # noqa: E402

MODES = ("pytorch-fp32", "onnxruntime-fp32", "onnxruntime-fp16", "onnxruntime-int8", "tensorrt-fp16")
ROW_KEYS = {"mode", "label", "runtime", "precision", "emulated", "reference", "backend", "device", "detail",
            "model_file", "file_size_bytes", "latency", "memory", "accuracy", "fusion", "fusion_delta", "layers", "cost",
            "reasons"}
LATENCY_KEYS = {"batch", "runs", "warmup", "mean_ms", "p50_ms", "p90_ms", "p99_ms", "throughput_fps",
                "end_to_end_mean_ms", "end_to_end_p50_ms", "end_to_end_p90_ms", "end_to_end_p99_ms",
                "end_to_end_fps", "preprocess_ms", "postprocess_ms"}
ACCURACY_KEYS = {"pairs", "miou", "pixel_accuracy", "per_class_iou", "miou_drop", "per_class_iou_delta",
                 "agreement", "fused_psnr", "fused_ssim", "max_abs_fused"}
CROP = (slice(128, 352), slice(160, 480))     # 224×320: a quarter of the pixels keeps the test fast


@pytest.fixture(scope="module")
def small_pairs(tmp_path_factory) -> Path:
    """Two bundled evaluation pairs, centre-cropped (labels too) into a folder of the MSRS layout."""
    root = tmp_path_factory.mktemp("bench_pairs")
    source = PairFolder(SAMPLES, EVAL_SPLIT)
    for index in range(2):
        for folder, path in zip(("vi", "ir", "label"), source.paths(index)):
            (root / folder).mkdir(exist_ok=True)
            image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
            cv2.imwrite(str(root / folder / path.name), image[CROP])
    return root


@pytest.fixture(scope="module")
def bench(small_pairs, tmp_path_factory):
    from mrfs_edge.bench import BenchConfig, run_benchmark
    from mrfs_edge.calibration.pipeline import CalibrationConfig

    out = tmp_path_factory.mktemp("bench_out")
    config = BenchConfig(data=small_pairs, split=None, output_dir=out, modes=MODES, runs=2, warmup=1, threads=2,
                         calibration=CalibrationConfig(count=2, mixed_precision=False), grid_pairs=2, progress=False,
                         save_reference=out / "reference.npz")
    return run_benchmark(config)


def rows_by_mode(report: dict) -> dict[str, dict]:
    return {row["mode"]: row for row in report["rows"]}


def test_writes_report_json_markdown_and_plots(bench):
    out = bench.paths["json"].parent
    for name in ("report.json", "report.md", "latency_vs_miou.png", "per_class_iou.png", "grid_onnxruntime-fp32.png",
                 "grid_onnxruntime-fp16.png", "grid_onnxruntime-int8.png"):   # one grid per mode against PyTorch
        assert (out / name).stat().st_size > 0, name
    text = (out / "report.md").read_text()
    assert "ONNX Runtime FP32 vs PyTorch eager" in text and "## Summary" in text and "## Per-class IoU" in text


def test_json_schema_and_every_null_has_a_reason(bench):
    def no_constants(name: str) -> None:
        raise AssertionError(f"report.json holds {name}: not strict JSON")

    report = json.loads(bench.paths["json"].read_text(), parse_constant=no_constants)
    assert report["schema"] == bench_report.SCHEMA
    assert {"cpu", "cores", "os"} <= set(report["environment"]["machine"])
    assert {"python", "torch", "onnxruntime", "numpy", "mrfs_edge"} <= set(report["environment"]["versions"])
    assert "commit" in report["environment"] and report["created"]
    assert report["config"]["pairs"] == 2 and report["config"]["input_size"] == [224, 320]
    assert [row["mode"] for row in report["rows"]] == list(MODES)
    for row in report["rows"]:
        assert set(row) == ROW_KEYS, row["mode"]
        for path in bench_report.null_paths(row):
            assert bench_report.reason_for(row, path), f"{row['mode']}: {path} is null without a reason"
        if row["latency"] is not None:
            assert set(row["latency"]["b1"]) == LATENCY_KEYS
            assert set(row["accuracy"]) == ACCURACY_KEYS
            assert set(row["fusion"]) == set(bench_report.FUSION_KEYS) == set(row["fusion_delta"])


def test_reference_agrees_with_itself(bench):
    ref = rows_by_mode(bench.report)[REFERENCE]
    assert ref["reference"] and ref["backend"] == "pytorch" and ref["device"] == "cpu"
    accuracy = ref["accuracy"]
    assert accuracy["agreement"] == 1.0 and accuracy["miou_drop"] == 0.0 and accuracy["max_abs_fused"] == 0.0
    assert accuracy["fused_ssim"] == pytest.approx(1.0)
    assert accuracy["fused_psnr"] is None and "infinite" in ref["reasons"]["accuracy.fused_psnr"]
    assert all(v in (0.0, None) for v in accuracy["per_class_iou_delta"].values())
    assert all(v == 0.0 for v in ref["fusion_delta"].values())


def test_figures_are_consistent(bench):
    rows = rows_by_mode(bench.report)
    ref = rows[REFERENCE]
    for name in MODES[:4]:
        row = rows[name]
        lat, acc = row["latency"]["b1"], row["accuracy"]
        assert lat["runs"] == 2 and lat["warmup"] == 1
        assert lat["p50_ms"] <= lat["p90_ms"] <= lat["p99_ms"]
        assert lat["throughput_fps"] == pytest.approx(1000.0 / lat["mean_ms"])
        assert lat["end_to_end_mean_ms"] >= lat["mean_ms"]
        assert row["file_size_bytes"] == Path(row["model_file"]).stat().st_size
        assert acc["pairs"] == 2 and 0.0 <= acc["miou"] <= 1.0
        assert acc["miou_drop"] == pytest.approx(ref["accuracy"]["miou"] - acc["miou"])
        for cls, delta in acc["per_class_iou_delta"].items():
            if delta is not None:
                assert delta == pytest.approx(acc["per_class_iou"][cls] - ref["accuracy"]["per_class_iou"][cls])
        for key, delta in row["fusion_delta"].items():
            assert delta == pytest.approx(row["fusion"][key] - ref["fusion"][key])
        if row["memory"]["host_peak_rss_mb"] is not None:
            assert row["memory"]["host_peak_rss_mb"] >= 0
    assert rows["onnxruntime-fp32"]["accuracy"]["agreement"] >= 0.999
    assert rows["onnxruntime-fp16"]["emulated"] and not rows["onnxruntime-fp32"]["emulated"]
    assert rows["onnxruntime-fp16"]["accuracy"]["agreement"] >= 0.99
    assert rows["onnxruntime-int8"]["accuracy"]["agreement"] >= 0.9
    speedup = bench.report["summary"]["speedup"]
    assert speedup["value"] == pytest.approx(ref["latency"]["b1"]["p50_ms"] / rows["onnxruntime-fp32"]["latency"]["b1"]["p50_ms"])


def test_tensorrt_row_is_null_with_the_reason(bench):
    from mrfs_edge.backends.machine import tensorrt_status

    available, reason = tensorrt_status()
    if available:
        pytest.skip("TensorRT is installed here: the row is measured")
    row = rows_by_mode(bench.report)["tensorrt-fp16"]
    assert row["latency"] is None and row["accuracy"] is None and row["file_size_bytes"] is None
    assert row["reasons"]["latency"] == reason and reason.startswith("TensorRT not installed")


def test_compare_of_a_report_with_itself_is_all_zero(bench, tmp_path, capsys):
    path = str(bench.paths["json"])
    assert main(["--compare", path, path, "--output-dir", str(tmp_path)]) == 0
    assert "Benchmark comparison" in capsys.readouterr().out
    assert (tmp_path / "compare.md").is_file()
    differences, only_a, only_b = compare_reports(bench.report, bench.report)
    assert differences and not only_a and not only_b
    assert all(d.delta in (0, None) for d in differences)
    assert any(d.figure == "latency.b1.p50_ms" and d.delta == 0 for d in differences)


def test_cli_bad_data_is_one_line_error(tmp_path, capsys):
    assert run_cli(main, ["--data", str(tmp_path / "missing"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and "missing" in err[-1]


def test_compare_rejects_a_file_that_is_not_a_report(tmp_path, capsys):
    bad = tmp_path / "other.json"
    bad.write_text(json.dumps({"rows": []}))
    assert run_cli(main, ["--compare", str(bad), str(bad)]) == 2
    assert "not a benchmark report" in capsys.readouterr().err


def test_modes_parse_aliases_in_table_order():
    assert parse_modes(["ort-fp16,ort-fp32", "trt-int8"]) == ["onnxruntime-fp32", "onnxruntime-fp16", "tensorrt-int8"]
    assert parse_modes(None) is None     # every mode, none asked for by name
    with pytest.raises(ValueError, match="unknown mode"):
        parse_modes(["onnxruntime-fp8"])


def test_with_pytorch_the_reference_row_is_added_and_marked(bench):
    from mrfs_edge.bench import BenchConfig
    from mrfs_edge.bench.harness import Harness

    plan = Harness(BenchConfig(data=Path(bench.report["config"]["data"]), split=None, modes=["onnxruntime-fp32"],
                               progress=False)).plan()
    assert plan.modes == [REFERENCE, "onnxruntime-fp32"] and plan.reference_mode == REFERENCE
    assert [row["reference"] for row in bench.report["rows"]] == [True] + [False] * (len(MODES) - 1)
    assert bench.report["config"]["reference"] == REFERENCE


def test_saved_reference_scores_a_row_as_the_reference_run_did(bench, tmp_path):
    """--save-reference on the workstation, --reference on a machine that does not run the reference model."""
    from mrfs_edge.bench import BenchConfig, run_benchmark

    saved = bench.paths["json"].parent / "reference.npz"
    config = BenchConfig(data=Path(bench.report["config"]["data"]), split=None, output_dir=tmp_path,
                         modes=["onnxruntime-fp32"], runs=1, warmup=0, threads=2, reference=saved, progress=False)
    again = run_benchmark(config).report
    assert [row["mode"] for row in again["rows"]] == ["onnxruntime-fp32"]   # PyTorch did not run here
    assert again["config"]["reference"] == REFERENCE and again["config"]["reference_file"] == str(saved)
    first, second = rows_by_mode(bench.report)["onnxruntime-fp32"], again["rows"][0]
    for key in ("agreement", "fused_psnr", "fused_ssim", "max_abs_fused", "miou", "miou_drop"):
        assert second["accuracy"][key] == pytest.approx(first["accuracy"][key], rel=1e-6, abs=1e-9), key
    assert second["fusion_delta"] == pytest.approx(first["fusion_delta"], rel=1e-6, abs=1e-9)


def test_saved_reference_must_match_the_pairs(bench, small_pairs, tmp_path, capsys):
    saved = bench.paths["json"].parent / "reference.npz"
    # The bundled pairs: same names as the two cropped ones it holds, at full size; then a pair it lacks.
    code = run_cli(main, ["--reference", str(saved), "--modes", "ort-fp32", "--no-progress",
                          "--output-dir", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("error: ") and "are 320x224, the pair is 640x480" in err[-1]
    other = tmp_path / "other"
    for folder in ("vi", "ir", "label"):
        (other / folder).mkdir(parents=True)
        for path in sorted((small_pairs / folder).iterdir()):
            (other / folder / f"x{path.name}").write_bytes(path.read_bytes())
    code = run_cli(main, ["--reference", str(saved), "--modes", "ort-fp32", "--data", str(other), "--no-progress",
                          "--output-dir", str(tmp_path)])
    assert code == 2 and "no reference outputs for pair x" in capsys.readouterr().err


def test_reference_file_that_is_not_one_is_a_one_line_error(tmp_path, capsys):
    bad = tmp_path / "ref.npz"
    np.savez(bad, meta=np.array("{}"))
    assert run_cli(main, ["--reference", str(bad), "--modes", "ort-fp32", "--no-progress"]) == 2
    assert "not a reference file" in capsys.readouterr().err


def test_explicit_pytorch_row_without_pytorch_fails_in_one_line(monkeypatch, capsys, small_pairs, tmp_path):
    import mrfs_edge.bench.harness as harness

    monkeypatch.setattr(harness, "torch_installed", lambda: False)
    code = run_cli(main, ["--modes", "pytorch", "ort-fp32", "--data", str(small_pairs), "--no-progress",
                          "--output-dir", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("error: --modes pytorch-fp32: PyTorch not installed")


def test_without_labels_ground_truth_figures_are_null_with_the_reason():
    rng = np.random.default_rng(0)
    pairs = [Pair(f"p{i}", rng.integers(0, 255, (128, 128, 3), np.uint8), rng.integers(0, 255, (128, 128), np.uint8))
             for i in range(2)]
    outputs = [PairOutputs(rng.integers(0, 3, (128, 128)), rng.random((3, 128, 128), np.float32)) for _ in pairs]
    names = ("a", "b", "c")
    ref = score_mode(zip(pairs, outputs), names, labelled=False)
    noisy = [PairOutputs(o.labels, np.clip(o.fused + 0.01, 0, 1)) for o in outputs]
    other = score_mode(zip(pairs, noisy), names, labelled=False, reference=ref, keep=1)
    for result in (ref, other):
        assert result.figures["miou"] is None and result.reasons["accuracy.miou"] == NO_LABELS
        assert result.figures["per_class_iou"] is None
    assert other.figures["agreement"] == 1.0 and len(other.outputs) == 1
    assert 30 < other.figures["fused_psnr"] < 50 and math.isfinite(other.fusion_delta["EN"])


# ------------------------------------------------------------------ the engine row on a torch-free target

DOUBLES = Path(__file__).resolve().parent / "doubles"
REPO = Path(__file__).resolve().parents[1]
BLOCKED = ("torch", "onnx", "onnxconverter_common", "onnxslim", "matplotlib", "modelopt")
# A Jetson image as the bench sees it: these imports fail (sys.modules[name] = None makes `import` raise).
TORCH_FREE = ("import runpy, sys\n"
              f"for name in {BLOCKED!r}:\n    sys.modules[name] = None\n"
              "sys.argv = sys.argv[1:]\nrunpy.run_path(sys.argv[0], run_name='__main__')\n")
SIDE = 128
BUILD = ("import sys\nfrom mrfs_edge.engine import EngineBuildConfig, build_engine\n"
         "build_engine(sys.argv[1], sys.argv[2], EngineBuildConfig(precision='int8'))\n")


@pytest.fixture(scope="module")
def jetson_like(tmp_path_factory):
    """A tiny Q/DQ engine built by the TensorRT double (10.3, JetPack 6) over the fake libcudart, its FP32
    ONNX beside it as build_engine.py leaves them, labelled 128x128 pairs, and a torch-free runner of scripts."""
    import importlib.util
    import os
    import subprocess
    import sys

    from conftest import SPECS

    if not (DOUBLES / "tensorrt" / "__init__.py").is_file() or not (DOUBLES / "cudart_double.py").is_file():
        pytest.skip("TensorRT double (tests/doubles/tensorrt) or fake libcudart (tests/doubles/cudart_double.py) "
                    "not in this checkout")
    specs = Path(os.environ.get("MRFS_TRT_API_SPECS") or SPECS / "tensorrt-api")
    if not specs.is_dir():
        pytest.skip(f"{specs} not present: the TensorRT double reads its API surface there")

    from fake_tensorrt import make_tiny_onnx, tiny_contract

    spec = importlib.util.spec_from_file_location("cudart_double", DOUBLES / "cudart_double.py")
    cudart_double = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cudart_double)
    root = tmp_path_factory.mktemp("jetson")
    try:
        cudart = cudart_double.build_fake_cudart(root / "cudart")
    except RuntimeError as exc:
        pytest.skip(str(exc))
    build = root / "build"
    build.mkdir()
    contract = tiny_contract(height=SIDE, width=SIDE)   # the fusion metrics' filters need 128 pixels
    make_tiny_onnx(build / "tiny.onnx", contract)
    make_tiny_onnx(build / "tiny.int8.onnx", contract, qdq=True)
    pairs = root / "pairs"
    rng = np.random.default_rng(1)
    for name in ("a", "b"):
        for folder, image in (("vi", rng.integers(0, 256, (SIDE, SIDE, 3))), ("ir", rng.integers(0, 256, (SIDE, SIDE))),
                              ("label", rng.integers(0, 3, (SIDE, SIDE)))):
            (pairs / folder).mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(pairs / folder / f"{name}.png"), image.astype(np.uint8))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(DOUBLES), str(REPO)]), "MRFS_FAKE_TRT_RELEASE": "10.3.0",
           "MRFS_EDGE_CUDART": str(cudart), "MRFS_TRT_API_SPECS": str(specs)}

    def run(*args: str) -> subprocess.CompletedProcess:
        done = subprocess.run([sys.executable, "-c", TORCH_FREE, *args], cwd=REPO, env=env, capture_output=True,
                              text=True, timeout=600)
        assert "Traceback" not in done.stderr, done.stderr
        return done

    (root / "build_api.py").write_text(BUILD)
    built = run(str(root / "build_api.py"), str(build / "tiny.int8.onnx"), str(build / "tiny.int8.engine"))
    assert built.returncode == 0, built.stderr

    def bench(engine: Path, out: str, *extra: str) -> dict:
        done = run("benchmarks/run.py", "--engine", str(engine), "--modes", "trt-int8", "--data", str(pairs),
                   "--runs", "2", "--warmup", "1", "--threads", "1", "--no-progress", "--output-dir",
                   str(root / out), *extra)
        assert done.returncode == 0, done.stderr
        return {"report": json.loads((root / out / "report.json").read_text()), "stderr": done.stderr}

    return SimpleNamespace(root=root, build=build, bench=bench)


@pytest.fixture(scope="module")
def beside(jetson_like):
    """The README's Jetson benchmark: the engine and the FP32 ONNX in build/, no PyTorch, no onnx."""
    return jetson_like.bench(jetson_like.build / "tiny.int8.engine", "beside", "--save-reference",
                             str(jetson_like.root / "ref.npz"))


@pytest.fixture(scope="module")
def lonely_engine(jetson_like) -> Path:
    """The engine and its sidecar copied away from the FP32 ONNX."""
    folder = jetson_like.root / "lonely"
    folder.mkdir()
    for name in ("tiny.int8.engine", "tiny.int8.engine.json"):
        (folder / name).write_bytes((jetson_like.build / name).read_bytes())
    return folder / "tiny.int8.engine"


def test_torch_free_engine_row_is_measured_against_the_fp32_onnx_beside_it(beside):
    report, rows = beside["report"], rows_by_mode(beside["report"])
    assert list(rows) == ["pytorch-fp32", "onnxruntime-fp32", "tensorrt-int8"]
    assert rows["pytorch-fp32"]["latency"] is None
    assert rows["pytorch-fp32"]["reasons"]["latency"].startswith("PyTorch not installed")
    assert report["config"]["reference"] == "onnxruntime-fp32" and rows["onnxruntime-fp32"]["reference"]
    assert rows["onnxruntime-fp32"]["model_file"].endswith("tiny.onnx")
    engine = rows["tensorrt-int8"]
    assert engine["backend"] == "tensorrt" and engine["latency"]["b1"]["p50_ms"] > 0
    assert 0.0 <= engine["accuracy"]["miou"] <= 1.0 and engine["accuracy"]["pairs"] == 2
    assert 0.5 <= engine["accuracy"]["agreement"] <= 1.0    # INT8 Q/DQ against the FP32 graph
    assert engine["accuracy"]["miou_drop"] == pytest.approx(
        rows["onnxruntime-fp32"]["accuracy"]["miou"] - engine["accuracy"]["miou"])
    assert "matplotlib not installed" in report["plots"]["grid"][1]


def test_torch_free_engine_row_shows_the_inspector_layer_counts(jetson_like, beside):
    engine = rows_by_mode(beside["report"])["tensorrt-int8"]
    report = json.loads((jetson_like.build / "tiny.int8.engine.json").read_text()).get("layers")
    if not report:   # an engine built before the builder stored the inspector report
        assert engine["layers"] is None and engine["reasons"]["layers"]
        return
    counts = report["counts"]
    assert engine["layers"]["total"] == len(report["layers"]) > 0
    assert engine["layers"]["precision"] == {k.lower(): counts[k] for k in ("INT8", "FP16", "FP32", "other")}
    assert "## Engine layers" in (jetson_like.root / "beside" / "report.md").read_text()


def test_torch_free_engine_without_a_reference_is_scored_on_ground_truth_only(jetson_like, beside, lonely_engine):
    result = jetson_like.bench(lonely_engine, "lonely")
    rows = rows_by_mode(result["report"])
    assert list(rows) == ["pytorch-fp32", "tensorrt-int8"] and result["report"]["config"]["reference"] is None
    engine = rows["tensorrt-int8"]
    assert engine["accuracy"]["miou"] == pytest.approx(rows_by_mode(beside["report"])["tensorrt-int8"]["accuracy"]["miou"])
    assert engine["accuracy"]["agreement"] is None and engine["fusion_delta"] is None
    reason = engine["reasons"]["accuracy.agreement"]
    assert "tiny.onnx" in reason and "--onnx" in reason and "--reference" in reason
    message = [line for line in result["stderr"].splitlines() if "no FP32 reference" in line]
    assert len(message) == 1, result["stderr"]


def test_torch_free_engine_against_outputs_saved_by_another_run(jetson_like, beside, lonely_engine):
    result = jetson_like.bench(lonely_engine, "saved", "--reference", str(jetson_like.root / "ref.npz"))
    report, first = result["report"], rows_by_mode(beside["report"])["tensorrt-int8"]
    engine = rows_by_mode(report)["tensorrt-int8"]
    assert report["config"]["reference"] == "onnxruntime-fp32" and report["config"]["reference_file"]
    for key in ("agreement", "fused_psnr", "max_abs_fused", "miou_drop"):
        assert engine["accuracy"][key] == pytest.approx(first["accuracy"][key], abs=1e-9), key
