"""The outputs every other row is compared with, on a workstation and on a torch-free Jetson alike.

Agreement, fused PSNR/SSIM and the mIoU drop only mean something against FP32 outputs of the
same model on the same pairs. Which FP32 outputs, first match:

1. ``--reference ref.npz``: outputs saved by the workstation run (``--save-reference``), one
   class map and fused image per pair, matched by pair name (no model runs for them here);
2. PyTorch FP32 eager when PyTorch is installed, or when ``--modes`` names it (then it must be);
3. without PyTorch, the FP32 ONNX in ONNX Runtime: ``--onnx``, else the FP32 ONNX beside a given
   engine (:func:`fp32_beside`), else an ONNX the run can make without PyTorch (the cached demo
   export);
4. none: the rows are scored against ground truth only, and one line says how to get a reference.
"""
from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mrfs_edge.bench import environment
from mrfs_edge.bench.accuracy import PairOutputs
from mrfs_edge.core.contract import ModelContract
from mrfs_edge.core.errors import ModelFileError, MrfsEdgeError
from mrfs_edge.core.files import atomic_path
from mrfs_edge.core.onnx_scan import export_stem, scan_onnx
from mrfs_edge.io.pairs import Pair

REFERENCE_SCHEMA = "mrfs_edge.bench.reference/1"
PYTORCH_MISSING = "PyTorch not installed (the workstation's export extra: pip install '.[export]')"
HOW_TO_GET_ONE = ("pass --onnx FP32.onnx, or --reference ref.npz written on the workstation by "
                  "benchmarks/run.py --save-reference ref.npz")


class ReferenceError(MrfsEdgeError):
    """A reference file or FP32 ONNX cannot serve as the reference of this run."""


def torch_installed() -> bool:
    """Whether ``import torch`` can work here (False on a Jetson image, or when torch is blocked)."""
    try:
        return importlib.util.find_spec("torch") is not None
    except (ImportError, ValueError):   # a half-imported or stubbed module without a spec
        return False


def fp32_name(onnx_name: str) -> str:
    """``m.int8.onnx`` / ``m.fp16.onnx`` → ``m.onnx`` (the FP32 export they were made from)."""
    return f"{export_stem(onnx_name)}.onnx"


def check_fp32_onnx(path: Path, what: str = "--onnx") -> Path:
    """``path`` if it is an FP32 ONNX file; a one-line error naming ``what`` otherwise."""
    if not path.is_file():
        raise ModelFileError(f"{path}: no such ONNX file ({what})")
    if scan_onnx(path).has_qdq:
        raise ModelFileError(f"{path}: holds Q/DQ nodes, not the FP32 graph ({what}; the Q/DQ graph goes to --qdq)")
    return path


def fp32_beside(engine: Path) -> tuple[Path | None, str]:
    """The FP32 ONNX an engine's sidecar points back to, in the engine's folder, or why there is none.

    The sidecar names the ONNX the engine was built from (for INT8 the Q/DQ ``<stem>.int8.onnx``);
    the FP32 export it was calibrated from is ``<stem>.onnx``, which ``build_engine.py`` writes to
    the same ``build/`` folder that is copied to the target. It must exist beside the engine, hold
    no Q/DQ nodes and come from the engine's checkpoint.
    """
    from mrfs_edge.backends.onnxruntime_runner import read_onnx_contract
    from mrfs_edge.backends.sidecar import read_sidecar

    sidecar = read_sidecar(engine)
    candidate = engine.parent / fp32_name(Path(sidecar.onnx_file).name)
    if not candidate.is_file():
        return None, f"{candidate.name} (the FP32 ONNX of {sidecar.onnx_file}) is not beside {engine}"
    if scan_onnx(candidate).has_qdq:
        return None, f"{candidate} holds Q/DQ nodes, it is not an FP32 graph"
    source = read_onnx_contract(candidate).checkpoint_sha256
    built_from = sidecar.contract.checkpoint_sha256 or sidecar.checkpoint_sha256
    if source and built_from and source != built_from:
        return None, (f"{candidate} comes from checkpoint {source[:12]}, the engine {engine.name} from "
                      f"{built_from[:12]}")
    return candidate, f"{candidate} (beside {engine.name})"


