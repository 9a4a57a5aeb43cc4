"""One benchmark run: every mode timed and scored on the same pairs, then the report and plots.

The reference runs first and keeps its outputs; every other mode is compared with them pair by
pair. It is PyTorch FP32 eager where PyTorch is installed, and on a torch-free target the FP32
ONNX in ONNX Runtime or the outputs a workstation run saved (:mod:`.reference` says which and
why). A mode that cannot run here (no TensorRT, no PyTorch) or fails becomes a row of nulls with
the reason, so one broken precision never costs the rest of a long run; a failing reference
ends the run, since nothing else could be scored against it.
"""
from __future__ import annotations

import importlib.util
import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm import tqdm

from mrfs_edge.assets import DEMO_CHECKPOINT, EVAL_SPLIT, SAMPLES
from mrfs_edge.backends.base import Runner
from mrfs_edge.bench import environment, plots, report
from mrfs_edge.bench.accuracy import ModeAccuracy, PairOutputs, network_size, run_pairs, score_mode
from mrfs_edge.bench.latency import PeakMemory, device_memory_in_use, measure_latency
from mrfs_edge.bench.modes import FALLBACK_REFERENCE, MODES, REFERENCE, Mode, ModelFiles
from mrfs_edge.bench.reference import (
    HOW_TO_GET_ONE,
    PYTORCH_MISSING,
    ReferenceError,
    SavedReference,
    check_fp32_onnx,
    fp32_beside,
    save_reference,
    torch_installed,
)
from mrfs_edge.core.log import progress
from mrfs_edge.io.pairs import PairFolder

if TYPE_CHECKING:
    from mrfs_edge.calibration.pipeline import CalibrationConfig

LOG = logging.getLogger(__name__)
LATENCY_PAIRS = 8      # distinct frames cycled through by the timed runs (read once, kept in memory)


@dataclass
class BenchConfig:
    """What to run; the defaults are the issue's default run (demo model, bundled labelled pairs).

    ``modes`` None means every mode, none asked for by name (a row that cannot run here is then
    skipped with its reason; one asked for by name must run). ``reference``: outputs saved by an
    earlier run's ``save_reference``, compared with instead of running a reference model here.
    """

    checkpoint: Path = DEMO_CHECKPOINT
    data: Path = SAMPLES
    split: Path | None = EVAL_SPLIT
    output_dir: Path = Path("build/benchmark")
    modes: Sequence[str] | None = None
    runs: int = 10
    warmup: int = 2
    batches: Sequence[int] = (1,)
    threads: int = field(default_factory=lambda: os.cpu_count() or 1)
    torch_device: str = "cpu"
    onnx: Path | None = None
    qdq: Path | None = None
    engines: Mapping[str, Path] = field(default_factory=dict)
    calibration: CalibrationConfig | None = None
    reference: Path | None = None
    save_reference: Path | None = None
    grid_pairs: int = 3
    progress: bool = True

    def __post_init__(self) -> None:
        if self.runs < 1 or self.warmup < 0:
            raise ValueError(f"--runs must be ≥ 1 and --warmup ≥ 0 (got {self.runs} and {self.warmup})")
        if not self.batches or min(self.batches) < 1:
            raise ValueError(f"--batch sizes must be ≥ 1 (got {list(self.batches)})")
        if self.threads < 1:
            raise ValueError(f"--threads must be ≥ 1 (got {self.threads})")
        if self.modes is not None:
            unknown = [m for m in self.modes if m not in MODES]
            if unknown:
                raise ValueError(f"unknown modes {unknown} (choose from {', '.join(MODES)})")
            self.modes = [m for m in MODES if m in self.modes]   # table order, the references first
        if self.reference is not None and self.save_reference is not None:
            raise ValueError("--save-reference writes the outputs of a reference run here; "
                             "it cannot be combined with --reference")


@dataclass
class RowPlan:
    """Which rows run, which one is the reference, and why the others are not run here."""

    modes: list[str]                 # table order
    reference_mode: str | None       # the row whose outputs the others are compared with
    saved: SavedReference | None     # or outputs saved by a workstation run
    skipped: dict[str, str]          # mode -> why it is not run here
    source: str                      # what the reference is, for the report
    no_reference: str | None = None  # why there is none (the comparison figures are then null)


