"""The benchmark's rows: which model file each mode runs, on which backend, and how it is made.

A mode is a (runtime, precision) pair. PyTorch FP32 eager is the reference every other row is
compared with where PyTorch is installed; on a torch-free target it is the FP32 ONNX in ONNX
Runtime or outputs saved by the workstation run (:mod:`.reference`). The model files are made on
demand by the :mod:`mrfs_edge.deploy` steps (FP32 export, emulated FP16 graph, calibrated Q/DQ
graph, engine), each reused only when the key recorded beside it matches this run's inputs and
options exactly, so a mode that is not asked for costs nothing, a changed calibration option
recalibrates, and a mode whose file cannot be made becomes a row of nulls with the reason instead
of ending the run.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from mrfs_edge.assets import DEMO_CHECKPOINT, DEMO_INPUT_SIZE
from mrfs_edge.backends.base import Runner
from mrfs_edge.bench.reference import check_fp32_onnx, fp32_name
from mrfs_edge.core.errors import ModelFileError
from mrfs_edge.deploy import EngineBuild, Fp16Graph, Fp32Onnx, QdqGraph, why_rebuild

if TYPE_CHECKING:
    from mrfs_edge.calibration.pipeline import CalibrationConfig

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class Mode:
    """One row of the report."""

    name: str
    label: str
    runtime: str          # pytorch | onnxruntime | tensorrt
    precision: str        # fp32 | fp16 | int8
    emulated: bool        # numerics of a target precision reproduced elsewhere, not measured on it


MODES: dict[str, Mode] = {m.name: m for m in (
    Mode("pytorch-fp32", "PyTorch FP32 eager", "pytorch", "fp32", False),
    Mode("onnxruntime-fp32", "ONNX Runtime FP32", "onnxruntime", "fp32", False),
    Mode("onnxruntime-fp16", "FP16 graph on ONNX Runtime (emulated)", "onnxruntime", "fp16", True),
    Mode("onnxruntime-int8", "INT8 Q/DQ graph on ONNX Runtime", "onnxruntime", "int8", False),
    Mode("tensorrt-fp32", "TensorRT FP32 engine", "tensorrt", "fp32", False),
    Mode("tensorrt-fp16", "TensorRT FP16 engine", "tensorrt", "fp16", False),
    Mode("tensorrt-int8", "TensorRT INT8 engine", "tensorrt", "int8", False),
)}
REFERENCE = "pytorch-fp32"                # the reference wherever PyTorch is installed
FALLBACK_REFERENCE = "onnxruntime-fp32"   # the FP32 ONNX in ONNX Runtime where it is not
ALIASES = {"pytorch": "pytorch-fp32", "torch": "pytorch-fp32",
           **{f"ort-{p}": f"onnxruntime-{p}" for p in ("fp32", "fp16", "int8")},
           **{f"trt-{p}": f"tensorrt-{p}" for p in ("fp32", "fp16", "int8")}}
# An engine's sidecar precision → its row; "best" mixes INT8 and FP16, reported with INT8.
ENGINE_PRECISION_MODES = {"fp32": "tensorrt-fp32", "fp16": "tensorrt-fp16", "int8": "tensorrt-int8",
                          "best": "tensorrt-int8"}


def parse_modes(items: Sequence[str] | None) -> list[str] | None:
    """Mode names from ``--modes`` items (space or comma separated, aliases allowed), in table order.

    ``None`` (no ``--modes``) stays ``None``: every mode, none of them asked for by name. The
    reference the other rows are compared with is added by the harness, which knows whether
    PyTorch is installed here (:mod:`mrfs_edge.bench.reference`).
    """
    if not items:
        return None
    wanted = set()
    for item in items:
        for name in filter(None, (part.strip().lower() for part in item.split(","))):
            name = ALIASES.get(name, name)
            if name not in MODES:
                raise ValueError(f"--modes: unknown mode '{name}' (choose from {', '.join(MODES)}; "
                                 f"short forms {', '.join(ALIASES)})")
            wanted.add(name)
    return [name for name in MODES if name in wanted]


@dataclass
class ModelFiles:
    """The model file behind each mode, made the first time a mode asks for it and kept.

    ``onnx``/``qdq``/``engines`` are files the user gave (used as they are); everything else is
    written under ``work_dir``. ``batch`` > 1 exports the FP32 graph with a dynamic batch axis.
    ``calibration`` is a :class:`~mrfs_edge.calibration.pipeline.CalibrationConfig` (None: defaults).
    """

    checkpoint: Path
    height: int
    width: int
    work_dir: Path
    max_batch: int = 1
    threads: int = 0
    torch_device: str = "cpu"
    onnx: Path | None = None
    qdq: Path | None = None
    engines: dict[str, Path] = field(default_factory=dict)
    calibration: CalibrationConfig | None = None
    _made: dict[str, Path] = field(default_factory=dict, init=False, repr=False)

    def path_for(self, mode: Mode) -> Path:
        """The file ``mode`` runs: the checkpoint for PyTorch, an ONNX file or an engine otherwise."""
        if mode.runtime == "pytorch":
            return self.checkpoint
        if mode.runtime == "tensorrt":
            return self._engine(mode)
        return {"fp32": self.fp32_onnx, "fp16": self.fp16_onnx, "int8": self.qdq_onnx}[mode.precision]()

    def open(self, mode: Mode) -> Runner:
        """A runner for ``mode`` (not activated)."""
        if mode.runtime == "pytorch":
            from mrfs_edge.model.torch_runner import TorchRunner

            return TorchRunner(self.checkpoint, self.height, self.width, self.threads, self.torch_device)
        from mrfs_edge.backends import open_runner

        path = self.path_for(mode)
        if mode.runtime == "tensorrt":
            return open_runner(path, "tensorrt")
        return open_runner(path, "onnxruntime-cpu", threads=self.threads)

    def _once(self, key: str, make: Callable[[], Path]) -> Path:
        if key not in self._made:
            self._made[key] = make()
        return self._made[key]

    def fp32_onnx(self) -> Path:
        return self._once("fp32", self._export)

    def fp16_onnx(self) -> Path:
        def make() -> Path:
            source = self.fp32_onnx()
            return Fp16Graph(source).run(self.work_dir / f"{source.stem}.fp16.onnx")
        return self._once("fp16", make)

    def qdq_onnx(self) -> Path:
        def make() -> Path:
            if self.qdq is not None:
                if not self.qdq.is_file():
                    raise ModelFileError(f"{self.qdq}: no such Q/DQ ONNX file (--qdq)")
                return self.qdq
            from mrfs_edge.assets import CALIB_SPLIT, SAMPLES
            from mrfs_edge.calibration.pipeline import CalibrationConfig
            from mrfs_edge.io.pairs import PairFolder

            step = QdqGraph(self.fp32_onnx(), PairFolder(SAMPLES, CALIB_SPLIT), self.calibration or CalibrationConfig())
            if why_rebuild(step.target(self.work_dir), step.key()) is not None:
                LOG.info(f"calibrating INT8 on the bundled calibration pairs into {self.work_dir} "
                         "(pass --qdq to reuse a Q/DQ model instead)")
            return step.run(self.work_dir).path
        return self._once("int8", make)

    def fp32_if_ready(self) -> tuple[Path | None, str]:
        """The FP32 ONNX if it exists or can be made here, else None and why (e.g. no PyTorch to export)."""
        try:
            return self.fp32_onnx(), ""
        except (ModelFileError, ImportError) as exc:
            return None, str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__

    def _export(self) -> Path:
        if self.onnx is not None:
            return check_fp32_onnx(self.onnx)
        from mrfs_edge.core.export_options import ExportOptions

        if self.max_batch == 1 and (self.height, self.width) == DEMO_INPUT_SIZE and _same_file(self.checkpoint, DEMO_CHECKPOINT):
            from mrfs_edge.deploy.demo import default_onnx

            return default_onnx(self.height, self.width)
        dynamic = {"dynamic": "batch", "max_shape": (self.max_batch, self.height, self.width)} if self.max_batch > 1 else {}
        options = ExportOptions(height=self.height, width=self.width, **dynamic)
        suffix = f"_dyn-b{self.max_batch}" if self.max_batch > 1 else ""
        target = self.work_dir / f"{self.checkpoint.stem}_{self.height}x{self.width}{suffix}.onnx"
        return Fp32Onnx(self.checkpoint, options).run(target)

    def _engine(self, mode: Mode) -> Path:
        """A given engine, or one built now from this run's ONNX (needs TensorRT and a GPU)."""
        if mode.name in self.engines:
            return self.engines[mode.name]

        def make() -> Path:
            from mrfs_edge.backends.machine import tensorrt_status
            from mrfs_edge.engine import EngineBuildConfig

            source = self.qdq_onnx() if mode.precision == "int8" else self.fp32_onnx()
            target = self.work_dir / f"{fp32_name(source.name)[:-len('.onnx')]}.{mode.precision}.engine"
            EngineBuild(source, EngineBuildConfig(precision=mode.precision), tensorrt_status()[1]).run(target)
            return target
        return self._once(mode.name, make)


def engine_modes(paths: Sequence[str | os.PathLike[str]]) -> dict[str, Path]:
    """``--engine`` files by the row they fill, from each engine's sidecar precision."""
    engines: dict[str, Path] = {}
    if not paths:
        return engines
    from mrfs_edge.backends.sidecar import read_sidecar

    for path in map(Path, paths):
        mode = ENGINE_PRECISION_MODES[read_sidecar(path).precision]
        if mode in engines:
            raise ValueError(f"--engine: {engines[mode]} and {path} both fill the {mode} row")
        engines[mode] = path
    return engines


def _same_file(a: Path, b: Path) -> bool:
    return a.is_file() and b.is_file() and os.path.samefile(a, b)
