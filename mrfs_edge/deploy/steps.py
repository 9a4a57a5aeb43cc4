"""The deploy steps: checkpoint → FP32 ONNX → FP16 graph / Q/DQ graph → TensorRT engine.

Each step is a small frozen object holding exactly its inputs; ``key()`` is its
:class:`~mrfs_edge.deploy.keys.CacheKey` and ``run(target)`` reuses ``target`` on an exact key
match or builds it and records the key beside it. ``build_engine.py`` and the benchmark both go
through these, so there is one rule for "reuse an earlier export".

The module imports on a torch-free target install: torch, onnx and the calibration pipeline are
imported inside the steps that need them (under :func:`~mrfs_edge.core.errors.needs_extra`), so
``build_engine.py --onnx`` on a Jetson reaches the engine step without them.
"""
from __future__ import annotations

import importlib.metadata
import json
import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mrfs_edge.core.errors import needs_extra
from mrfs_edge.core.export_options import ExportOptions
from mrfs_edge.core.files import sha256_file
from mrfs_edge.deploy.keys import CacheKey, reuse_or_build, source_identity
from mrfs_edge.io.pairs import PairFolder

if TYPE_CHECKING:
    from mrfs_edge.backends.sidecar import EngineSidecar
    from mrfs_edge.calibration.pipeline import CalibrationConfig
    from mrfs_edge.engine.builder import EngineBuildConfig

LOG = logging.getLogger(__name__)

# ExportOptions fields that decide whether an export is kept (the parity check), not what it holds.
CHECK_ONLY_EXPORT_FIELDS = ("tolerance", "min_agreement", "parity_pairs")
# EngineBuildConfig fields that are not options of the engine: the calibrator object is keyed by its
# data (``EngineBuild.calibration``), and the timing cache only speeds up the tactic search.
ENGINE_FIELDS_NOT_KEYED = ("calibrator", "timing_cache")


def _package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def pairs_identity(folder: PairFolder, indices: list[int] | None = None) -> dict[str, Any]:
    """Pairs as a key field: their names and a hash of their files (not the folder's path)."""
    from mrfs_edge.calibration.dataset import fingerprint_pairs

    chosen = list(range(len(folder))) if indices is None else indices
    return {"names": [folder.names[i] for i in chosen], "sha256": fingerprint_pairs(folder, chosen)}


@dataclass(frozen=True)
class Fp32Onnx:
    """Checkpoint → checked FP32 ONNX (:func:`mrfs_edge.export.onnx_export.export_onnx`, needs torch)."""

    checkpoint: Path
    options: ExportOptions = field(default_factory=ExportOptions)
    parity_data: Path | None = None
    parity_split: Path | None = None

    def key(self) -> CacheKey:
        export = {k: v for k, v in asdict(self.options).items() if k not in CHECK_ONLY_EXPORT_FIELDS}
        return CacheKey("fp32-onnx", {"checkpoint_sha256": sha256_file(self.checkpoint), "export": export,
                                      "torch": _package_version("torch"), "onnx": _package_version("onnx")})

    def run(self, target: Path) -> Path:
        def build() -> None:
            with needs_extra("ONNX export"):
                from mrfs_edge.export.onnx_export import export_onnx
            export_onnx(self.checkpoint, target, self.options, self.parity_data, self.parity_split)

        reuse_or_build(target, self.key(), build)
        return target


@dataclass(frozen=True)
class Fp16Graph:
    """FP32 ONNX → FP16 graph with the contract's FP32 pins (:func:`mrfs_edge.export.fp16.convert_to_fp16`)."""

    source: Path

    def key(self) -> CacheKey:
        return CacheKey("fp16-onnx", {"source": source_identity(self.source),
                                      "onnxconverter_common": _package_version("onnxconverter-common")})

    def run(self, target: Path) -> Path:
        def build() -> None:
            with needs_extra("FP16 conversion"):
                from mrfs_edge.export.fp16 import convert_to_fp16

                convert_to_fp16(self.source, target)

        reuse_or_build(target, self.key(), build)
        return target


