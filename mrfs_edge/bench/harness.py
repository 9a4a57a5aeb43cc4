"""One benchmark run: every mode timed and scored on the same pairs, then the report and plots.

The reference (PyTorch FP32 eager) runs first and keeps its outputs; every other mode is
compared with them pair by pair. A mode that cannot run here (no TensorRT) or fails becomes a
row of nulls with the reason, so one broken precision never costs the rest of a long run; a
failing reference ends the run, since nothing else could be scored without it.
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm import tqdm

from ..assets import DEMO_CHECKPOINT, EVAL_SPLIT, SAMPLES, announce
from ..backends.base import Runner
from ..data.pairs import PairFolder
from . import environment, plots, report
from .accuracy import ModeAccuracy, PairOutputs, network_size, run_pairs, score_mode
from .latency import PeakMemory, device_memory_in_use, measure_latency
from .modes import MODES, REFERENCE, Mode, ModelFiles

if TYPE_CHECKING:
    from ..calibration.pipeline import CalibrationConfig

LATENCY_PAIRS = 8      # distinct frames cycled through by the timed runs (read once, kept in memory)


@dataclass
class BenchConfig:
    """What to run; the defaults are the issue's default run (demo model, bundled labelled pairs)."""

    checkpoint: Path = DEMO_CHECKPOINT
    data: Path = SAMPLES
    split: Path | None = EVAL_SPLIT
    output_dir: Path = Path("build/benchmark")
    modes: Sequence[str] = tuple(MODES)
    runs: int = 10
    warmup: int = 2
    batches: Sequence[int] = (1,)
    threads: int = field(default_factory=lambda: os.cpu_count() or 1)
    torch_device: str = "cpu"
    onnx: Path | None = None
    qdq: Path | None = None
    engines: Mapping[str, Path] = field(default_factory=dict)
    calibration: CalibrationConfig | None = None
    grid_pairs: int = 3
    progress: bool = True

    def __post_init__(self) -> None:
        if self.runs < 1 or self.warmup < 0:
            raise ValueError(f"--runs must be ≥ 1 and --warmup ≥ 0 (got {self.runs} and {self.warmup})")
        if not self.batches or min(self.batches) < 1:
            raise ValueError(f"--batch sizes must be ≥ 1 (got {list(self.batches)})")
        if self.threads < 1:
            raise ValueError(f"--threads must be ≥ 1 (got {self.threads})")
        unknown = [m for m in self.modes if m not in MODES]
        if unknown:
            raise ValueError(f"unknown modes {unknown} (choose from {', '.join(MODES)})")
        if REFERENCE not in self.modes:
            raise ValueError(f"modes must include {REFERENCE}: the other rows are scored against it")
        self.modes = [m for m in MODES if m in self.modes]   # table order, the reference first


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
        return f"TensorRT {sidecar.tensorrt_version} {sidecar.precision} engine on {sidecar.gpu_name}"
    import torch

    if runner.device != "cpu":
        return f"torch {torch.__version__} on {torch.cuda.get_device_name(0)}"
    return f"torch {torch.__version__}, {torch.get_num_threads()} threads"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"[:300]


