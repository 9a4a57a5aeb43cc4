"""The little CUDA the TensorRT runner and calibrator need: libcudart's runtime API through ctypes.

TensorRT's Python API takes raw device pointers and a stream handle but allocates nothing for
the caller, so something must provide device buffers, pinned host buffers, async copies, one
stream and (for the runner's CUDA-graph mode) stream capture. Calling the CUDA runtime library
itself through :mod:`ctypes` (as Polygraphy's ``polygraphy.cuda`` does) needs nothing installed:
libcudart ships with every JetPack, and on x86 the ``nvidia-cuda-runtime-cu12`` wheel carries it.
The runtime API also shares the device's primary context with TensorRT, so no context is pushed.

Where the library comes from, first found wins: the file named by ``MRFS_EDGE_CUDART``; the
``nvidia-cuda-runtime-cu12`` wheel in this environment; the system's ``libcudart.so`` names
(JetPack keeps them under ``/usr/local/cuda``).

The runtime API binds a device to each host thread (a fresh thread uses device 0), and the
pipeline calls ``infer`` on its model thread, not the thread that opened the memory. So every
operation first makes the memory's device current on the calling thread; TensorRT's own
enqueue, which follows the input copies on that thread, then runs on the right device too.
"""
from __future__ import annotations

import ctypes
import importlib.util
import logging
import os
import threading
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Tuple

import numpy as np

from mrfs_edge.core.errors import MrfsEdgeError

log = logging.getLogger(__name__)

ENV_LIBRARY = "MRFS_EDGE_CUDART"
WHEEL_LIBRARY = ("nvidia.cuda_runtime", "lib/libcudart.so.12")   # nvidia-cuda-runtime-cu12
SYSTEM_LIBRARIES = ("libcudart.so", "libcudart.so.13", "libcudart.so.12", "libcudart.so.11.0")
SYSTEM_DIRS = ("/usr/local/cuda/lib64", "/usr/local/cuda/targets/aarch64-linux/lib")
INSTALL_HINT = ("on a Jetson it comes with JetPack's CUDA; on x86: pip install nvidia-cuda-runtime-cu12; "
                f"or set {ENV_LIBRARY} to a libcudart .so")

# Values from the CUDA runtime headers (driver_types.h), identical in CUDA 11.4 to 13.
MEMCPY_HOST_TO_DEVICE = 1
MEMCPY_DEVICE_TO_HOST = 2
CAPTURE_MODE_THREAD_LOCAL = 1   # cudaStreamCaptureModeThreadLocal: other threads may keep calling CUDA
ATTR_COMPUTE_CAPABILITY_MAJOR = 75
ATTR_COMPUTE_CAPABILITY_MINOR = 76
# struct cudaDeviceProp begins with `char name[256]` in every release; its size (about 1 KB) and
# the rest of its layout vary, so it is read into a buffer far larger than any release's struct.
DEVICE_PROP_BYTES = 16384
DEVICE_NAME_BYTES = 256
# Errors that mean no GPU can be used at all, with the summary the user reads first.
NO_GPU = {35: "no usable GPU driver", 100: "no CUDA GPU visible"}

