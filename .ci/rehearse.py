#!/usr/bin/env python3
"""JetPack rehearsal: the README's on-target commands in environments shaped like the targets.

For each profile (JetPack 5.1, JetPack 6.1, an x86 TensorRT 11.1 host):

1. a fresh virtual environment of that profile's CPython with the core install only
   (``pip install <checkout>``: no extras, so no PyTorch and no onnx, which is checked), the
   profile's NumPy, the TensorRT test double of that release on ``PYTHONPATH`` and the fake
   libcudart through ``MRFS_EDGE_CUDART``;
2. a copy of the checkout holding ``build/`` as the workstation made it (the README way, in the
   caller's own environment, which has PyTorch: ``export/build_engine.py --int8``, with
   ``--trt-compat 8.5`` for TensorRT 8.5, whose parser has no LayerNormalization);
3. in that copy, with ``python3`` the environment's interpreter, exactly the commands a Jetson
   owner types (printed below): build the engine from the Q/DQ ONNX, run the runtime over the
   bundled pairs, run the benchmark's engine row;
4. real outputs checked: the engine and its sidecar (built by that TensorRT release), one
   runtime output per bundled pair, and a benchmark report whose engine row has measured
   latency, mIoU and agreement with the FP32 ONNX in ONNX Runtime.

Everything is written to a temporary work directory, removed at the end (``--keep`` keeps it);
only pip's own cache is used outside it. Exit status 0 when every profile passed, 1 otherwise
(one line per failure), 2 when the rehearsal cannot start (no doubles, no interpreter).

    python .ci/rehearse.py                      # every profile, as .ci/run calls it
    python .ci/rehearse.py --profile jetpack-6.1
    python .ci/rehearse.py --profile jetpack-6.1 --build build   # reuse a build/ of build_engine.py --int8
"""
from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

REPO = Path(__file__).resolve().parents[1]
DOUBLES = REPO / "tests" / "doubles"
SAMPLES = "mrfs_edge/assets/samples"          # relative to a checkout: the bundled pairs
BENCH_RUNS = ("--runs", "3", "--warmup", "1")  # enough to measure; the default 10 + 2 only costs CI time
PYENV = Path("/root/.pyenv/versions")
# The double's member lists per release; it finds them beside the checkout, which a copy is not.
SPECS = Path(os.environ.get("MRFS_TRT_API_SPECS") or
             Path(os.environ.get("MRFS_SHARED") or REPO.parent / "shared") / "specs" / "tensorrt-api")


@dataclass(frozen=True)
class Profile:
    """One target: its system Python, NumPy and TensorRT release (../shared/specs/tensorrt-api/jetpack.md)."""

    name: str
    pythons: Sequence[str]            # first that exists
    numpy: str                        # pip requirement, like the target's system NumPy
    tensorrt: str                     # MRFS_FAKE_TRT_RELEASE
    trt_compat: Optional[str] = None  # build_engine.py --trt-compat for the workstation export
    note: str = ""


PROFILES: Dict[str, Profile] = {p.name: p for p in (
    Profile("jetpack-5.1", (str(PYENV / "3.8.18/bin/python"), "python3.8"), "numpy>=1.23,<1.24", "8.5.2", "8.5",
            "Python 3.8, NumPy 1.23 (TensorRT 8.5.2 needs < 1.24)"),
    Profile("jetpack-6.1", (str(PYENV / "3.10.13/bin/python"), "python3.10"), "numpy>=1.21,<1.22", "10.3.0", None,
            "Python 3.10, Ubuntu 22.04's NumPy 1.21"),
    Profile("x86-trt-11.1", (str(PYENV / "3.12.1/bin/python"), "python3.12", "python3.11"), "numpy>=2", "11.1", None,
            "Python 3.12, NumPy 2, strongly typed TensorRT (INT8 from the Q/DQ graph)"),
)}


class RehearsalError(Exception):
    """A step failed; ``str()`` is the one-line reason."""


@dataclass
class Result:
    profile: Profile
    ok: bool = False
    reason: str = ""
    python: str = ""
    numpy: str = ""
    tensorrt: str = ""
    times: Dict[str, float] = field(default_factory=dict)
    figures: Dict[str, object] = field(default_factory=dict)
    commands: List[str] = field(default_factory=list)


