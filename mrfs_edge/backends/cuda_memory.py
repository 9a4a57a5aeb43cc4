"""The little CUDA the TensorRT runner and calibrator need, over cuda-python or pycuda.

TensorRT's Python API takes raw device pointers and a stream handle but allocates nothing for
the caller, so something must provide device buffers, pinned host buffers, async copies, one
stream and (for the runner's CUDA-graph mode) stream capture. Two libraries can:

* cuda-python (preferred): NVIDIA's thin runtime-API bindings, on PyPI for desktop and Jetson;
  it shares the runtime's primary context with TensorRT, so nothing needs pushing or popping.
* pycuda: common on older Jetson images. It uses the driver API, so it retains the *primary*
  context (the one TensorRT's runtime API uses) instead of creating a private one.

Both are imported lazily; :func:`open_cuda_memory` picks the first one installed.
"""
from __future__ import annotations

import ctypes
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

import numpy as np

from ..errors import MrfsEdgeError

LIBRARIES = ("cuda-python", "pycuda")


class CudaError(MrfsEdgeError):
    """No usable CUDA library or device, or a CUDA call failed."""


class CudaMemory(ABC):
    """Device/pinned allocations, one stream and graph capture; ``close`` frees all of it."""

    library = "abstract"

    @property
    @abstractmethod
    def stream_handle(self) -> int:
        """The stream as an integer, as TensorRT's ``execute_async_v3`` takes it."""

    @abstractmethod
    def alloc(self, nbytes: int) -> int:
        """A device buffer of ``nbytes``; returns its address."""

    @abstractmethod
    def free(self, ptr: int) -> None: ...

    @abstractmethod
    def pinned(self, nbytes: int) -> np.ndarray:
        """A page-locked host buffer (uint8), alive until ``close``; view it as any dtype."""

    @abstractmethod
    def htod_async(self, dst: int, src: np.ndarray) -> None: ...

    @abstractmethod
    def dtoh_async(self, dst: np.ndarray, src: int) -> None: ...

    @abstractmethod
    def synchronize(self) -> None: ...

    @abstractmethod
    def capture_graph(self, work: Callable[[], None]) -> Any:
        """Record what ``work`` enqueues on the stream into an executable CUDA graph."""

    @abstractmethod
    def launch_graph(self, graph: Any) -> None: ...

    @abstractmethod
    def close(self) -> None: ...

    def htod(self, dst: int, src: np.ndarray) -> None:
        self.htod_async(dst, src)
        self.synchronize()


def _import_cudart() -> Any:
    try:
        from cuda.bindings import runtime  # cuda-python >= 12.6
    except ImportError:
        from cuda import cudart as runtime  # older cuda-python (the layout of JetPack-era wheels)
    return runtime


def _cudart_call(runtime: Any, function: str, *args: Any) -> Any:
    """Run ``cudart.<function>``; cuda-python returns ``(error, *results)`` instead of raising."""
    error, *results = getattr(runtime, function)(*args)
    if error != runtime.cudaError_t.cudaSuccess:
        raise CudaError(f"CUDA {function} failed: {getattr(error, 'name', error)}")
    return results[0] if len(results) == 1 else tuple(results)


class CudaPythonMemory(CudaMemory):
    library = "cuda-python"

    def __init__(self, device: int = 0) -> None:
        self._rt = _import_cudart()
        self._call("cudaSetDevice", device)
        self._stream = self._call("cudaStreamCreate")
        self._device: set[int] = set()
        self._host: list[int] = []
        self._graphs: list[Any] = []

    def _call(self, function: str, *args: Any) -> Any:
        return _cudart_call(self._rt, function, *args)

    @staticmethod
    def properties(device: int = 0) -> tuple[str, tuple[int, int]]:
        runtime = _import_cudart()
        if _cudart_call(runtime, "cudaGetDeviceCount") == 0:
            raise CudaError("no CUDA GPU visible")
        prop = _cudart_call(runtime, "cudaGetDeviceProperties", device)
        name = prop.name if isinstance(prop.name, str) else bytes(prop.name).split(b"\0", 1)[0].decode()
        return name.strip(), (int(prop.major), int(prop.minor))

    @property
    def stream_handle(self) -> int:
        return int(self._stream)

    def alloc(self, nbytes: int) -> int:
        ptr = int(self._call("cudaMalloc", nbytes))
        self._device.add(ptr)
        return ptr

    def free(self, ptr: int) -> None:
        self._device.discard(ptr)
        self._call("cudaFree", ptr)

    def pinned(self, nbytes: int) -> np.ndarray:
        ptr = int(self._call("cudaMallocHost", nbytes))
        self._host.append(ptr)
        return np.ctypeslib.as_array((ctypes.c_uint8 * nbytes).from_address(ptr))

    def htod_async(self, dst: int, src: np.ndarray) -> None:
        self._call("cudaMemcpyAsync", dst, src.ctypes.data, src.nbytes,
                   self._rt.cudaMemcpyKind.cudaMemcpyHostToDevice, self._stream)

    def dtoh_async(self, dst: np.ndarray, src: int) -> None:
        self._call("cudaMemcpyAsync", dst.ctypes.data, src, dst.nbytes,
                   self._rt.cudaMemcpyKind.cudaMemcpyDeviceToHost, self._stream)

    def synchronize(self) -> None:
        self._call("cudaStreamSynchronize", self._stream)

    def capture_graph(self, work: Callable[[], None]) -> Any:
        # Thread-local capture: other threads (camera readers) may keep calling CUDA meanwhile.
        mode = self._rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
        self._call("cudaStreamBeginCapture", self._stream, mode)
        try:
            work()
        finally:
            graph = self._call("cudaStreamEndCapture", self._stream)
        executable = self._call("cudaGraphInstantiateWithFlags", graph, 0)
        self._call("cudaGraphDestroy", graph)
        self._graphs.append(executable)
        return executable

    def launch_graph(self, graph: Any) -> None:
        self._call("cudaGraphLaunch", graph, self._stream)

    def close(self) -> None:
        for executable in self._graphs:
            self._call("cudaGraphExecDestroy", executable)
        for ptr in self._device:
            self._call("cudaFree", ptr)
        for ptr in self._host:
            self._call("cudaFreeHost", ptr)
        self._call("cudaStreamDestroy", self._stream)
        self._graphs, self._device, self._host = [], set(), []


