"""Implicit INT8 calibration for TensorRT 8.x to 10.x (TensorRT computes the scales itself).

The calibrator pulls feed dicts (``{"visible": NCHW float32, "infrared": NCHW float32}``, the
contract's input names) from the same iterable the explicit Q/DQ path reads (for example
:class:`~mrfs_edge.calibration.dataset.CalibrationSet`), in the spirit of ONNX Runtime's
``CalibrationDataReader``: one data pipeline, two quantisation routes. Each batch is copied, in
its own dtype (the network's input type), to device buffers whose addresses TensorRT reads.

The resulting cache is written atomically, with a ``<cache>.json`` note of the method and a hash
of the data it came from. A later build reuses a cache of the same method without touching the
iterable at all (it is only iterated on TensorRT's first ``get_batch``), so rebuilding an engine
does not need the calibration images.

TensorRT's calibrator classes are pybind11 types that exist only with TensorRT, so
:func:`make_calibrator` derives the concrete class at run time from the one
:meth:`~mrfs_edge.backends.trt_compat.TrtApi.calibrator_base` picks.
"""
from __future__ import annotations

import hashlib
import json
import os
import typing
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mrfs_edge.backends.cuda_memory import CudaMemory, open_cuda_memory
from mrfs_edge.backends.sidecar import CalibrationInfo, TrtCalibrationMethod
from mrfs_edge.backends.trt_compat import TrtApi
from mrfs_edge.core.files import write_bytes_atomic, write_json_atomic

Feed = typing.Mapping[str, np.ndarray]   # typing's: collections.abc's is not subscriptable on 3.8


def cache_note_path(cache_path: str | os.PathLike[str]) -> Path:
    cache_path = Path(cache_path)
    return cache_path.with_name(cache_path.name + ".json")