class Harness:
    """Runs the modes of ``config`` in order and assembles the report."""

    def __init__(self, config: BenchConfig, log: Callable[[str], None] = announce) -> None:
        self.config = config
        self.folder = PairFolder(config.data, config.split)
        self.labelled = self.folder.has_labels
        first = self.folder[0]
        self.height, self.width = network_size(first)
        self.latency_pairs = [first] + [self.folder[i] for i in range(1, min(len(self.folder), LATENCY_PAIRS))]
        self.models_dir = config.output_dir / "models"
        self._bar: tqdm | None = None
        self._log = log
        self.files = ModelFiles(config.checkpoint, self.height, self.width, self.models_dir, max(config.batches),
                                config.threads, config.torch_device, config.onnx, config.qdq, dict(config.engines),
                                config.calibration, log=self.log)
        self.memory = PeakMemory()
        self.palette: Sequence[Sequence[int]] = []   # the reference model's class colours, for the grid

    def log(self, message: str) -> None:
        """Messages above the progress bar instead of through it."""
        if self._bar is not None:
            self._bar.write(f"[mrfs-edge] {message}")
        else:
            self._log(message)

    def tick(self) -> None:
        if self._bar is not None:
            self._bar.update(1)

    def run(self) -> BenchResult:
        config = self.config
        started, load_start = time.perf_counter(), environment.load_average()
        modes = [MODES[name] for name in config.modes]
        trt_ok, trt_reason = True, ""
        if any(m.runtime == "tensorrt" for m in modes):
            from ..engine import tensorrt_status

            trt_ok, trt_reason = tensorrt_status()
        runnable = [m for m in modes if m.runtime != "tensorrt" or trt_ok]
        per_mode = sum(config.warmup + config.runs for _ in config.batches) + len(self.folder)
        self.log(f"{len(self.folder)} pairs at {self.width}x{self.height}, modes: {', '.join(m.name for m in modes)}; "
                 f"{config.threads} threads")
        rows: list[dict[str, Any]] = []
        grid: dict[str, list[PairOutputs]] = {}
        reference: ModeAccuracy | None = None
        with tqdm(total=per_mode * len(runnable), desc="benchmark", unit="run", disable=not config.progress,
                  dynamic_ncols=True) as self._bar:
            for mode in modes:
                if mode not in runnable:
                    rows.append(report.empty_row(mode, trt_reason))
                    self.log(f"{mode.name}: skipped ({trt_reason})")
                    continue
                self._bar.set_description(mode.name)
                try:
                    row, accuracy = self.measure(mode, reference)
                except Exception as exc:  # any failure of one mode is reported in its row, not raised
                    if mode.name == REFERENCE:
                        raise
                    reason = f"failed: {_first_line(exc)}"
                    self.log(f"{mode.name}: {reason}")
                    rows.append(report.empty_row(mode, reason))
                    continue
                if reference is None:
                    reference = accuracy
                grid[mode.name] = accuracy.outputs[:config.grid_pairs]
                rows.append(row)
                self.log(self._one_line(row))
        self._bar = None
        return self.assemble(rows, grid, time.perf_counter() - started, load_start)

    def measure(self, mode: Mode, reference: ModeAccuracy | None) -> tuple[dict[str, Any], ModeAccuracy]:
        """Latency, memory and accuracy of one mode; its model file is made first, outside the timings."""
        config = self.config
        path = self.files.path_for(mode)
        reasons: dict[str, str] = {}
        self.memory.reset()
        runner = self.files.open(mode)   # not activated yet: nothing is on the device
        device_before = device_memory_in_use() if runner.device != "cpu" else None
        if not self.palette:
            self.palette = runner.contract.palette
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
                                  self.labelled, reference, keep=None if reference is None else config.grid_pairs)
            row = {**report.empty_row(mode, ""), "backend": runner.backend, "device": runner.device,
                   "detail": _describe(runner, config.threads), "model_file": str(path),
                   "file_size_bytes": path.stat().st_size, "latency": latency, "memory": memory,
                   "accuracy": accuracy.figures, "fusion": accuracy.fusion, "fusion_delta": accuracy.fusion_delta,
                   "reasons": {**reasons, **accuracy.reasons}}
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
                 load_start: list[float] | None) -> BenchResult:
        """report.json, report.md and the plots in the output directory."""
        config, out = self.config, self.config.output_dir
        out.mkdir(parents=True, exist_ok=True)
        gpu = next((r["device"] for r in rows if r["runtime"] == "tensorrt" and r["device"]), None)
        plot_paths = {
            "latency_vs_miou": (plots.latency_vs_accuracy(rows, out / "latency_vs_miou.png", self.labelled),
                                "no mode has both latency and accuracy"),
            "per_class_iou": (plots.per_class_iou(rows, out / "per_class_iou.png"), "no ground-truth labels"),
            "grid": (plots.image_grid(self.latency_pairs[:config.grid_pairs], grid, self.palette, out / "grid.png"),
                     "no mode produced outputs"),
        }
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
                       "reference": REFERENCE, "seconds": round(seconds, 1)},
            "summary": {"speedup": report.speedup(rows), "targets": report.target_checks(rows)},
            "rows": rows,
            "plots": {name: [p.name if p else None, None if p else reason] for name, (p, reason) in plot_paths.items()},
        }
        paths = {"json": report.write_json(out / "report.json", payload),
                 "markdown": report.write_markdown(out / "report.md", payload)}
        paths.update({name: p for name, (p, _) in plot_paths.items() if p is not None})
        return BenchResult(payload, paths)


def run_benchmark(config: BenchConfig, log: Callable[[str], None] = announce) -> BenchResult:
    """Run ``config`` and write ``report.json``, ``report.md`` and the plots into its output directory."""
    return Harness(config, log).run()