_int_p = ctypes.POINTER(ctypes.c_int)
_void_pp = ctypes.POINTER(ctypes.c_void_p)
_ptr, _size, _int = ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int
# Every function bound, with its C argument types; each returns cudaError_t (an int). Explicit
# types keep 64-bit pointers and sizes from being truncated to C int.
SIGNATURES: Dict[str, Sequence[Any]] = {
    "cudaRuntimeGetVersion": [_int_p],
    "cudaGetDeviceCount": [_int_p],
    "cudaGetDevice": [_int_p],
    "cudaSetDevice": [_int],
    "cudaDeviceGetAttribute": [_int_p, _int, _int],
    "cudaGetDeviceProperties": [_ptr, _int],
    "cudaMalloc": [_void_pp, _size],
    "cudaFree": [_ptr],
    "cudaMallocHost": [_void_pp, _size],
    "cudaFreeHost": [_ptr],
    "cudaMemcpyAsync": [_ptr, _ptr, _size, _int, _ptr],
    "cudaStreamCreate": [_void_pp],
    "cudaStreamDestroy": [_ptr],
    "cudaStreamSynchronize": [_ptr],
    "cudaStreamBeginCapture": [_ptr, _int],
    "cudaStreamEndCapture": [_ptr, _void_pp],
    # Since CUDA 11.4, with one signature in 11.x, 12.x and 13.x (cudaGraphInstantiate changed its
    # own in 12.0, so it is not used).
    "cudaGraphInstantiateWithFlags": [_void_pp, _ptr, ctypes.c_ulonglong],
    "cudaGraphLaunch": [_ptr, _ptr],
    "cudaGraphDestroy": [_ptr],
    "cudaGraphExecDestroy": [_ptr],
}


class CudaError(MrfsEdgeError):
    """No usable CUDA runtime or device, or a CUDA call failed (one line: what, which call, why)."""


class CudaMemory(ABC):
    """Device/pinned allocations, one stream and graph capture; ``close`` frees all of it."""

    library = "abstract"   # what provides the memory; the libcudart path for the real one

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