class PyCudaMemory(CudaMemory):
    library = "pycuda"

    def __init__(self, device: int = 0) -> None:
        import pycuda.driver as drv

        drv.init()
        self._drv = drv
        # TensorRT works in the runtime API's primary context: share it rather than make one.
        self._context = drv.Device(device).retain_primary_context()
        self._context.push()
        self._stream = drv.Stream()
        self._device: dict[int, Any] = {}
        self._host: list[Any] = []   # pycuda page-locked arrays; .base is their HostAllocation

    @staticmethod
    def properties(device: int = 0) -> tuple[str, tuple[int, int]]:
        import pycuda.driver as drv

        drv.init()
        if drv.Device.count() == 0:
            raise CudaError("no CUDA GPU visible")
        gpu = drv.Device(device)
        major, minor = gpu.compute_capability()
        return gpu.name().strip(), (int(major), int(minor))

    @property
    def stream_handle(self) -> int:
        return int(self._stream.handle)

    def alloc(self, nbytes: int) -> int:
        allocation = self._drv.mem_alloc(nbytes)
        self._device[int(allocation)] = allocation
        return int(allocation)

    def free(self, ptr: int) -> None:
        self._device.pop(ptr).free()

    def pinned(self, nbytes: int) -> np.ndarray:
        buffer = self._drv.pagelocked_empty(nbytes, np.uint8)
        self._host.append(buffer)
        return buffer

    def htod_async(self, dst: int, src: np.ndarray) -> None:
        self._drv.memcpy_htod_async(dst, src, self._stream)

    def dtoh_async(self, dst: np.ndarray, src: int) -> None:
        self._drv.memcpy_dtoh_async(dst, src, self._stream)

    def synchronize(self) -> None:
        self._stream.synchronize()

    def capture_graph(self, work: Callable[[], None]) -> Any:
        if not hasattr(self._stream, "begin_capture"):
            raise CudaError("this pycuda has no CUDA-graph support (needs 2021.1+); install cuda-python "
                            "or run without CUDA graphs")
        self._stream.begin_capture()
        try:
            work()
        finally:
            graph = self._stream.end_capture()
        return graph.instantiate()

    def launch_graph(self, graph: Any) -> None:
        graph.launch(self._stream)

    def close(self) -> None:
        for allocation in self._device.values():
            allocation.free()
        for buffer in self._host:
            buffer.base.free()
        self._device, self._host = {}, []
        self._context.pop()
        self._context.detach()


_IMPLEMENTATIONS: dict[str, type[CudaPythonMemory] | type[PyCudaMemory]] = {
    "cuda-python": CudaPythonMemory, "pycuda": PyCudaMemory}


def installed_library() -> str | None:
    """The CUDA library this toolkit would use: cuda-python first, then pycuda."""
    try:
        _import_cudart()
        return "cuda-python"
    except ImportError:
        pass
    try:
        import pycuda.driver  # noqa: F401
        return "pycuda"
    except ImportError:
        return None


def _implementation(library: str | None) -> type[CudaPythonMemory] | type[PyCudaMemory]:
    library = library or installed_library()
    if library is None:
        raise CudaError("neither cuda-python nor pycuda is installed (pip install cuda-python)")
    if library not in _IMPLEMENTATIONS:
        raise ValueError(f"CUDA library must be one of {LIBRARIES}, not {library!r}")
    return _IMPLEMENTATIONS[library]


def open_cuda_memory(device: int = 0, library: str | None = None) -> CudaMemory:
    """Device memory and a stream on ``device`` through ``library`` (default: what is installed)."""
    return _implementation(library)(device)


def gpu_properties(device: int = 0, library: str | None = None) -> tuple[str, tuple[int, int]]:
    """``(name, (major, minor))`` of ``device``; :class:`CudaError` when there is none."""
    return _implementation(library).properties(device)