def log(message: str) -> None:
    print(f"[rehearse] {message}", flush=True)


def run(command: Sequence[str], log_file: Path, cwd: Path, env: Optional[Dict[str, str]] = None,
        what: str = "", expect: int = 0) -> float:
    """Run ``command`` with its output in ``log_file``; its seconds, or a one-line error with the log's tail."""
    started = time.perf_counter()
    with open(log_file, "ab") as out:
        out.write(f"$ {' '.join(command)}\n".encode())
        out.flush()
        code = subprocess.call(list(command), cwd=str(cwd), env=env, stdout=out, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - started
    if code != expect:
        tail = log_file.read_text(errors="replace").strip().splitlines()[-15:]
        print("\n".join(f"    | {line}" for line in tail), flush=True)
        last = next((line for line in reversed(tail) if line.strip()), "no output")
        raise RehearsalError(f"{what or command[0]} exited {code} after {seconds:.0f} s: {last.strip()[:240]}")
    return seconds


def find_python(profile: Profile) -> str:
    for candidate in profile.pythons:
        path = shutil.which(candidate) if os.sep not in candidate else (candidate if os.access(candidate, os.X_OK) else None)
        if path:
            return path
    raise RehearsalError(f"no interpreter for {profile.name} (tried {', '.join(profile.pythons)})")


def copy_checkout(target: Path) -> None:
    """The working tree as a user's clone has it (tracked and untracked files, nothing git ignores)."""
    if (REPO / ".git").exists() and shutil.which("git"):
        listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=str(REPO),
                                capture_output=True, check=True).stdout.decode().split("\0")
        for name in filter(None, listed):
            source = REPO / name
            if source.is_file():
                (target / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, target / name)
        return
    shutil.copytree(REPO, target, ignore=shutil.ignore_patterns(".git", ".venv", "build", "runs", "__pycache__",
                                                                "*.egg-info", ".pytest_cache"))


def base_env(work: Path) -> Dict[str, str]:
    """The caller's environment without anything that would leak its packages or caches into a step."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP")}
    env["MRFS_EDGE_CACHE"] = str(work / "cache")   # the demo-ONNX cache stays in the work dir
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


# ------------------------------------------------------------------------------- workstation side

def given_build(folder: Path) -> Optional[str]:
    """The --trt-compat a build/ folder's Q/DQ ONNX was exported with (its contract says), checked usable."""
    qdq = sorted(folder.glob("*.int8.onnx"))
    if len(qdq) != 1 or not qdq[0].with_name(qdq[0].name[:-len(".int8.onnx")] + ".onnx").is_file():
        raise RehearsalError(f"--build {folder}: needs one <model>.int8.onnx and its <model>.onnx (build_engine.py --int8)")
    sys.path.insert(0, str(REPO))
    from mrfs_edge.backends.onnxruntime_runner import read_onnx_contract

    return read_onnx_contract(qdq[0]).trt_compat


def workstation_export(work: Path, trt_compat: Optional[str]) -> Path:
    """``export/build_engine.py --int8`` in the caller's environment; the build/ folder it wrote."""
    label = f"trt-compat-{trt_compat}" if trt_compat else "default"
    out = work / f"workstation-{label}" / "build"
    out.parent.mkdir(parents=True)
    command = [sys.executable, "export/build_engine.py", "--int8", "--output-dir", str(out)]
    if trt_compat:
        command += ["--trt-compat", trt_compat]
    log(f"workstation ({label}): {' '.join(['python'] + command[1:])}")
    seconds = run(command, out.parent / "export.log", REPO, base_env(work), what=f"workstation export ({label})")
    summaries = sorted(out.glob("*.build.json"))
    if not summaries:
        raise RehearsalError(f"workstation export ({label}) wrote no *.build.json summary in {out}")
    summary = json.loads(summaries[0].read_text())
    qdq = Path(summary.get("onnx_for_engine") or "")
    if not qdq.name.endswith(".int8.onnx") or not (out / qdq.name).is_file():
        raise RehearsalError(f"workstation export ({label}) left no Q/DQ ONNX in {out} (summary {summaries[0].name})")
    log(f"workstation ({label}): {qdq.name} in {seconds:.0f} s; its target command: {summary.get('target_command')}")
    return out


