"""Test doubles for the TensorRT Python API and the CUDA memory layer, plus a tiny ONNX model.

``fake_tensorrt(version, **knobs)`` is the generated double of ``tests/doubles/tensorrt`` for the
release ``version`` belongs to (8.5.2, 8.6.1, 10.3.0, 10.13.0, 10.16, 11.0, 11.1): its surface is
read from the API specs, so code under test meets exactly that release's members. What it
records (builders, runtimes, contexts) is under the private ``trt._record``; ``flag_names``
reads a config's flags by name.

:class:`FakeCudaMemory` hands out real host addresses as "device" pointers, so the double's
engines read and write them with ctypes as they do with the fake libcudart.
"""
from __future__ import annotations

import ctypes
import importlib.util
import itertools
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np
import onnx
from onnx import TensorProto, helper

from mrfs_edge.backends.cuda_memory import CudaMemory
from mrfs_edge.core.contract import ModelContract

DOUBLES = Path(__file__).resolve().parent / "doubles"
RELEASES = ("8.5.2", "8.6.1", "10.3.0", "10.13.0", "10.16", "11.0", "11.1")


def _double_package() -> Any:
    """tests/doubles/tensorrt imported under a private name (the real ``tensorrt`` may be installed)."""
    name = "_mrfs_trt_double"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, DOUBLES / "tensorrt" / "__init__.py",
                                                      submodule_search_locations=[str(DOUBLES / "tensorrt")])
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def release_of(version: str) -> str:
    """"8.6.2" -> "8.6.1", "10.3.0.30" -> "10.3.0", "11.0.0" -> "11.0": the spec that release has."""
    parts = [int(p) for p in version.split(".")[:2]]
    best = [r for r in RELEASES if [int(p) for p in r.split(".")[:2]] == parts]
    if not best:
        raise ValueError(f"no TensorRT API spec for {version}")
    return best[0]


def fake_tensorrt(version: str = "10.3.0", **knobs: Any) -> Any:
    """The double of ``version``'s release; knobs: dla_cores, fail_build, device_name,
    ignore_fp32_pins (layer-name prefixes whose pins the builder drops)."""
    knobs.setdefault("readable", FakeCudaMemory.readable)
    knobs.setdefault("on_enqueue", FakeCudaMemory.enqueue)
    return _double_package()._load(release_of(version), **knobs)


def flag_names(trt: Any, config: Any) -> set:
    return {name for name in trt.BuilderFlag.__members__ if config.get_flag(getattr(trt.BuilderFlag, name))}


# ---------------------------------------------------------------------------------- CUDA
class FakeCudaMemory(CudaMemory):
    """Host memory posing as device memory: pointers are real host addresses (ctypes buffers)."""

    buffers: dict = {}        # address -> ctypes buffer (all live allocations, any instance)
    streams: dict = {}
    _streams = itertools.count(0x1000, 0x1000)

    def __init__(self) -> None:
        self._stream = next(self._streams)
        FakeCudaMemory.streams[self._stream] = self
        self.capturing: list | None = None
        self.owned: set = set()
        self.graph_launches = 0
        self.closed = False
        self.htod_count = 0

    @property
    def stream_handle(self) -> int:
        return self._stream

    def alloc(self, nbytes: int) -> int:
        buffer = ctypes.create_string_buffer(max(int(nbytes), 1))
        address = ctypes.addressof(buffer)
        self.buffers[address] = buffer
        self.owned.add(address)
        return address

    def free(self, ptr: int) -> None:
        self.owned.remove(ptr)
        del self.buffers[ptr]

    def pinned(self, nbytes: int) -> np.ndarray:
        return np.zeros(nbytes, np.uint8)

    def htod_async(self, dst: int, src: np.ndarray) -> None:
        self.htod_count += 1
        data = np.ascontiguousarray(src).tobytes()
        assert self.readable(dst, len(data)), "htod past the device buffer"
        ctypes.memmove(dst, data, len(data))

    def dtoh_async(self, dst: np.ndarray, src: int) -> None:
        assert self.readable(src, dst.nbytes), "dtoh past the device buffer"
        dst.reshape(-1).view(np.uint8)[:] = np.frombuffer(ctypes.string_at(src, dst.nbytes), np.uint8)

    def synchronize(self) -> None:
        pass

    def capture_graph(self, work: Callable[[], None]) -> list:
        self.capturing = []
        try:
            work()
        finally:
            graph, self.capturing = self.capturing, None
        return graph

    def launch_graph(self, graph: list) -> None:
        self.graph_launches += 1
        for step in graph:
            step()

    def close(self) -> None:
        for address in list(self.owned):
            self.free(address)
        self.closed = True

    @classmethod
    def readable(cls, address: int, nbytes: int) -> bool:
        """Whether [address, address+nbytes) lies inside one live allocation."""
        for start, buffer in cls.buffers.items():
            if start <= address and address + nbytes <= start + ctypes.sizeof(buffer):
                return True
        return False

    @classmethod
    def enqueue(cls, stream: int, work: Callable[[], bool]) -> bool:
        memory = cls.streams.get(stream)
        if memory is not None and memory.capturing is not None:
            memory.capturing.append(work)
            return True
        return work()


# ---------------------------------------------------------------------------------- ONNX
def tiny_contract(dynamic: bool = False, **overrides: Any) -> ModelContract:
    values: dict[str, Any] = dict(backbone="tiny", num_classes=3, decoder_embed_dim=8, height=32, width=64,
                                  fp32_nodes=["/head/Conv"])
    if dynamic:
        values["dynamic"] = {"batch": [1, 2, 4], "height": [32, 64, 128], "width": [32, 64, 128]}
    values.update(overrides)
    return ModelContract(**values)