@dataclass
class QdqResult:
    """The calibrated Q/DQ graph and the summary its calibration wrote (figures, budget_met)."""

    path: Path
    summary: dict[str, Any]
    built: bool


@dataclass(frozen=True)
class QdqGraph:
    """FP32 ONNX → calibrated mixed-precision Q/DQ graph (:func:`mrfs_edge.calibration.pipeline.calibrate`).

    The key holds every calibration setting and the chosen calibration pairs' names and file
    hashes; ``held_out`` pairs are keyed too, because the summary that comes back with the graph
    (and decides ``budget_met``) is measured on them.
    """

    source: Path
    calibration_pairs: PairFolder
    config: CalibrationConfig
    held_out: PairFolder | None = None

    def key(self) -> CacheKey:
        """The key, computed once per step (a caller that decides before ``run`` asks twice): it
        hashes the source graph and every calibration and held-out pair's files."""
        return self._key

    @cached_property
    def _key(self) -> CacheKey:
        from mrfs_edge.calibration.dataset import select_pairs

        config = self.config
        quantizer = config.quantizer
        if quantizer == "auto":
            with needs_extra("INT8 calibration"):
                from mrfs_edge.calibration.pipeline import resolve_quantizer
            quantizer = resolve_quantizer(quantizer)
        chosen = select_pairs(self.calibration_pairs.names, config.count)
        return CacheKey("qdq-onnx", {
            "source": source_identity(self.source),
            "calibration": {"count": config.count, "method": config.method, "quantizer": quantizer,
                            "mixed_precision": config.mixed_precision, "sensitivity_pairs": config.sensitivity_pairs,
                            "quantize_attention": config.quantize_attention, "budget": asdict(config.budget),
                            "pairs": pairs_identity(self.calibration_pairs, chosen)},
            "held_out": pairs_identity(self.held_out) if self.held_out is not None else None,
            "onnxruntime": _package_version("onnxruntime"),
            "modelopt": _package_version("nvidia-modelopt") if quantizer == "modelopt" else None})

    def target(self, out_dir: Path) -> Path:
        """Where :func:`calibrate` writes the graph (``<stem>.int8.onnx``; its summary beside it)."""
        return out_dir / f"{self.source.stem}.int8.onnx"

    def run(self, out_dir: Path) -> QdqResult:
        target = self.target(out_dir)
        summary_path = out_dir / f"{self.source.stem}.int8.summary.json"

        def build() -> None:
            with needs_extra("INT8 calibration"):
                from mrfs_edge.calibration.pipeline import calibrate
            calibrate(self.source, out_dir, self.calibration_pairs, self.config, self.held_out)

        built = reuse_or_build(target, self.key(), build, companions=[summary_path])
        return QdqResult(target, json.loads(summary_path.read_text()), built)


@dataclass(frozen=True)
class EngineBuild:
    """ONNX → TensorRT engine and sidecar (:func:`mrfs_edge.engine.builder.build_engine`).

    ``machine`` names the TensorRT release and GPU (``tensorrt_status()``'s description): an engine
    runs only where it was built. ``calibration`` identifies the data of an implicit-INT8
    calibrator (method, pairs) since the calibrator object itself is not a key.
    """

    source: Path
    config: EngineBuildConfig
    machine: str
    calibration: Mapping[str, Any] | None = None

    def key(self) -> CacheKey:
        options = {name: getattr(self.config, name) for name in self.config.__dataclass_fields__
                   if name not in ENGINE_FIELDS_NOT_KEYED}
        return CacheKey("engine", {"source": source_identity(self.source), "build": options,
                                   "machine": self.machine, "calibration": self.calibration})

    def run(self, target: Path) -> EngineSidecar | None:
        """The new engine's sidecar, or None when the engine was reused (its sidecar is beside it)."""
        from mrfs_edge.backends.sidecar import sidecar_path
        from mrfs_edge.engine import builder

        made: list[EngineSidecar] = []
        reuse_or_build(target, self.key(), lambda: made.append(builder.build_engine(self.source, target, self.config)),
                       companions=[sidecar_path(target)])
        return made[0] if made else None
