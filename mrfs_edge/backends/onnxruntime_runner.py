"""ONNX Runtime runner: CPU everywhere, CUDA or TensorRT execution providers when installed."""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mrfs_edge.backends.base import Runner
from mrfs_edge.core.contract import ModelContract
from mrfs_edge.core.errors import ModelFileError

PROVIDER_ALIASES = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider",
                    "tensorrt": "TensorrtExecutionProvider"}


def read_onnx_contract(path: str | os.PathLike[str]) -> ModelContract:
    """The contract stored in an ONNX file's metadata, read through ONNX Runtime (no onnx package)."""
    session = _open_session(Path(path), ["CPUExecutionProvider"], threads=1)
    return ModelContract.from_metadata(session.get_modelmeta().custom_metadata_map, str(path))


def _open_session(path: Path, providers: Sequence[str], threads: int = 0):
    import onnxruntime as ort

    if not path.is_file():
        raise ModelFileError(f"{path}: no such ONNX model")
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), options, providers=list(providers))
    except Exception as exc:  # onnxruntime raises its own exception types per failure
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelFileError(f"{path}: ONNX Runtime cannot load it ({first[:200]})") from exc


class OnnxRuntimeRunner(Runner):
    """Runs an exported ``.onnx`` with the first available of the requested providers."""

    backend = "onnxruntime"

    def __init__(self, path: str | os.PathLike[str], providers: Sequence[str] = ("cpu",),
                 threads: int = 0, contract: ModelContract | None = None) -> None:
        self.path = Path(path)
        self.threads = threads
        import onnxruntime as ort

        available = set(ort.get_available_providers())
        wanted = [PROVIDER_ALIASES.get(p, p) for p in providers]
        self.providers = [p for p in wanted if p in available] or ["CPUExecutionProvider"]
        self._session: Any = None  # onnxruntime.InferenceSession once activated
        super().__init__(contract or read_onnx_contract(self.path), f"onnxruntime:{self.path.name}")
        self.device = "gpu" if self.providers[0] != "CPUExecutionProvider" else "cpu"

    def _activate(self) -> None:
        self._session = _open_session(self.path, self.providers, self.threads)
        self.output_names = [o.name for o in self._session.get_outputs()]

    def _infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        assert self._session is not None
        inputs = {name: np.ascontiguousarray(feed[name]) for name in self.contract.input_names}
        return dict(zip(self.output_names, self._session.run(self.output_names, inputs)))

    def _deactivate(self) -> None:
        self._session = None