# ------------------------------------------------------------------------------- the library
class _Runtime:
    """One loaded libcudart: its functions typed on first use, every status checked."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lib = ctypes.CDLL(path)
        self._functions: Dict[str, Any] = {}
        self._name = self._text_function("cudaGetErrorName")
        self._text = self._text_function("cudaGetErrorString")

    def _text_function(self, name: str) -> Any:
        function = self._symbol(name)
        function.argtypes, function.restype = [ctypes.c_int], ctypes.c_char_p
        return function

    def _symbol(self, name: str) -> Any:
        try:
            return self._lib[name]   # a fresh function object: typing it affects no other user
        except AttributeError:
            raise CudaError(f"CUDA: {self.path} has no {name} (CUDA 11.4 or newer is needed)") from None

    def describe(self, function: str, status: int) -> str:
        name = (self._name(status) or b"?").decode(errors="replace")
        text = (self._text(status) or b"?").decode(errors="replace")
        return f"CUDA: {NO_GPU.get(status, 'call failed')} ({function}: {name}: {text})"

    def call(self, function: str, *args: Any) -> None:
        bound = self._functions.get(function)
        if bound is None:
            bound = self._symbol(function)
            bound.argtypes, bound.restype = SIGNATURES[function], ctypes.c_int
            self._functions[function] = bound
        status = bound(*args)
        if status != 0:
            raise CudaError(self.describe(function, status))

    def int_out(self, function: str, *args: Any) -> int:
        """Call a function whose first parameter is an ``int *`` result."""
        value = ctypes.c_int(0)
        self.call(function, ctypes.byref(value), *args)
        return value.value

    def pointer_out(self, function: str, *args: Any) -> int:
        """Call a function whose first parameter is a ``void **`` result (NULL reads as 0)."""
        value = ctypes.c_void_p()
        self.call(function, ctypes.byref(value), *args)
        return value.value or 0


_loaded: Dict[str, _Runtime] = {}
_load_lock = threading.Lock()


def _wheel_library() -> Optional[str]:
    package, relative = WHEEL_LIBRARY
    try:
        spec = importlib.util.find_spec(package)
    except ImportError:   # the `nvidia` namespace itself is absent
        return None
    for folder in (spec.submodule_search_locations or []) if spec is not None else []:
        candidate = Path(folder) / relative
        if candidate.is_file():
            return str(candidate)
    return None


def _candidates() -> List[str]:
    wheel = _wheel_library()
    return ([wheel] if wheel else []) + list(SYSTEM_LIBRARIES) + [
        f"{folder}/{name}" for folder in SYSTEM_DIRS for name in SYSTEM_LIBRARIES]


def _runtime() -> _Runtime:
    """The libcudart to use now (see the module docstring for the order); loaded once per path."""
    explicit = os.environ.get(ENV_LIBRARY)
    with _load_lock:
        if explicit:
            if explicit not in _loaded:
                try:
                    _loaded[explicit] = _Runtime(explicit)
                except OSError as exc:
                    raise CudaError(f"{ENV_LIBRARY}={explicit}: cannot load it as libcudart ({exc})") from None
            return _loaded[explicit]
        candidates = _candidates()
        for candidate in candidates:
            if candidate in _loaded:
                return _loaded[candidate]
        for candidate in candidates:
            try:
                _loaded[candidate] = _Runtime(candidate)
            except OSError:
                continue
            log.debug("CUDA runtime: %s", candidate)
            return _loaded[candidate]
    raise CudaError(f"CUDA runtime library (libcudart) not found: {INSTALL_HINT}")


def library_path() -> str:
    """The libcudart this toolkit loads (for diagnostics); :class:`CudaError` when there is none."""
    return _runtime().path


def runtime_version() -> int:
    """``cudaRuntimeGetVersion`` of that library: 1000 * major + 10 * minor (12090 is CUDA 12.9)."""
    return _runtime().int_out("cudaRuntimeGetVersion")


def gpu_properties(device: int = 0) -> Tuple[str, Tuple[int, int]]:
    """``(name, (major, minor))`` of ``device``; :class:`CudaError` when there is none."""
    runtime = _runtime()
    count = runtime.int_out("cudaGetDeviceCount")
    if count == 0:
        raise CudaError("CUDA: no CUDA GPU visible (cudaGetDeviceCount found none)")
    if not 0 <= device < count:
        raise CudaError(f"CUDA: device {device} does not exist ({count} visible)")
    major = runtime.int_out("cudaDeviceGetAttribute", ATTR_COMPUTE_CAPABILITY_MAJOR, device)
    minor = runtime.int_out("cudaDeviceGetAttribute", ATTR_COMPUTE_CAPABILITY_MINOR, device)
    prop = ctypes.create_string_buffer(DEVICE_PROP_BYTES)
    runtime.call("cudaGetDeviceProperties", prop, device)
    name = prop.raw[:DEVICE_NAME_BYTES].split(b"\0", 1)[0].decode(errors="replace").strip()
    return name, (major, minor)


def open_cuda_memory(device: int = 0) -> CudaMemory:
    """Device memory and a stream on ``device``, through libcudart."""
    return CudartMemory(_runtime(), device)


# ---------------------------------------------------------------------------------- memory
def _contiguous(array: np.ndarray, role: str, writeable: bool = False) -> int:
    """The address of ``array``'s data. An async copy reads or writes it later, so a temporary
    contiguous copy would be gone by then: the caller's array itself must be contiguous."""
    if not array.flags["C_CONTIGUOUS"] or (writeable and not array.flags["WRITEABLE"]):
        need = "C-contiguous and writeable" if writeable else "C-contiguous"
        raise CudaError(f"CUDA copy: the {role} array must be {need} (shape {array.shape})")
    return int(array.ctypes.data)


def _checked_size(nbytes: int, what: str) -> int:
    if nbytes < 0:
        raise CudaError(f"CUDA {what}: nbytes must be >= 0, not {nbytes}")
    return int(nbytes)