# ------------------------------------------------------------------------------- target side

def make_venv(profile: Profile, work: Path) -> Dict[str, object]:
    """A fresh venv with the core install of a copy of the checkout; checked to lack torch and onnx."""
    root = work / profile.name
    checkout = root / "mrfs-edge"
    checkout.mkdir(parents=True)
    copy_checkout(checkout)
    python = find_python(profile)
    venv = root / "venv"
    logs = root / "setup.log"
    env = base_env(work)
    started = time.perf_counter()
    run([python, "-m", "venv", str(venv)], logs, root, env, what=f"{profile.name}: venv")
    vpython = str(venv / "bin" / "python")
    run([vpython, "-m", "pip", "install", "-q", str(checkout), profile.numpy], logs, checkout, env,
        what=f"{profile.name}: pip install <checkout> '{profile.numpy}'")
    for module in ("torch", "onnx"):
        run([vpython, "-c", f"import {module}"], logs, root, env, what=f"{profile.name}: import {module} must fail",
            expect=1)
    versions = subprocess.run([vpython, "-c", "import platform, numpy; print(platform.python_version(), "
                               "numpy.__version__)"], capture_output=True, text=True, check=True, env=env).stdout.split()
    return {"checkout": checkout, "venv": venv, "python": versions[0], "numpy": versions[1],
            "seconds": time.perf_counter() - started}


def target_env(work: Path, venv: Path, checkout: Path, profile: Profile, cudart: Path) -> Dict[str, str]:
    """As on the target: ``python3`` is the venv's, TensorRT is the double of the profile's release."""
    env = base_env(work)
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(venv)
    env["PYTHONPATH"] = str(checkout / "tests" / "doubles")
    env["MRFS_FAKE_TRT_RELEASE"] = profile.tensorrt
    env["MRFS_TRT_API_SPECS"] = str(SPECS)
    env["MRFS_EDGE_CUDART"] = str(cudart)
    return env


def target_commands(model: str, output: str, bench: str) -> List[List[str]]:
    """What a Jetson owner types in the checkout after copying build/ from the workstation."""
    engine = f"build/{model}.int8.engine"
    return [["python3", "export/build_engine.py", "--onnx", f"build/{model}.int8.onnx", "--int8"],
            ["python3", "runtime/run.py", "--model", engine, "--visible", f"{SAMPLES}/vi", "--infrared",
             f"{SAMPLES}/ir", "--output", output],
            ["python3", "benchmarks/run.py", "--engine", engine, "--modes", "trt-int8", *BENCH_RUNS,
             "--output-dir", bench]]