@dataclass
class BenchResult:
    report: dict[str, Any]
    paths: dict[str, Path]


def _describe(runner: Runner, threads: int) -> str:
    """Backend details a reader needs to reproduce the row (providers, thread count, engine build)."""
    providers = getattr(runner, "providers", None)
    if providers:
        return f"{providers[0]}, {threads} intra-op threads"
    sidecar = getattr(runner, "sidecar", None)
    if sidecar is not None:
        built = getattr(sidecar, "precision_built", None) or sidecar.precision
        layers = sidecar.layer_summary() if hasattr(sidecar, "layer_summary") else ""
        return (f"TensorRT {sidecar.tensorrt_version} {sidecar.precision} engine on {sidecar.gpu_name}"
                + (f" (runs {built})" if built != sidecar.precision else "") + (f"; {layers}" if layers else ""))
    import torch

    if runner.device != "cpu":
        return f"torch {torch.__version__} on {torch.cuda.get_device_name(0)}"
    return f"torch {torch.__version__}, {torch.get_num_threads()} threads"


NO_LAYER_REPORT = "no per-layer report for this model (not a TensorRT engine, or built before the inspector report)"


def layer_counts(runner: Runner) -> dict[str, Any] | None:
    """How many engine layers run in each precision and on DLA, as TensorRT's inspector reported them.

    The report is the builder's (:mod:`mrfs_edge.backends.trt_inspector`): ``{"counts": {"INT8", "FP16",
    "FP32", "other", "GPU", "DLA"}, "layers": [...]}``, from the runner's ``layer_report`` (the
    sidecar's) or ``<engine>.layers.json`` beside the engine. None for runners without one.
    """
    report = getattr(runner, "layer_report", None)   # TensorRTRunner: the sidecar's inspector report
    path = getattr(runner, "path", None)
    if not isinstance(report, Mapping) and path is not None:
        layers_file = Path(f"{path}.layers.json")
        if layers_file.is_file():
            report = json.loads(layers_file.read_text())
    if not isinstance(report, Mapping) or not isinstance(report.get("counts"), Mapping):
        return None
    counts, layers = report["counts"], report.get("layers") or []
    precision = {key.lower(): int(counts.get(key, 0)) for key in ("INT8", "FP16", "FP32", "other")}
    return {"total": len(layers), "precision": precision, "dla": int(counts.get("DLA", 0)),
            "gpu": int(counts.get("GPU", 0))}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"[:300]


def _failure(exc: BaseException) -> str:
    """A failed row's reason; a missing optional package names the extra that brings it."""
    if isinstance(exc, ImportError) and exc.name:
        return f"skipped: {exc.name.split('.')[0]} not installed (the export extra: pip install '.[export]')"
    return f"failed: {_first_line(exc)}"