class CudartMemory(CudaMemory):
    """Buffers, one stream and CUDA graphs on one device, usable from any thread (one at a time)."""

    def __init__(self, runtime: _Runtime, device: int = 0) -> None:
        self._rt = runtime
        self.library = runtime.path
        self.device = device
        self._closed = False
        self._device_buffers: Set[int] = set()
        self._host_buffers: List[int] = []
        self._graphs: List[int] = []
        self._rt.call("cudaSetDevice", device)
        self._stream = self._rt.pointer_out("cudaStreamCreate")

    def _bind(self) -> None:
        """Make this memory's device current on the calling thread (the runtime keeps one per
        thread; asking is cheap and stays right when other code switches devices)."""
        if self._closed:
            raise CudaError("CUDA memory used after close()")
        if self._rt.int_out("cudaGetDevice") != self.device:
            self._rt.call("cudaSetDevice", self.device)

    @property
    def stream_handle(self) -> int:
        return self._stream

    def alloc(self, nbytes: int) -> int:
        self._bind()
        ptr = self._rt.pointer_out("cudaMalloc", _checked_size(nbytes, "alloc"))
        self._device_buffers.add(ptr)
        return ptr

    def free(self, ptr: int) -> None:
        self._bind()
        self._device_buffers.discard(ptr)
        self._rt.call("cudaFree", ptr)

    def pinned(self, nbytes: int) -> np.ndarray:
        self._bind()
        if _checked_size(nbytes, "pinned") == 0:
            return np.zeros(0, np.uint8)
        ptr = self._rt.pointer_out("cudaMallocHost", nbytes)
        self._host_buffers.append(ptr)
        return np.ctypeslib.as_array((ctypes.c_uint8 * nbytes).from_address(ptr))

    def htod_async(self, dst: int, src: np.ndarray) -> None:
        self._bind()
        self._rt.call("cudaMemcpyAsync", dst, _contiguous(src, "source"), src.nbytes,
                      MEMCPY_HOST_TO_DEVICE, self._stream)

    def dtoh_async(self, dst: np.ndarray, src: int) -> None:
        self._bind()
        self._rt.call("cudaMemcpyAsync", _contiguous(dst, "destination", writeable=True), src, dst.nbytes,
                      MEMCPY_DEVICE_TO_HOST, self._stream)

    def synchronize(self) -> None:
        self._bind()
        self._rt.call("cudaStreamSynchronize", self._stream)

    def capture_graph(self, work: Callable[[], None]) -> int:
        # Thread-local capture: other threads (camera readers) may keep calling CUDA meanwhile.
        self._bind()
        self._rt.call("cudaStreamBeginCapture", self._stream, CAPTURE_MODE_THREAD_LOCAL)
        try:
            work()
        except BaseException:
            self._abandon_capture()
            raise
        graph = self._end_capture()
        try:
            executable = self._rt.pointer_out("cudaGraphInstantiateWithFlags", graph, 0)
        finally:
            self._rt.call("cudaGraphDestroy", graph)
        self._graphs.append(executable)
        return executable

    def _end_capture(self) -> int:
        graph = ctypes.c_void_p()
        self._rt.call("cudaStreamEndCapture", self._stream, ctypes.byref(graph))
        return graph.value or 0

    def _abandon_capture(self) -> None:
        """End a capture whose work raised, so the stream is usable again; the work's exception
        is the one reported."""
        try:
            graph = self._end_capture()
            if graph:
                self._rt.call("cudaGraphDestroy", graph)
        except CudaError as exc:   # an invalidated capture ends with an error by design
            log.debug("ending the failed capture: %s", exc)

    def launch_graph(self, graph: int) -> None:
        self._bind()
        self._rt.call("cudaGraphLaunch", graph, self._stream)

    def close(self) -> None:
        """Free everything; a second call does nothing. Every release is tried, then the first
        failure is raised."""
        if self._closed:
            return
        self._bind()
        self._closed = True
        releases = ([("cudaGraphExecDestroy", graph) for graph in self._graphs]
                    + [("cudaFree", ptr) for ptr in self._device_buffers]
                    + [("cudaFreeHost", ptr) for ptr in self._host_buffers]
                    + [("cudaStreamDestroy", self._stream)])
        self._graphs, self._device_buffers, self._host_buffers = [], set(), []
        failure: Optional[CudaError] = None
        for function, handle in releases:
            try:
                self._rt.call(function, handle)
            except CudaError as exc:
                failure = failure or exc
        if failure is not None:
            raise failure