class CalibratorLogic:
    """Batches, device buffers and the cache; mixed in before TensorRT's calibrator base.

    TensorRT's binding catches any exception raised in ``get_batch``, prints it and ends
    calibration as if the data had run out (python/src/infer/pyInt8.cpp), which would leave an
    engine calibrated on part of the data. So ``get_batch`` catches everything itself, keeps it
    in ``error`` with the pair's file name (``batches.names`` when the set has them, as
    :class:`~mrfs_edge.calibration.dataset.CalibrationSet` does) and the builder fails the build.
    """

    def __init__(self, batches: Iterable[Feed], cache_path: str | os.PathLike[str], method: TrtCalibrationMethod,
                 memory: CudaMemory | None = None, fingerprint: str | None = None) -> None:
        super().__init__()  # TensorRT's pybind11 base must be initialised explicitly
        self.cache_path = Path(cache_path)
        self.method = method
        self._owns_memory = memory is None
        self.memory = memory or open_cuda_memory()
        self.fingerprint = fingerprint
        self.error: str | None = None
        self.reused = False
        self.size = 0
        self._batches = batches
        self._iterator: Iterator[Feed] | None = None
        self._buffers: dict[str, tuple[int, int]] = {}   # name → (device pointer, capacity)
        self._digest = hashlib.sha256()
        self._shapes: dict[str, tuple[int, ...]] | None = None
        self._index = 0

    def expect_shapes(self, shapes: Mapping[str, Sequence[int]]) -> None:
        """The calibration profile's shapes: what TensorRT reads from each buffer, every batch."""
        self._shapes = {name: tuple(int(d) for d in shape) for name, shape in shapes.items()}

    def _where(self) -> str:
        names = getattr(self._batches, "names", None)
        if isinstance(names, Sequence) and self._index < len(names):
            return f"calibration pair {names[self._index]} (#{self._index})"
        return f"calibration batch #{self._index}"

    def get_batch_size(self) -> int:
        # Explicit-batch networks take the batch from the tensors' shapes; TensorRT ignores this.
        return 1

    def get_batch(self, names: Sequence[str]) -> list[int] | None:
        if self.error is not None:
            return None
        try:
            return self._next_batch(names)
        except Exception as exc:   # TensorRT would swallow it and end calibration quietly
            self.error = f"{self._where()}: {type(exc).__name__}: {exc}"
            return None

    def _next_batch(self, names: Sequence[str]) -> list[int] | None:
        if self._iterator is None:
            self._iterator = iter(self._batches)
        feed = next(self._iterator, None)
        if feed is None:
            return None
        missing = [name for name in names if name not in feed]
        if missing:
            raise ValueError(f"lacks inputs {missing}")
        pointers = []
        for name in names:
            array = np.ascontiguousarray(feed[name])
            expected = (self._shapes or {}).get(name)
            if expected is not None and tuple(array.shape) != expected:
                raise ValueError(f"{name} has shape {list(array.shape)}, the calibration profile is {list(expected)}")
            pointer = self._device_buffer(name, array.nbytes)
            self.memory.htod(pointer, array)
            self._digest.update(name.encode() + str(array.shape).encode() + array.tobytes())
            pointers.append(pointer)
        self.size += int(np.shape(feed[names[0]])[0])
        self._index += 1
        return pointers

    def _device_buffer(self, name: str, nbytes: int) -> int:
        pointer, capacity = self._buffers.get(name, (0, 0))
        if capacity < nbytes:
            if capacity:
                self.memory.free(pointer)
            pointer, capacity = self.memory.alloc(nbytes), nbytes
            self._buffers[name] = (pointer, capacity)
        return pointer

    def read_calibration_cache(self) -> bytes | None:
        """The existing cache, unless its note names another method or calibration set.

        TensorRT skips ``get_batch`` entirely when this returns data.
        """
        if not self.cache_path.is_file():
            return None
        note = self._read_note()
        if note.get("method", self.method) != self.method:
            return None
        if self.fingerprint is not None and note.get("set_sha256") not in (None, self.fingerprint):
            return None
        self.reused = True
        return self.cache_path.read_bytes()

    def write_calibration_cache(self, cache: Any) -> None:
        write_bytes_atomic(self.cache_path, bytes(cache))
        write_json_atomic(cache_note_path(self.cache_path),
                          {"method": self.method, "set_sha256": self._set_sha256(), "size": self.size})

    def _read_note(self) -> dict[str, Any]:
        path = cache_note_path(self.cache_path)
        try:
            return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        except ValueError:
            return {}

    def info(self) -> CalibrationInfo:
        """Provenance for the engine sidecar (from the note when the cache was reused)."""
        if self.reused:
            note = self._read_note()
            return CalibrationInfo(self.method, note.get("set_sha256"), int(note.get("size", 0)),
                                   str(self.cache_path))
        return CalibrationInfo(self.method, self._set_sha256(), self.size, str(self.cache_path))

    def _set_sha256(self) -> str | None:
        """The caller's fingerprint of the set, else a hash of the batches actually fed."""
        return self.fingerprint or (self._digest.hexdigest() if self.size else None)

    def close(self) -> None:
        for pointer, _ in self._buffers.values():
            self.memory.free(pointer)
        self._buffers = {}
        if self._owns_memory:
            self.memory.close()


def make_calibrator(api: TrtApi, batches: Iterable[Feed], cache_path: str | os.PathLike[str],
                    method: TrtCalibrationMethod = "entropy", memory: CudaMemory | None = None,
                    fingerprint: str | None = None) -> CalibratorLogic:
    """A TensorRT ``IInt8EntropyCalibrator2`` ("entropy") or ``IInt8MinMaxCalibrator`` ("minmax").

    Entropy (KL divergence) suits CNN activations; min-max keeps outliers and suits transformer
    blocks whose activations have long tails. ``memory`` defaults to the installed CUDA library
    (opened here and closed by ``close()``); ``fingerprint`` identifies the calibration set in
    the sidecar (e.g. ``CalibrationSet.fingerprint()``; default: a hash of the batches fed).
    Call ``close()`` after the build to release the device buffers.
    """
    base = api.calibrator_base(method)
    cls = type(f"MrfsEdge{base.__name__}", (CalibratorLogic, base), {})
    calibrator: CalibratorLogic = cls(batches, cache_path, method, memory, fingerprint)
    return calibrator
