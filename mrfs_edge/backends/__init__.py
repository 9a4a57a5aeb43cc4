"""Backends behind one :class:`Runner` interface: ONNX Runtime, TensorRT and (reference) PyTorch.

:func:`open_runner` picks the runner from the model file, so scripts take one ``--model`` and
an optional ``--backend``. Nothing here imports TensorRT or torch until a model needs it.
"""
from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path
from typing import Any

from mrfs_edge.backends.base import Runner
from mrfs_edge.core.errors import ModelFileError

LOG = logging.getLogger(__name__)

ENGINE_SUFFIXES = (".engine", ".plan")
# ONNX Runtime execution providers per --backend, best first; missing ones fall back to CPU.
ONNXRUNTIME_PROVIDERS = {
    "onnxruntime": ("cuda", "cpu"),
    "onnxruntime-cpu": ("cpu",),
    "onnxruntime-cuda": ("cuda", "cpu"),
    "onnxruntime-trt": ("tensorrt", "cuda", "cpu"),
}
BACKENDS = (*ONNXRUNTIME_PROVIDERS, "tensorrt")


def open_runner(path: str | os.PathLike[str], backend: str | None = None, **options: Any) -> Runner:
    """The runner for a model file: ``.onnx`` → ONNX Runtime, ``.engine``/``.plan`` → TensorRT.

    ``backend`` is one of :data:`BACKENDS` (default: from the suffix); ``options`` go to the
    runner (``threads`` for ONNX Runtime, ``use_cuda_graph`` for TensorRT).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if backend is None:
        if suffix not in (".onnx", *ENGINE_SUFFIXES):
            raise ModelFileError(f"{path}: unknown model type '{suffix}' (expected .onnx, .engine or .plan)")
        backend = "tensorrt" if suffix in ENGINE_SUFFIXES else "onnxruntime"
    if backend == "tensorrt":
        if suffix not in ENGINE_SUFFIXES:
            raise ModelFileError(f"{path}: the tensorrt backend runs a built .engine/.plan; "
                                 "for an .onnx use --backend onnxruntime-trt or build an engine first")
        return _tensorrt_runner(path, **options)
    if backend not in ONNXRUNTIME_PROVIDERS:
        raise ModelFileError(f"{path}: unknown backend '{backend}' (choose from {', '.join(BACKENDS)})")
    if suffix != ".onnx":
        raise ModelFileError(f"{path}: ONNX Runtime runs .onnx models, not '{suffix}' files")
    return _onnxruntime_runner(path, backend, **options)


def _onnxruntime_runner(path: Path, backend: str, **options: Any) -> Runner:
    from mrfs_edge.backends.onnxruntime_runner import PROVIDER_ALIASES, OnnxRuntimeRunner

    wanted = ONNXRUNTIME_PROVIDERS[backend]
    runner = OnnxRuntimeRunner(path, providers=wanted, **options)
    if backend != "onnxruntime" and runner.providers[0] != PROVIDER_ALIASES[wanted[0]]:
        LOG.warning(f"{backend}: {PROVIDER_ALIASES[wanted[0]]} is not available in this onnxruntime; "
                    f"running on {runner.providers[0]}")
    return runner


def _tensorrt_runner(path: Path, **options: Any) -> Runner:
    """Import TensorRT only now: a machine without it still runs .onnx models."""
    onnx = path.with_suffix(".onnx")
    hint = f"run {onnx}" if onnx.is_file() else "run the model's .onnx"
    missing = None if importlib.util.find_spec("tensorrt") else "tensorrt"
    if missing is None:
        try:
            from mrfs_edge.backends.tensorrt_runner import TensorRTRunner

            return TensorRTRunner(path, **options)
        except ImportError as exc:   # TensorRT present but its CUDA bindings are not
            missing = exc.name or str(exc)
    raise ModelFileError(f"{path}: TensorRT is not available here ({missing} cannot be imported); "
                         f"{hint} with --backend onnxruntime instead")


__all__ = ["BACKENDS", "ENGINE_SUFFIXES", "Runner", "open_runner"]