def make_tiny_onnx(path: Path, contract: ModelContract, layernorm: str = "decomposed",
                   qdq: bool = False, fp16: bool = False) -> Path:
    """visible+infrared → 1×1 conv → LayerNorm over channels → seg_logits; sigmoid conv → fused.

    ``layernorm``: "decomposed" (ReduceMean/Sub/Pow/ReduceMean/Add/Sqrt/Div, parses on 8.5) or
    "fused" (one LayerNormalization node, 8.6+). ``qdq`` quantises the concatenated input.
    ``fp16`` casts the concatenated input to FP16 and back, as an FP16 graph carries its types.
    """
    n, h, w = ("N", "H", "W") if contract.dynamic else (contract.batch, contract.height, contract.width)
    c = contract.num_classes
    rng = np.random.default_rng(0)

    def const(name: str, array: np.ndarray) -> onnx.TensorProto:
        return helper.make_tensor(name, TensorProto.FLOAT, array.shape, array.astype(np.float32).ravel())

    inits = [const("head_w", rng.normal(size=(c, 4, 1, 1))), const("head_b", rng.normal(size=c)),
             const("fuse_w", rng.normal(size=(3, 4, 1, 1))), const("two", np.array(2.0)),
             const("eps", np.array(1e-5)), const("gamma", np.ones((1, c, 1, 1))),
             const("beta", np.zeros((1, c, 1, 1)))]
    nodes = [helper.make_node("Concat", ["visible", "infrared"], ["x4"], name="/fuse/Concat", axis=1)]
    x = "x4"
    if qdq:
        inits += [const("q_scale", np.array(0.02)),
                  helper.make_tensor("q_zero", TensorProto.INT8, (), [0])]
        nodes += [helper.make_node("QuantizeLinear", ["x4", "q_scale", "q_zero"], ["x4_q"], name="/q/Quantize"),
                  helper.make_node("DequantizeLinear", ["x4_q", "q_scale", "q_zero"], ["x4_dq"], name="/q/Dequantize")]
        x = "x4_dq"
    if fp16:
        nodes += [helper.make_node("Cast", [x], ["x4_h"], name="/fp16/Cast", to=TensorProto.FLOAT16),
                  helper.make_node("Cast", ["x4_h"], ["x4_f"], name="/fp16/Cast_1", to=TensorProto.FLOAT)]
        x = "x4_f"
    nodes.append(helper.make_node("Conv", [x, "head_w", "head_b"], ["pre"], name="/head/Conv"))
    if layernorm == "fused":
        inits += [const("ln_scale", np.ones(c)), const("ln_bias", np.zeros(c))]
        nodes += [helper.make_node("Transpose", ["pre"], ["pre_t"], name="/norm/Transpose", perm=[0, 2, 3, 1]),
                  helper.make_node("LayerNormalization", ["pre_t", "ln_scale", "ln_bias"], ["norm_t"],
                                   name="/norm/LayerNormalization", axis=-1, epsilon=1e-5),
                  helper.make_node("Transpose", ["norm_t"], ["normed"], name="/norm/Transpose_1", perm=[0, 3, 1, 2])]
    else:
        nodes += [helper.make_node("ReduceMean", ["pre"], ["mu"], name="/norm/ReduceMean", axes=[1], keepdims=1),
                  helper.make_node("Sub", ["pre", "mu"], ["d"], name="/norm/Sub"),
                  helper.make_node("Pow", ["d", "two"], ["sq"], name="/norm/Pow"),
                  helper.make_node("ReduceMean", ["sq"], ["var"], name="/norm/ReduceMean_1", axes=[1], keepdims=1),
                  helper.make_node("Add", ["var", "eps"], ["ve"], name="/norm/Add"),
                  helper.make_node("Sqrt", ["ve"], ["sd"], name="/norm/Sqrt"),
                  helper.make_node("Div", ["d", "sd"], ["normed"], name="/norm/Div")]
    nodes += [helper.make_node("Mul", ["normed", "gamma"], ["scaled"], name="/norm/Mul"),
              helper.make_node("Add", ["scaled", "beta"], [contract.seg_name], name="/norm/Add_1"),
              helper.make_node("Conv", [x, "fuse_w"], ["fuse_pre"], name="/fuse/Conv"),
              helper.make_node("Sigmoid", ["fuse_pre"], ["fused"], name="/fuse/Sigmoid")]
    graph = helper.make_graph(
        nodes, "tiny_mrfs",
        [helper.make_tensor_value_info("visible", TensorProto.FLOAT, [n, 3, h, w]),
         helper.make_tensor_value_info("infrared", TensorProto.FLOAT, [n, 1, h, w])],
        [helper.make_tensor_value_info(contract.seg_name, TensorProto.FLOAT, [n, c, h, w]),
         helper.make_tensor_value_info("fused", TensorProto.FLOAT, [n, 3, h, w])],
        inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    helper.set_model_props(model, contract.metadata())
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def random_pair(batch: int, height: int, width: int, seed: int = 0) -> dict[str, np.ndarray]:
    """A feed dict of random float NCHW visible and infrared frames."""
    rng = np.random.default_rng(seed)
    return {"visible": rng.random((batch, 3, height, width), np.float32),
            "infrared": rng.random((batch, 1, height, width), np.float32)}


def onnx_runtime_outputs(onnx_path: Path, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The reference: the same ONNX on ONNX Runtime's CPU provider, outputs by name."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feed)))