def save_reference(path: Path, mode: str, model_file: str, contract: ModelContract, names: Sequence[str],
                   outputs: Sequence[PairOutputs]) -> Path:
    """The reference row's class map and fused image per pair, for a later run without that model.

    Fused images stay float32: rounding them would cap the PSNR a near-exact engine can show.
    """
    if len(names) != len(outputs):
        raise ValueError(f"{len(names)} pair names for {len(outputs)} outputs")
    meta = {"schema": REFERENCE_SCHEMA, "mode": mode, "model_file": model_file,
            "checkpoint_sha256": contract.checkpoint_sha256, "class_names": list(contract.class_names),
            "palette": [list(c) for c in contract.palette], "pairs": list(names),
            "created": environment.now(), "commit": environment.git_commit(), "versions": environment.versions()}
    arrays: dict[str, np.ndarray] = {"meta": np.array(json.dumps(meta))}
    for index, out in enumerate(outputs):
        arrays[f"labels_{index}"] = np.asarray(out.labels, dtype=np.uint8)
        arrays[f"fused_{index}"] = np.asarray(out.fused, dtype=np.float32)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:   # a file object: np.savez would append .npz to a bare name
            np.savez_compressed(handle, **arrays)
    return path


class SavedReference:
    """Reference outputs read from a ``--save-reference`` file, looked up by pair name."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._data = np.load(path, allow_pickle=False)
            meta = json.loads(str(self._data["meta"]))
        except FileNotFoundError as exc:
            raise ReferenceError(f"{path}: no such reference file (--reference)") from exc
        except (OSError, ValueError, KeyError) as exc:
            raise ReferenceError(f"{path}: not a reference file written by --save-reference ({exc})") from exc
        if not isinstance(meta, dict) or meta.get("schema") != REFERENCE_SCHEMA:
            raise ReferenceError(f"{path}: not a reference file (expected schema {REFERENCE_SCHEMA})")
        self.meta: dict[str, Any] = meta
        self.mode: str = meta["mode"]
        self.checkpoint_sha256: str = meta.get("checkpoint_sha256") or ""
        self._index = {name: i for i, name in enumerate(meta["pairs"])}

    @property
    def class_names(self) -> list[str]:
        return list(self.meta.get("class_names") or [])

    @property
    def palette(self) -> list[list[int]]:
        return [list(c) for c in self.meta.get("palette") or []]

    def predictions(self, pairs: Iterable[Pair]) -> Iterator[tuple[Pair, PairOutputs]]:
        """Each pair with its saved outputs; every pair must be in the file, at the pair's own size."""
        for pair in pairs:
            index = self._index.get(pair.name)
            if index is None:
                raise ReferenceError(f"{self.path}: no reference outputs for pair {pair.name} "
                                     "(save them with --save-reference on the same --data)")
            labels, fused = self._data[f"labels_{index}"], self._data[f"fused_{index}"]
            if labels.shape != tuple(pair.size) or fused.shape != (3, *pair.size):
                raise ReferenceError(f"{self.path}: outputs of pair {pair.name} are {labels.shape[1]}x{labels.shape[0]}, "
                                     f"the pair is {pair.size[1]}x{pair.size[0]}")
            yield pair, PairOutputs(labels.astype(np.int64), fused)

    def check_engine(self, engine: Path) -> None:
        """An engine of another checkpoint cannot be scored against these outputs."""
        from mrfs_edge.backends.sidecar import read_sidecar

        sidecar = read_sidecar(engine)
        built_from = sidecar.contract.checkpoint_sha256 or sidecar.checkpoint_sha256
        if self.checkpoint_sha256 and built_from and built_from != self.checkpoint_sha256:
            raise ReferenceError(f"{self.path}: saved from checkpoint {self.checkpoint_sha256[:12]}, but {engine} "
                                 f"was built from {built_from[:12]}")

    def describe(self) -> str:
        return f"{self.mode} outputs saved in {self.path} ({self.meta.get('created', 'undated')})"
