"""The ``<engine>.json`` sidecar: what an engine is, where it came from and where it may run.

A TensorRT engine is a GPU- and release-specific binary with no room for our metadata, so the
builder writes this file beside it (``model.engine`` → ``model.engine.json``) and every runner
reads it first. It carries the full :class:`~mrfs_edge.core.contract.ModelContract`, the build
settings, provenance hashes, and the machine the engine was built for.

Portability rule (``check_engine_compatible``): an engine runs only where

* the TensorRT release is the same — major.minor.patch, plus the build number when both sides
  report one. TensorRT refuses plans from any other library version ("expecting library version
  X got Y") unless built version-compatible, which this toolkit does not do; and
* the GPU has the same compute capability (``sm_XY``): kernels are chosen and compiled per SM.
  A different GPU name with the same capability is accepted (TensorRT only warns that tactics
  were timed on another device).

Everything here is plain Python: no TensorRT, CUDA or torch, so any machine can inspect engines.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, NamedTuple

from mrfs_edge.core.contract import ModelContract
from mrfs_edge.core.errors import ModelFileError
from mrfs_edge.core.files import write_json_atomic

# What an engine was asked to run: best = INT8 where calibrated, FP16 elsewhere.
Precision = Literal["fp32", "fp16", "int8", "best"]
# INT8 route: explicit = Q/DQ nodes in the ONNX; implicit = TensorRT's own calibrator.
Quant = Literal["explicit", "implicit"]
TrtCalibrationMethod = Literal["entropy", "minmax"]

REBUILD_COMMAND = "python export/build_engine.py --onnx {onnx} --{precision}"


class Machine(NamedTuple):
    """Where an engine is built or about to run."""

    tensorrt_version: str
    gpu_name: str
    compute_capability: tuple[int, int]


@dataclass
class CalibrationInfo:
    """Implicit-INT8 provenance: which data set the scales came from."""

    method: TrtCalibrationMethod
    set_sha256: str | None      # hash of the calibration batches (None: unknown, cache given alone)
    size: int                   # number of samples (0 when unknown)
    cache_file: str | None


@dataclass
class EngineSidecar:
    """Everything a runner needs to trust, describe and feed an engine."""

    engine_file: str
    engine_sha256: str
    tensorrt_version: str
    gpu_name: str
    compute_capability: tuple[int, int]
    precision: Precision
    strongly_typed: bool
    quant: Quant | None                     # None: no INT8
    dla_core: int | None
    pins: dict[str, list[str]]              # {"fp32": [layer names kept in FP32]}
    input_shapes: dict[str, list[int]]      # opt shapes (the static shapes of a static engine)
    profiles: list[dict[str, list[list[int]]]]   # [{input: [min, opt, max]}]; [] when static
    onnx_file: str
    onnx_sha256: str
    build_time_s: float
    built_at: str                           # ISO 8601, UTC
    toolkit_version: str
    contract: ModelContract
    checkpoint_sha256: str = ""
    calibration: CalibrationInfo | None = None
    notes: list[str] = field(default_factory=list)   # build warnings, e.g. pins that matched nothing
    precision_built: str | None = None      # what the engine's layers really run (engine inspector)
    tf32: bool = False                      # FP32 layers allowed to use TF32
    layers: dict[str, Any] | None = None    # inspector report: {"counts": {...}, "layers": [...]}

    def layer_summary(self) -> str:
        """One line: layers per precision and on DLA, as the engine inspector reported them."""
        if not self.layers:
            return "per-layer report: none (engine built before the inspector report)"
        from mrfs_edge.backends.trt_inspector import summary_line

        return summary_line(self.layers)

    @property
    def machine(self) -> Machine:
        return Machine(self.tensorrt_version, self.gpu_name, self.compute_capability)

    def rebuild_hint(self) -> str:
        return REBUILD_COMMAND.format(onnx=self.onnx_file, precision=self.precision)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["contract"] = json.loads(self.contract.to_json())
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "EngineSidecar":
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["contract"] = ModelContract.from_json(json.dumps(data["contract"]))
        values["compute_capability"] = tuple(data["compute_capability"])
        if data.get("calibration") is not None:
            values["calibration"] = CalibrationInfo(**data["calibration"])
        return cls(**values)


def sidecar_path(engine_path: str | os.PathLike[str]) -> Path:
    engine_path = Path(engine_path)
    return engine_path.with_name(engine_path.name + ".json")


def write_sidecar(engine_path: str | os.PathLike[str], sidecar: EngineSidecar) -> Path:
    return write_json_atomic(sidecar_path(engine_path), sidecar.to_dict())


def read_sidecar(engine_path: str | os.PathLike[str]) -> EngineSidecar:
    """The sidecar of ``engine_path``; a missing or unreadable one is a one-line refusal."""
    engine_path = Path(engine_path)
    path = sidecar_path(engine_path)
    if not engine_path.is_file():
        raise ModelFileError(f"{engine_path}: no such engine")
    if not path.is_file():
        raise ModelFileError(f"{engine_path}: no sidecar {path.name} beside it, so its contract, "
                             "TensorRT version and GPU are unknown; rebuild it with: "
                             + REBUILD_COMMAND.format(onnx="<model.onnx>", precision="<precision>"))
    try:
        return EngineSidecar.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelFileError(f"{engine_path}: sidecar {path.name} is unreadable ({exc})") from exc


def _version_parts(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", version.split("+")[0])[:4])


def same_tensorrt(built: str, running: str) -> bool:
    """Same release: major.minor.patch, and the build number when both report one."""
    a, b = _version_parts(built), _version_parts(running)
    a3, b3 = (a + (0, 0, 0))[:3], (b + (0, 0, 0))[:3]
    return a3 == b3 and (len(a) < 4 or len(b) < 4 or a[3] == b[3])


def sm(compute_capability: tuple[int, int]) -> str:
    return f"sm_{compute_capability[0]}{compute_capability[1]}"


def check_engine_compatible(sidecar: EngineSidecar, tensorrt_version: str, gpu_name: str,
                            compute_capability: tuple[int, int]) -> None:
    """Refuse (one line) an engine built for another TensorRT release or GPU architecture."""
    if (same_tensorrt(sidecar.tensorrt_version, tensorrt_version)
            and tuple(sidecar.compute_capability) == tuple(compute_capability)):
        return
    raise ModelFileError(
        f"{sidecar.engine_file}: built with TensorRT {sidecar.tensorrt_version} for {sidecar.gpu_name} "
        f"({sm(sidecar.compute_capability)}), this machine has TensorRT {tensorrt_version} on "
        f"{gpu_name} ({sm(compute_capability)}); rebuild it with: {sidecar.rebuild_hint()}")


def check_engine_bytes(sidecar: EngineSidecar, engine_path: str | os.PathLike[str], sha256: str) -> None:
    """Refuse an engine replaced after its sidecar was written (the sidecar would describe another)."""
    if sha256 != sidecar.engine_sha256:
        raise ModelFileError(f"{engine_path}: does not match its sidecar {sidecar_path(engine_path).name} "
                             f"(engine changed after the build); rebuild it with: {sidecar.rebuild_hint()}")