def rehearse(result: Result, setup: Dict[str, object], build: Path, cudart: Path, work: Path) -> None:
    """The on-target commands and their checks; ``result`` is filled as the steps pass."""
    profile = result.profile
    result.python, result.numpy = str(setup["python"]), str(setup["numpy"])
    result.times["venv"] = float(setup["seconds"])  # type: ignore[arg-type]
    checkout, venv = Path(str(setup["checkout"])), Path(str(setup["venv"]))
    root = checkout.parent
    shutil.copytree(build, checkout / "build", dirs_exist_ok=True)   # "after copying build/ from the workstation"
    model = next(checkout.joinpath("build").glob("*.int8.onnx")).name[:-len(".int8.onnx")]
    env = target_env(work, venv, checkout, profile, cudart)
    logs = root / "target.log"
    trt = subprocess.run(["python3", "-c", "import tensorrt; print(tensorrt.__version__)"], cwd=str(checkout),
                         env=env, capture_output=True, text=True)
    result.tensorrt = trt.stdout.strip()
    if trt.returncode != 0 or not result.tensorrt.startswith(profile.tensorrt):
        raise RehearsalError(f"the TensorRT double does not import as {profile.tensorrt}: "
                             f"{(trt.stderr.strip().splitlines() or [trt.stdout.strip()])[-1]}")
    runtime_out, bench_out = root / "runtime-out", root / "bench"
    build_cmd, runtime_cmd, bench_cmd = target_commands(model, str(runtime_out), str(bench_out))
    result.commands = [" ".join(c).replace(str(root), "<work>") for c in (build_cmd, runtime_cmd, bench_cmd)]

    result.times["build"] = run(build_cmd, logs, checkout, env, what="build_engine.py --onnx ... --int8")
    engine = checkout / "build" / f"{model}.int8.engine"
    sidecar_file = Path(f"{engine}.json")
    if not engine.is_file() or engine.stat().st_size == 0 or not sidecar_file.is_file():
        raise RehearsalError(f"build_engine.py exited 0 but wrote no engine and sidecar ({engine.name}, {sidecar_file.name})")
    sidecar = json.loads(sidecar_file.read_text())
    if not str(sidecar.get("tensorrt_version", "")).startswith(profile.tensorrt):
        raise RehearsalError(f"{sidecar_file.name}: built by TensorRT {sidecar.get('tensorrt_version')}, "
                             f"not {profile.tensorrt}")
    result.figures["engine_mb"] = engine.stat().st_size / 1e6
    result.figures["precision"] = sidecar.get("precision")

    result.times["runtime"] = run(runtime_cmd, logs, checkout, env, what="runtime/run.py")
    pairs = sorted(p.stem for p in (checkout / SAMPLES / "vi").iterdir() if p.is_file())
    written = sorted(p.stem for p in runtime_out.iterdir()
                     if p.is_file() and p.suffix.lower() in (".jpg", ".png")) if runtime_out.is_dir() else []
    if not (runtime_out / "runtime_log.json").is_file():
        raise RehearsalError(f"runtime/run.py wrote no runtime_log.json beside its outputs in {runtime_out}")
    if written != pairs:
        raise RehearsalError(f"runtime/run.py wrote {len(written)} outputs for the {len(pairs)} bundled pairs "
                             f"(missing: {sorted(set(pairs) - set(written))[:3]})")
    result.figures["runtime_outputs"] = len(written)

    result.times["benchmark"] = run(bench_cmd, logs, checkout, env, what="benchmarks/run.py --engine ...")
    report_file = bench_out / "report.json"
    if not report_file.is_file():
        raise RehearsalError(f"benchmarks/run.py exited 0 but wrote no {report_file.name}")
    report = json.loads(report_file.read_text())
    rows = {row["mode"]: row for row in report["rows"]}
    row = rows.get("tensorrt-int8") or {}
    latency = ((row.get("latency") or {}).get("b1") or {}).get("p50_ms")
    accuracy = row.get("accuracy") or {}
    if latency is None or accuracy.get("miou") is None or accuracy.get("agreement") is None:
        reasons = row.get("reasons") or {}
        raise RehearsalError("the benchmark's tensorrt-int8 row is not measured: "
                             f"{reasons.get('latency') or reasons.get('accuracy.agreement') or 'no row'}")
    if report["config"].get("reference") != "onnxruntime-fp32":
        raise RehearsalError(f"the benchmark's reference is {report['config'].get('reference')}, not the FP32 ONNX "
                             "in ONNX Runtime")
    result.figures.update(p50_ms=latency, agreement=accuracy["agreement"], miou=accuracy["miou"],
                          fused_psnr=accuracy.get("fused_psnr"), layers=row.get("layers"))
    result.ok = True


# ------------------------------------------------------------------------------- driver

def build_cudart(work: Path) -> Path:
    sys.path.insert(0, str(DOUBLES))
    try:
        from cudart_double import build_fake_cudart
    finally:
        sys.path.remove(str(DOUBLES))
    return Path(build_fake_cudart(work / "cudart"))


def _layers_cell(layers: object) -> str:
    if not isinstance(layers, dict):
        return "–"
    precision = layers.get("precision") or {}
    return "/".join(str(precision.get(k, 0)) for k in ("int8", "fp16", "fp32")) + f" of {layers.get('total')}"