class Harness:
    """Runs the modes of ``config`` in order and assembles the report."""

    def __init__(self, config: BenchConfig) -> None:
        self.config = config
        self.folder = PairFolder(config.data, config.split)
        self.labelled = self.folder.has_labels
        first = self.folder[0]
        self.height, self.width = network_size(first)
        self.latency_pairs = [first] + [self.folder[i] for i in range(1, min(len(self.folder), LATENCY_PAIRS))]
        self.models_dir = config.output_dir / "models"
        self._bar: tqdm | None = None
        self.files = ModelFiles(config.checkpoint, self.height, self.width, self.models_dir, max(config.batches),
                                config.threads, config.torch_device, config.onnx, config.qdq, dict(config.engines),
                                config.calibration)
        self.memory = PeakMemory()
        self.class_names: Sequence[str] = []         # the reference model's class names, for the grids' legend

    def tick(self) -> None:
        if self._bar is not None:
            self._bar.update(1)

    def plan(self) -> RowPlan:
        """The rows and their reference, decided before anything runs (see :mod:`.reference`)."""
        config = self.config
        named = config.modes is not None
        modes = list(config.modes) if config.modes is not None else list(MODES)
        skipped: dict[str, str] = {}
        torch_ok = torch_installed()
        if not torch_ok:
            if named and REFERENCE in modes:
                raise ReferenceError(f"--modes {REFERENCE}: {PYTORCH_MISSING}; leave it out and the FP32 ONNX "
                                     "in ONNX Runtime is the reference")
            skipped[REFERENCE] = PYTORCH_MISSING
            modes = modes if REFERENCE in modes else [REFERENCE] + modes   # the row says why it is missing
        if config.reference is not None:
            saved = SavedReference(config.reference)
            for engine in config.engines.values():
                saved.check_engine(engine)
            LOG.info(f"reference: {saved.describe()}")
            return RowPlan(_ordered(modes), None, saved, skipped, saved.describe())
        if torch_ok:
            if REFERENCE not in modes:
                LOG.info(f"--modes: adding {REFERENCE}, the reference the other rows are compared with")
            return RowPlan(_ordered([REFERENCE] + modes), REFERENCE, None, skipped, MODES[REFERENCE].label)
        fp32, why = self._fp32_reference()
        if fp32 is None:
            note = f"no FP32 reference: PyTorch is not installed and {why}; {HOW_TO_GET_ONE}"
            LOG.info(f"{note}; the rows are scored against ground truth only")
            if FALLBACK_REFERENCE in modes:
                skipped[FALLBACK_REFERENCE] = f"no FP32 ONNX here: {why}"
            return RowPlan(_ordered(modes), None, None, skipped, "none", note)
        LOG.info(f"PyTorch is not installed: the reference is the FP32 ONNX {fp32} in ONNX Runtime")
        return RowPlan(_ordered([FALLBACK_REFERENCE] + modes), FALLBACK_REFERENCE, None, skipped,
                       f"{MODES[FALLBACK_REFERENCE].label} ({fp32})")

    def _fp32_reference(self) -> tuple[Path | None, str]:
        """The FP32 ONNX to run as the reference without PyTorch: ``--onnx``, beside an engine, or made here."""
        config = self.config
        if config.onnx is not None:
            return check_fp32_onnx(config.onnx), ""
        if config.engines:
            reasons = []
            for engine in config.engines.values():
                found, why = fp32_beside(engine)
                if found is not None:
                    self.files.onnx = found
                    return found, ""
                reasons.append(why)
            return None, "; ".join(reasons)
        return self.files.fp32_if_ready()

    def run(self) -> BenchResult:
        config = self.config
        started, load_start = time.perf_counter(), environment.load_average()
        plan = self.plan()
        modes = [MODES[name] for name in plan.modes]
        trt_ok, trt_reason = True, ""
        if any(m.runtime == "tensorrt" and m.name not in plan.skipped for m in modes):
            from mrfs_edge.backends.machine import tensorrt_status

            trt_ok, trt_reason = tensorrt_status()
        for mode in modes:
            if mode.runtime == "tensorrt" and not trt_ok:
                plan.skipped.setdefault(mode.name, trt_reason)
        runnable = [m for m in modes if m.name not in plan.skipped]
        per_mode = sum(config.warmup + config.runs for _ in config.batches) + len(self.folder)
        LOG.info(f"{len(self.folder)} pairs at {self.width}x{self.height}, modes: {', '.join(m.name for m in modes)}; "
                 f"{config.threads} threads")
        rows: list[dict[str, Any]] = []
        grid: dict[str, list[PairOutputs]] = {}
        reference = self._saved_accuracy(plan.saved) if plan.saved is not None else None
        if reference is not None and plan.saved is not None:
            grid[plan.saved.mode] = reference.outputs   # the saved reference is every grid's reference column
        with progress(total=per_mode * len(runnable), desc="benchmark", unit="run",
                      disable=not config.progress) as self._bar:
            for mode in modes:
                if mode not in runnable:
                    rows.append(report.empty_row(mode, plan.skipped[mode.name]))
                    LOG.info(f"{mode.name}: skipped ({plan.skipped[mode.name]})")
                    continue
                self._bar.set_description(mode.name)
                is_reference = mode.name == plan.reference_mode
                try:
                    row, accuracy = self.measure(mode, None if is_reference else reference,
                                                 None if is_reference else plan.no_reference)
                except Exception as exc:  # any failure of one mode is reported in its row, not raised
                    if is_reference:
                        raise
                    reason = _failure(exc)
                    LOG.info(f"{mode.name}: {reason}")
                    rows.append(report.empty_row(mode, reason))
                    continue
                if is_reference:
                    reference = accuracy
                    row["reference"] = True
                grid[mode.name] = accuracy.outputs   # every pair: the grids show the most-disagreeing ones
                rows.append(row)
                LOG.info(self._one_line(row))
        self._bar = None
        return self.assemble(rows, grid, time.perf_counter() - started, load_start, plan)

    def _saved_accuracy(self, saved: SavedReference) -> ModeAccuracy:
        """The saved outputs scored like a row (ground truth, fusion), to compare the rows with."""
        if not self.class_names:
            self.class_names = saved.class_names
        pairs = (self.folder[i] for i in range(len(self.folder)))
        return score_mode(saved.predictions(pairs), saved.class_names, self.labelled)

    def measure(self, mode: Mode, reference: ModeAccuracy | None,
                no_reference: str | None = None) -> tuple[dict[str, Any], ModeAccuracy]:
        """Latency, memory and accuracy of one mode; its model file is made first, outside the timings.

        ``reference`` None with no ``no_reference`` reason: this mode is the reference.
        """
        config = self.config
        path = self.files.path_for(mode)
        reasons: dict[str, str] = {}
        self.memory.reset()
        runner = self.files.open(mode)   # not activated yet: nothing is on the device
        device_before = device_memory_in_use() if runner.device != "cpu" else None
        if not self.class_names:
            self.class_names = runner.contract.class_names
        is_reference = reference is None and no_reference is None
        try:
            latency: dict[str, Any] = {}
            for batch in config.batches:
                try:
                    latency[f"b{batch}"] = measure_latency(runner, self.latency_pairs, batch, config.runs,
                                                           config.warmup, self.tick)
                except Exception as exc:  # e.g. a static-batch model asked for another batch size
                    if len(config.batches) == 1:
                        raise
                    latency[f"b{batch}"] = None
                    reasons[f"latency.b{batch}"] = f"failed: {_first_line(exc)}"
            memory = self._memory(runner, device_before, reasons)
            accuracy = score_mode(run_pairs(runner, self.folder, self.tick), runner.contract.class_names,
                                  self.labelled, reference, keep=None,
                                  no_reference=no_reference)
            if is_reference and config.save_reference is not None:
                save_reference(config.save_reference, mode.name, str(path), runner.contract, self.folder.names,
                               accuracy.outputs)
                LOG.info(f"saved the {mode.name} outputs of {len(self.folder)} pairs to {config.save_reference} "
                         "(pass it to benchmarks/run.py --reference on the target)")
            row = {**report.empty_row(mode, ""), "backend": runner.backend, "device": runner.device,
                   "detail": _describe(runner, config.threads), "model_file": str(path),
                   "file_size_bytes": path.stat().st_size, "latency": latency, "memory": memory,
                   "accuracy": accuracy.figures, "fusion": accuracy.fusion, "fusion_delta": accuracy.fusion_delta,
                   "layers": layer_counts(runner), "reasons": {**reasons, **accuracy.reasons}}
            if row["layers"] is None:
                row["reasons"]["layers"] = NO_LAYER_REPORT
            row["cost"], why = report.mode_cost(mode, path)
            if why:
                row["reasons"]["cost"] = why
        finally:
            runner.deactivate()
        return report.make_finite(row, row["reasons"]), accuracy

    def _memory(self, runner: Runner, device_before: int | None, reasons: dict[str, str]) -> dict[str, float | None]:
        host = self.memory.peak_mb()
        if host is None:
            reasons["memory.host_peak_rss_mb"] = self.memory.reason
        device = None
        if runner.device == "cpu":
            reasons["memory.device_mb"] = "runs on the CPU: no device memory"
        else:
            after = device_memory_in_use()
            if after is None or device_before is None:
                reasons["memory.device_mb"] = "device memory not measurable here (needs PyTorch with CUDA)"
            else:
                device = (after - device_before) / 2 ** 20
        return {"host_peak_rss_mb": host, "device_mb": device}

    @staticmethod
    def _one_line(row: Mapping[str, Any]) -> str:
        lat, acc = report.first_latency(row) or {}, row["accuracy"] or {}
        parts = [f"p50 {lat['p50_ms']:.0f} ms" if lat else "no latency"]
        if acc.get("miou") is not None:
            parts.append(f"mIoU {100 * acc['miou']:.2f}%")
        if acc.get("agreement") is not None:
            parts.append(f"agreement {100 * acc['agreement']:.3f}%")
        if acc.get("fused_psnr") is not None:
            parts.append(f"fused PSNR {acc['fused_psnr']:.1f} dB")
        return f"{row['mode']}: " + ", ".join(parts)

    def assemble(self, rows: list[dict[str, Any]], grid: Mapping[str, Sequence[PairOutputs]], seconds: float,
                 load_start: list[float] | None, plan: RowPlan) -> BenchResult:
        """report.json, report.md and the plots in the output directory."""
        config, out = self.config, self.config.output_dir
        out.mkdir(parents=True, exist_ok=True)
        gpu = next((r["device"] for r in rows if r["runtime"] == "tensorrt" and r["device"]), None)
        plot_paths = self._plots(rows, grid, out, plan)
        payload: dict[str, Any] = {
            "schema": report.SCHEMA,
            "created": environment.now(),
            "environment": {"machine": {**environment.machine(gpu), "load_average": load_start,
                                        "load_average_end": environment.load_average()},
                            "versions": environment.versions(), "commit": environment.git_commit()},
            "config": {"checkpoint": str(config.checkpoint), "data": str(config.data),
                       "split": str(config.split) if config.split else None, "pairs": len(self.folder),
                       "pair_names": self.folder.names, "labelled": self.labelled,
                       "input_size": [self.height, self.width], "modes": [r["mode"] for r in rows],
                       "runs": config.runs, "warmup": config.warmup, "batches": list(config.batches),
                       "threads": config.threads, "torch_device": config.torch_device, "onnx": str(config.onnx) if config.onnx else None,
                       "qdq": str(config.qdq) if config.qdq else None,
                       "engines": {k: str(v) for k, v in config.engines.items()},
                       "reference": plan.reference_mode or (plan.saved.mode if plan.saved else None),
                       "reference_source": plan.source,
                       "reference_file": str(plan.saved.path) if plan.saved else None,
                       "reference_missing": plan.no_reference, "seconds": round(seconds, 1)},
            "summary": {"speedup": report.speedup(rows), "targets": report.target_checks(rows)},
            "rows": rows,
            "plots": {name: [p.name if p else None, None if p else reason] for name, (p, reason) in plot_paths.items()},
        }
        paths = {"json": report.write_json(out / "report.json", payload),
                 "markdown": report.write_markdown(out / "report.md", payload)}
        paths.update({name: p for name, (p, _) in plot_paths.items() if p is not None})
        return BenchResult(payload, paths)

    def _plots(self, rows: list[dict[str, Any]], grid: Mapping[str, Sequence[PairOutputs]],
               out: Path, plan: RowPlan) -> dict[str, tuple[Path | None, str]]:
        """Each plot's file (None when not drawn) and why not; no matplotlib on a Jetson image: none drawn."""
        names = ("latency_vs_miou", "per_class_iou", "grid")
        if importlib.util.find_spec("matplotlib") is None:
            return {name: (None, "matplotlib not installed (the export extra: pip install '.[export]')")
                    for name in names}
        return {
            "latency_vs_miou": (plots.latency_vs_accuracy(rows, out / "latency_vs_miou.png", self.labelled),
                                "no mode has both latency and accuracy"),
            "per_class_iou": (plots.per_class_iou(rows, out / "per_class_iou.png"), "no ground-truth labels"),
            **plots.mode_grids(self.folder, grid, plan.reference_mode or (plan.saved.mode if plan.saved else None),
                               self.class_names, out, self.config.grid_pairs,
                               titles={r["mode"]: r["label"] for r in rows}),
        }


def run_benchmark(config: BenchConfig) -> BenchResult:
    """Run ``config`` and write ``report.json``, ``report.md`` and the plots into its output directory."""
    return Harness(config).run()


def _ordered(modes: Sequence[str]) -> list[str]:
    """Table order (the references first), each mode once."""
    return [name for name in MODES if name in modes]
