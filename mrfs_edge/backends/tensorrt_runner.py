"""TensorRT runner: a serialized engine behind the common :class:`~.base.Runner` interface.

The engine's sidecar is read and checked before anything touches the GPU, so a stale or
foreign engine is refused in one line instead of failing inside TensorRT. Execution uses the
name-based tensor API (``num_io_tensors``, ``set_input_shape``, ``set_tensor_address``,
``execute_async_v3``) that TensorRT 8.5 through 10.x share.

Buffers are allocated once, at the largest shapes the engine's profile admits, as device memory
plus pinned host memory; a call copies in, runs and copies out on one stream. With
``use_cuda_graph`` the engine launch is captured into a CUDA graph per input-shape set (after
one ordinary run, which TensorRT needs before capture) and replayed, saving launch overhead on
Jetson CPUs. Addresses never change, so captured graphs stay valid.
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mrfs_edge.backends.base import Runner
from mrfs_edge.backends.cuda_memory import CudaMemory, open_cuda_memory
from mrfs_edge.backends.sidecar import EngineSidecar, Machine, check_engine_bytes, check_engine_compatible, read_sidecar
from mrfs_edge.backends.trt_compat import as_api, dims
from mrfs_edge.core.errors import ModelFileError

if TYPE_CHECKING:
    import tensorrt


@dataclass
class _Binding:
    """One I/O tensor: device buffer, pinned host buffer and the shape it currently has."""

    dtype: np.dtype
    device: int
    host: np.ndarray   # uint8 pinned buffer of the maximum size
    shape: tuple[int, ...] = ()

    def view(self, shape: tuple[int, ...]) -> np.ndarray:
        count = int(np.prod(shape))
        return self.host[: count * self.dtype.itemsize].view(self.dtype).reshape(shape)


class TensorRTRunner(Runner):
    """Runs ``<model>.engine`` (with its ``.json`` sidecar) on this machine's GPU.

    ``trt``: the tensorrt module, a :class:`~mrfs_edge.backends.trt_compat.TrtApi` or None to import
    it; ``machine``: this machine (default: queried); ``memory_factory``: the CUDA layer
    (default: cuda-python or pycuda, whichever is installed). The last three exist for tests.
    """

    backend = "tensorrt"

    def __init__(self, engine_path: str | os.PathLike[str], use_cuda_graph: bool = False,
                 trt: Any = None, machine: Machine | None = None,
                 memory_factory: Callable[[], CudaMemory] = open_cuda_memory) -> None:
        self.path = Path(engine_path)
        self.sidecar: EngineSidecar = read_sidecar(self.path)
        self.api = as_api(trt)
        if machine is None:
            from mrfs_edge.backends.machine import machine_info

            machine = machine_info(self.api)
        check_engine_compatible(self.sidecar, *machine)
        self.use_cuda_graph = use_cuda_graph
        self._memory_factory = memory_factory
        self._memory: CudaMemory | None = None
        # TensorRT requires the runtime to outlive its engine, and the engine its context.
        self._runtime: tensorrt.Runtime | None = None
        self._engine: tensorrt.ICudaEngine | None = None
        self._context: tensorrt.IExecutionContext | None = None
        self._bindings: dict[str, _Binding] = {}
        self._inputs: list[str] = []
        self._outputs: list[str] = []
        self._graphs: dict[tuple[tuple[int, ...], ...], Any] = {}
        super().__init__(self.sidecar.contract, f"tensorrt:{self.path.name}")
        self.device = machine.gpu_name

    def shape_range(self, name: str) -> tuple[list[int], list[int]]:
        """Smallest and largest shape the engine accepts for input ``name``."""
        if self.sidecar.profiles:
            low, _, high = self.sidecar.profiles[0][name]
            return list(low), list(high)
        shape = list(self.sidecar.input_shapes[name])
        return shape, shape

    def _activate(self) -> None:
        data = self.path.read_bytes()
        check_engine_bytes(self.sidecar, self.path, hashlib.sha256(data).hexdigest())
        self._memory = memory = self._memory_factory()
        try:
            self._runtime = runtime = self.api.create_runtime(self.sidecar.dla_core)
            engine = runtime.deserialize_cuda_engine(data)
            if engine is None:
                raise ModelFileError(f"{self.path}: TensorRT {self.api.version_text} cannot deserialize it "
                                     f"(its log above says why); rebuild it with: {self.sidecar.rebuild_hint()}")
            self._engine, self._context = engine, engine.create_execution_context()
            self._allocate(engine, self._context, memory)
        except BaseException:
            self._deactivate()
            raise

    def _allocate(self, engine: tensorrt.ICudaEngine, context: tensorrt.IExecutionContext,
                  memory: CudaMemory) -> None:
        """Buffers at the profile's maximum shapes; outputs sized by TensorRT's shape inference."""
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if self.api.is_input(engine, n)]
        outputs = [n for n in names if n not in inputs]
        if sorted(inputs) != sorted(self.contract.input_names) or sorted(outputs) != sorted(self.contract.output_names):
            raise ModelFileError(f"{self.path}: engine I/O {inputs} → {outputs} differs from its contract")
        for name in inputs:
            self._checked_shape(context, name, tuple(self.shape_range(name)[1]))
        for name in names:
            shape = dims(context.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise ModelFileError(f"{self.path}: tensor {name} has a data-dependent shape {shape}")
            dtype = self.api.numpy_dtype(engine, name)
            nbytes = max(int(np.prod(shape)) * dtype.itemsize, 1)
            binding = _Binding(dtype, memory.alloc(nbytes), memory.pinned(nbytes), shape)
            self._bindings[name] = binding
            if not context.set_tensor_address(name, binding.device):
                raise ModelFileError(f"{self.path}: TensorRT refused the device address of tensor {name}")
        self._inputs = inputs
        self._outputs = outputs

    def _set_shape(self, context: tensorrt.IExecutionContext, name: str, shape: tuple[int, ...]) -> None:
        binding = self._bindings[name]
        if shape == binding.shape:
            return
        low, high = self.shape_range(name)
        if len(shape) != len(low) or any(not lo <= d <= hi for d, lo, hi in zip(shape, low, high)):
            raise ModelFileError(f"{self.path}: input {name} of shape {list(shape)} is outside the engine's "
                                 f"range {low}..{high}; rebuild it with a wider profile")
        self._checked_shape(context, name, shape)
        binding.shape = shape

    def _checked_shape(self, context: tensorrt.IExecutionContext, name: str, shape: tuple[int, ...]) -> None:
        if not context.set_input_shape(name, shape):
            raise ModelFileError(f"{self.path}: TensorRT refused shape {list(shape)} for input {name} "
                                 f"(engine range {self.shape_range(name)[0]}..{self.shape_range(name)[1]})")

    def describe(self) -> str:
        """What the engine really runs: precision built, per-layer counts (INT8/FP16/FP32, DLA)."""
        built = self.sidecar.precision_built or self.sidecar.precision
        return f"{self.path.name}: {built} engine, {self.sidecar.layer_summary()}"

    @property
    def layer_report(self) -> dict[str, Any] | None:
        """The engine inspector's per-layer report stored by the build (sidecar ``layers``)."""
        return self.sidecar.layers

    def _infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        memory, context = self._memory, self._context
        assert memory is not None and context is not None
        for name in self._inputs:
            array = np.asarray(feed[name])
            self._set_shape(context, name, array.shape)
            binding = self._bindings[name]
            host = binding.view(array.shape)
            host[...] = array   # casts to the engine's dtype and lands in pinned memory
            memory.htod_async(binding.device, host)
        self._execute(context, memory)
        results = {}
        for name in self._outputs:
            binding = self._bindings[name]
            binding.shape = dims(context.get_tensor_shape(name))
            host = binding.view(binding.shape)
            memory.dtoh_async(host, binding.device)
            results[name] = host
        memory.synchronize()
        return {name: array.copy() for name, array in results.items()}

    def _execute(self, context: tensorrt.IExecutionContext, memory: CudaMemory) -> None:
        def enqueue() -> None:
            if not context.execute_async_v3(memory.stream_handle):
                raise ModelFileError(f"{self.path}: TensorRT failed to enqueue the engine")

        if not self.use_cuda_graph:
            enqueue()
            return
        key = tuple(self._bindings[name].shape for name in self._inputs)
        graph = self._graphs.get(key)
        if graph is None:
            enqueue()   # TensorRT must run once at a new shape before its launch can be captured
            graph = self._graphs[key] = memory.capture_graph(enqueue)
            return
        memory.launch_graph(graph)

    def _deactivate(self) -> None:
        self._graphs, self._bindings = {}, {}
        # TensorRT objects go before the memory they point into, in reverse order of creation.
        self._context = None
        self._engine = None
        self._runtime = None
        if self._memory is not None:
            self._memory.close()
            self._memory = None