def summary_table(results: Sequence[Result]) -> str:
    header = ["profile", "python", "numpy", "TensorRT", "venv s", "build s", "runtime s", "outputs", "bench s",
              "p50 ms", "agreement %", "mIoU %", "layers INT8/FP16/FP32", "total s", "result"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in results:
        f, t = r.figures, r.times
        cells = [r.profile.name, r.python or "–", r.numpy or "–", r.tensorrt or r.profile.tensorrt,
                 *(f"{t[k]:.0f}" if k in t else "–" for k in ("venv", "build", "runtime")),
                 str(f.get("runtime_outputs", "–")), f"{t['benchmark']:.0f}" if "benchmark" in t else "–",
                 f"{f['p50_ms']:.0f}" if "p50_ms" in f else "–",
                 f"{100 * f['agreement']:.2f}" if "agreement" in f else "–",
                 f"{100 * f['miou']:.2f}" if "miou" in f else "–", _layers_cell(f.get("layers")),
                 f"{sum(t.values()):.0f}",
                 "pass" if r.ok else f"FAIL: {r.reason}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", action="append", choices=list(PROFILES),
                        help="rehearse only this profile (repeatable; default: all)")
    parser.add_argument("--work-dir", help="parent of the temporary work directory (default: the system's)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (its path is printed)")
    parser.add_argument("--build", action="append", default=[], metavar="DIR",
                        help="a build/ folder from an earlier build_engine.py --int8 to use instead of exporting "
                             "again (repeatable; matched to profiles by the --trt-compat its ONNX records)")
    args = parser.parse_args(argv)
    profiles = [PROFILES[name] for name in (args.profile or PROFILES)]
    missing = [str(p) for p in (DOUBLES / "tensorrt" / "__init__.py", DOUBLES / "cudart_double.py", SPECS)
               if not p.exists()]
    if missing:
        print(f"rehearsal cannot start: test double missing ({', '.join(missing)})", file=sys.stderr)
        return 2
    try:
        import torch  # noqa: F401  (the workstation side exports and calibrates with it)
    except ImportError:
        print(f"rehearsal cannot start: {sys.executable} has no PyTorch for the workstation export "
              "(run it from .ci/run's venv, or pip install -e '.[export]')", file=sys.stderr)
        return 2
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="mrfs-rehearsal-", dir=args.work_dir))
    log(f"work directory {work}")
    results: List[Result] = []
    try:
        cudart = build_cudart(work)
        # The venvs download and unpack while the workstation calibrates (pip is I/O, calibration CPU).
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            setups = {p.name: pool.submit(make_venv, p, work) for p in profiles}
            exports: Dict[Optional[str], object] = {}
            for folder in map(Path, args.build):
                exports[given_build(folder)] = folder.resolve()
                log(f"workstation: using {folder} (exported with --trt-compat {given_build(folder)})")
            for compat in dict.fromkeys(p.trt_compat for p in profiles if p.trt_compat not in exports):
                try:
                    exports[compat] = workstation_export(work, compat)
                except RehearsalError as exc:
                    exports[compat] = exc
            for profile in profiles:
                log(f"{profile.name}: {profile.note}; TensorRT double {profile.tensorrt}")
                result = Result(profile)
                try:
                    build = exports[profile.trt_compat]
                    if isinstance(build, RehearsalError):
                        raise build
                    rehearse(result, setups[profile.name].result(), Path(str(build)), cudart, work)
                except RehearsalError as exc:
                    result.reason = str(exc)
                except Exception as exc:  # a broken step of any kind fails this profile in one line
                    text = str(exc).strip().splitlines()
                    result.reason = f"{type(exc).__name__}: {text[0] if text else ''}"[:300]
                results.append(result)
                log(f"{profile.name}: {'passed' if result.ok else 'FAILED: ' + result.reason}")
    except RehearsalError as exc:   # before any profile: the fake libcudart or a --build folder
        print(f"rehearsal failed: {exc}", file=sys.stderr)
        return 1
    finally:
        if args.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print("\nOn-target commands (in the checkout, after copying build/ from the workstation):")
    for command in next((r.commands for r in results if r.commands), []):
        print(f"  {command}")
    print(f"\n{summary_table(results)}\n\nrehearsal: {sum(r.ok for r in results)}/{len(results)} profiles passed "
          f"in {time.perf_counter() - started:.0f} s")
    failed = [r for r in results if not r.ok]
    for r in failed:
        print(f"rehearsal failed: {r.profile.name}: {r.reason}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
