"""Test doubles for the TensorRT Python API and the CUDA memory layer, plus a tiny ONNX model.

``fake_tensorrt(version)`` returns a module-like object shaped like that TensorRT release:
8.5 (no NORMALIZATION layer, parser errors without node names), 8.6, 10.x (STRONGLY_TYPED,
node names) or 11 (no EXPLICIT_BATCH, no FP16/INT8/OBEY flags, no calibrators). Its objects
record what the code under test does (flags, pools, pins, profiles, DLA, caches), and they use
``__slots__`` so setting an attribute TensorRT does not have (``max_workspace_size``) fails.

The fake parser turns each ONNX node into one layer named after it, as TensorRT's parser does.
The fake builder runs an attached calibrator the way TensorRT does (cache first, then batches)
and serialises the network I/O and the ONNX into the "engine"; the fake runtime executes it
with ONNX Runtime, reading and writing :class:`FakeCudaMemory` buffers by address, so runner
tests check real numbers moving through device pointers.
"""
from __future__ import annotations

import base64
import itertools
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

import numpy as np
import onnx
from onnx import TensorProto, helper

from mrfs_edge.backends.cuda_memory import CudaMemory
from mrfs_edge.contract import ModelContract


# ---------------------------------------------------------------------------------- enums
class Member:
    def __init__(self, owner: str, name: str, value: int) -> None:
        self.owner, self.name, self.value = owner, name, value

    def __int__(self) -> int:
        return self.value

    __index__ = __int__

    def __repr__(self) -> str:
        return f"{self.owner}.{self.name}"


def enum(owner: str, names: list[str]) -> SimpleNamespace:
    return SimpleNamespace(**{name: Member(owner, name, i) for i, name in enumerate(names)})


# ---------------------------------------------------------------------------------- network
class FakeTensor:
    __slots__ = ("name", "dtype", "shape", "symbols")

    def __init__(self, name: str, dtype: Member, shape: tuple[int, ...], symbols: tuple[Any, ...] = ()) -> None:
        self.name, self.dtype, self.shape, self.symbols = name, dtype, shape, symbols


class FakeLayer:
    __slots__ = ("name", "type", "op", "_inputs", "_outputs", "_precision", "output_types")

    def __init__(self, name: str, type_: Member, op: str, inputs: list[FakeTensor | None],
                 outputs: list[FakeTensor]) -> None:
        self.name, self.type, self.op = name, type_, op
        self._inputs, self._outputs = inputs, outputs
        self._precision: Member | None = None
        self.output_types: dict[int, Member] = {}

    @property
    def num_inputs(self) -> int:
        return len(self._inputs)

    @property
    def num_outputs(self) -> int:
        return len(self._outputs)

    def get_input(self, i: int) -> FakeTensor | None:
        return self._inputs[i]

    def get_output(self, i: int) -> FakeTensor:
        return self._outputs[i]

    @property
    def precision(self) -> Member | None:
        return self._precision

    @precision.setter
    def precision(self, value: Member) -> None:
        self._precision = value

    def set_output_type(self, index: int, dtype: Member) -> None:
        self.output_types[index] = dtype


class FakeNetwork:
    __slots__ = ("flags", "layers", "inputs", "outputs", "onnx_bytes")

    def __init__(self, flags: int) -> None:
        self.flags = flags
        self.layers: list[FakeLayer] = []
        self.inputs: list[FakeTensor] = []
        self.outputs: list[FakeTensor] = []
        self.onnx_bytes = b""

    num_layers = property(lambda self: len(self.layers))
    num_inputs = property(lambda self: len(self.inputs))
    num_outputs = property(lambda self: len(self.outputs))

    def get_layer(self, i: int) -> FakeLayer:
        return self.layers[i]

    def get_input(self, i: int) -> FakeTensor:
        return self.inputs[i]

    def get_output(self, i: int) -> FakeTensor:
        return self.outputs[i]


class FakeParserError:
    def __init__(self, node: int, name: str, op: str, desc: str, with_names: bool) -> None:
        self._node, self._desc = node, desc
        if with_names:   # node_name/node_operator only exist from TensorRT 10
            self.node_name = lambda: name
            self.node_operator = lambda: op

    def node(self) -> int:
        return self._node

    def desc(self) -> str:
        return self._desc


OP_LAYER = {"ReduceMean": "REDUCE", "ReduceSum": "REDUCE", "Softmax": "SOFTMAX", "Add": "ELEMENTWISE",
            "Sub": "ELEMENTWISE", "Mul": "ELEMENTWISE", "Div": "ELEMENTWISE", "Pow": "ELEMENTWISE",
            "Sqrt": "UNARY", "Exp": "UNARY", "Sigmoid": "ACTIVATION", "Conv": "CONVOLUTION",
            "Concat": "CONCATENATION", "QuantizeLinear": "QUANTIZE", "DequantizeLinear": "DEQUANTIZE",
            "LayerNormalization": "NORMALIZATION", "Shape": "SHAPE", "Cast": "CAST"}


class FakeParser:
    def __init__(self, trt: SimpleNamespace, network: FakeNetwork, logger: Any) -> None:
        self.trt, self.network, self.errors = trt, network, []

    @property
    def num_errors(self) -> int:
        return len(self.errors)

    def get_error(self, i: int) -> FakeParserError:
        return self.errors[i]

    def parse_from_file(self, path: str) -> bool:
        model = onnx.load(path)
        trt, network = self.trt, self.network
        network.onnx_bytes = Path(path).read_bytes()
        tensors: dict[str, FakeTensor] = {}
        for value in model.graph.input:
            tensor = _tensor_from_value(trt, value)
            tensors[value.name] = tensor
            network.inputs.append(tensor)
        for index, node in enumerate(model.graph.node):
            kind = OP_LAYER.get(node.op_type, "IDENTITY")
            if not hasattr(trt.LayerType, kind):
                self.errors.append(FakeParserError(index, node.name, node.op_type,
                                                   f"No importer registered for op: {node.op_type}",
                                                   trt.version_tuple[0] >= 10))
                return False
            dtype = trt.int32 if node.op_type == "Shape" else trt.float32
            outputs = [tensors.setdefault(o, FakeTensor(o, dtype, ())) for o in node.output]
            inputs = [tensors.get(i) for i in node.input]
            network.layers.append(FakeLayer(node.name, getattr(trt.LayerType, kind), node.op_type, inputs, outputs))
        network.outputs = [_tensor_from_value(trt, v) for v in model.graph.output]
        return True


def _tensor_from_value(trt: SimpleNamespace, value: onnx.ValueInfoProto) -> FakeTensor:
    dims = value.type.tensor_type.shape.dim
    shape = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in dims)
    symbols = tuple(d.dim_param or d.dim_value for d in dims)
    dtype = trt.int32 if value.type.tensor_type.elem_type == TensorProto.INT32 else trt.float32
    return FakeTensor(value.name, dtype, shape, symbols)


# ---------------------------------------------------------------------------------- builder
class FakeProfile:
    __slots__ = ("shapes",)

    def __init__(self) -> None:
        self.shapes: dict[str, tuple[tuple[int, ...], ...]] = {}

    def set_shape(self, name: str, low: Any, opt: Any, high: Any) -> None:
        self.shapes[name] = (tuple(low), tuple(opt), tuple(high))


class FakeTimingCache:
    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def serialize(self) -> bytes:
        return self.data + b"|tactics"


class FakeConfig:
    __slots__ = ("flags", "pools", "profiles", "calibration_profile", "int8_calibrator", "default_device_type",
                 "DLA_core", "timing_cache", "ignore_mismatch")

    def __init__(self) -> None:
        self.flags: set[str] = set()
        self.pools: dict[str, int] = {}
        self.profiles: list[FakeProfile] = []
        self.calibration_profile: FakeProfile | None = None
        self.int8_calibrator: Any = None
        self.default_device_type: Any = None
        self.DLA_core = -1
        self.timing_cache: FakeTimingCache | None = None
        self.ignore_mismatch: bool | None = None

    def set_flag(self, flag: Member) -> None:
        self.flags.add(flag.name)

    def set_memory_pool_limit(self, pool: Member, size: int) -> None:
        self.pools[pool.name] = size

    def add_optimization_profile(self, profile: FakeProfile) -> int:
        self.profiles.append(profile)
        return len(self.profiles) - 1

    def set_calibration_profile(self, profile: FakeProfile) -> bool:
        self.calibration_profile = profile
        return True

    def create_timing_cache(self, data: bytes) -> FakeTimingCache:
        return FakeTimingCache(bytes(data))

    def set_timing_cache(self, cache: FakeTimingCache, ignore_mismatch: bool) -> bool:
        self.timing_cache, self.ignore_mismatch = cache, ignore_mismatch
        return True

    def get_timing_cache(self) -> FakeTimingCache | None:
        return self.timing_cache


class FakeBuilder:
    __slots__ = ("trt", "network", "config", "num_DLA_cores", "fail")

    def __init__(self, trt: SimpleNamespace, logger: Any) -> None:
        self.trt = trt
        self.num_DLA_cores = trt.dla_cores
        self.fail = trt.fail_build
        trt.builders.append(self)

    def create_network(self, flags: int = 0) -> FakeNetwork:
        self.network = FakeNetwork(flags)
        return self.network

    def create_builder_config(self) -> FakeConfig:
        self.config = FakeConfig()
        return self.config

    def create_optimization_profile(self) -> FakeProfile:
        return FakeProfile()

    def build_serialized_network(self, network: FakeNetwork, config: FakeConfig) -> bytes | None:
        if config.int8_calibrator is not None:
            _calibrate(config.int8_calibrator, [t.name for t in network.inputs])
        if self.fail:
            return None
        io = {"inputs": {t.name: _io_spec(t) for t in network.inputs},
              "outputs": {t.name: _io_spec(t) for t in network.outputs},
              "onnx": base64.b64encode(network.onnx_bytes).decode()}
        return b"FAKEPLAN" + json.dumps(io).encode()


def _io_spec(tensor: FakeTensor) -> dict[str, Any]:
    return {"dtype": tensor.dtype.name, "symbols": list(tensor.symbols)}


def _calibrate(calibrator: Any, names: list[str]) -> None:
    """TensorRT's order: a valid cache skips the data; otherwise batches until None, then write."""
    if calibrator.read_calibration_cache():
        return
    while calibrator.get_batch(names) is not None:
        pass
    calibrator.write_calibration_cache(b"TRT-8601-EntropyCalibration2\nfake scales\n")


# ---------------------------------------------------------------------------------- runtime
class FakeEngine:
    def __init__(self, trt: SimpleNamespace, spec: dict[str, Any]) -> None:
        self.trt, self.spec = trt, spec
        self.names = list(spec["inputs"]) + list(spec["outputs"])

    @property
    def num_io_tensors(self) -> int:
        return len(self.names)

    def get_tensor_name(self, i: int) -> str:
        return self.names[i]

    def get_tensor_mode(self, name: str) -> Member:
        return self.trt.TensorIOMode.INPUT if name in self.spec["inputs"] else self.trt.TensorIOMode.OUTPUT

    def get_tensor_dtype(self, name: str) -> Member:
        spec = self.spec["inputs"].get(name) or self.spec["outputs"][name]
        return getattr(self.trt.DataType, spec["dtype"])

    def create_execution_context(self) -> "FakeContext":
        return FakeContext(self)


class FakeContext:
    def __init__(self, engine: FakeEngine) -> None:
        self.engine = engine
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.addresses: dict[str, int] = {}
        self.executions = 0
        self.shape_calls: list[tuple[str, tuple[int, ...]]] = []
        self._session: Any = None

    def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
        self.shapes[name] = tuple(shape)
        self.shape_calls.append((name, tuple(shape)))
        return True

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        if name in self.engine.spec["inputs"]:
            return self.shapes[name]
        sizes = {}
        for input_name, spec in self.engine.spec["inputs"].items():
            for symbol, size in zip(spec["symbols"], self.shapes[input_name]):
                sizes[symbol] = size
        return tuple(s if isinstance(s, int) and s > 0 else sizes[s] for s in self.engine.spec["outputs"][name]["symbols"])

    def set_tensor_address(self, name: str, address: int) -> bool:
        self.addresses[name] = address
        return True

    def execute_async_v3(self, stream_handle: int) -> bool:
        memory = FakeCudaMemory.streams[stream_handle]
        if memory.capturing is not None:
            memory.capturing.append(self._run)
        else:
            self._run()
        return True

    def _run(self) -> None:
        import onnxruntime as ort

        self.executions += 1
        if self._session is None:
            self._session = ort.InferenceSession(base64.b64decode(self.engine.spec["onnx"]),
                                                 providers=["CPUExecutionProvider"])
        feed = {}
        for name in self.engine.spec["inputs"]:
            dtype = np.dtype(self.engine.trt.nptype(self.engine.get_tensor_dtype(name)))
            feed[name] = FakeCudaMemory.read(self.addresses[name], self.shapes[name], dtype)
        outputs = self._session.run(list(self.engine.spec["outputs"]), feed)
        for name, value in zip(self.engine.spec["outputs"], outputs):
            FakeCudaMemory.write(self.addresses[name], value)


class FakeRuntime:
    __slots__ = ("trt", "DLA_core")

    def __init__(self, trt: SimpleNamespace, logger: Any) -> None:
        self.trt, self.DLA_core = trt, -1
        trt.runtimes.append(self)

    def deserialize_cuda_engine(self, data: bytes) -> FakeEngine | None:
        if not data.startswith(b"FAKEPLAN"):
            return None
        return FakeEngine(self.trt, json.loads(data[len(b"FAKEPLAN"):]))


# ---------------------------------------------------------------------------------- module
def fake_tensorrt(version: str = "10.3.0", dla_cores: int = 0, fail_build: bool = False) -> SimpleNamespace:
    """A module-like double of the TensorRT Python API of ``version``'s release."""
    major, minor = (int(p) for p in version.split(".")[:2])
    trt = SimpleNamespace(__version__=version, version_tuple=(major, minor), dla_cores=dla_cores,
                          fail_build=fail_build, builders=[], runtimes=[])
    trt.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda self, severity=2: None})
    creation = (["EXPLICIT_BATCH"] if major < 11 else []) + (["STRONGLY_TYPED"] if major >= 10 else [])
    trt.NetworkDefinitionCreationFlag = enum("NetworkDefinitionCreationFlag", creation)
    flags = ["GPU_FALLBACK", "TF32"] + (["FP16", "INT8", "OBEY_PRECISION_CONSTRAINTS"] if major < 11 else [])
    trt.BuilderFlag = enum("BuilderFlag", flags)
    trt.MemoryPoolType = enum("MemoryPoolType", ["WORKSPACE", "DLA_MANAGED_SRAM"])
    trt.DeviceType = enum("DeviceType", ["GPU", "DLA"])
    trt.TensorIOMode = enum("TensorIOMode", ["NONE", "INPUT", "OUTPUT"])
    layer_types = sorted(set(OP_LAYER.values()) | {"IDENTITY"})
    if (major, minor) < (8, 6):
        layer_types.remove("NORMALIZATION")
    trt.LayerType = enum("LayerType", layer_types)
    data_types = enum("DataType", ["FLOAT", "HALF", "INT8", "INT32", "BOOL", "UINT8"])
    trt.DataType = data_types
    trt.float32, trt.float16, trt.int8, trt.int32 = data_types.FLOAT, data_types.HALF, data_types.INT8, data_types.INT32
    numpy_types = {"FLOAT": np.float32, "HALF": np.float16, "INT8": np.int8, "INT32": np.int32}
    trt.nptype = lambda dtype: numpy_types[dtype.name]
    trt.Dims = lambda shape: tuple(shape)
    trt.Builder = lambda logger: FakeBuilder(trt, logger)
    trt.OnnxParser = lambda network, logger: FakeParser(trt, network, logger)
    trt.Runtime = lambda logger: FakeRuntime(trt, logger)
    if major < 11:
        trt.IInt8EntropyCalibrator2 = type("IInt8EntropyCalibrator2", (), {})
        trt.IInt8MinMaxCalibrator = type("IInt8MinMaxCalibrator", (), {})
    return trt


# ---------------------------------------------------------------------------------- CUDA
class FakeCudaMemory(CudaMemory):
    """Host memory posing as device memory: addresses index a shared heap the fake engine reads."""

    library = "fake"
    heap: dict[int, bytearray] = {}
    streams: dict[int, "FakeCudaMemory"] = {}
    _addresses = itertools.count(0x1000, 0x1000)

    def __init__(self) -> None:
        self._stream = next(self._addresses)
        FakeCudaMemory.streams[self._stream] = self
        self.capturing: list[Callable[[], None]] | None = None
        self.owned: set[int] = set()
        self.graph_launches = 0
        self.closed = False
        self.htod_count = 0

    @property
    def stream_handle(self) -> int:
        return self._stream

    def alloc(self, nbytes: int) -> int:
        address = next(self._addresses)
        self.heap[address] = bytearray(nbytes)
        self.owned.add(address)
        return address

    def free(self, ptr: int) -> None:
        self.owned.remove(ptr)
        del self.heap[ptr]

    def pinned(self, nbytes: int) -> np.ndarray:
        return np.zeros(nbytes, np.uint8)

    def htod_async(self, dst: int, src: np.ndarray) -> None:
        self.htod_count += 1
        data = np.ascontiguousarray(src).tobytes()
        self.heap[dst][: len(data)] = data

    def dtoh_async(self, dst: np.ndarray, src: int) -> None:
        dst.reshape(-1).view(np.uint8)[:] = np.frombuffer(bytes(self.heap[src][: dst.nbytes]), np.uint8)

    def synchronize(self) -> None:
        pass

    def capture_graph(self, work: Callable[[], None]) -> list[Callable[[], None]]:
        self.capturing = []
        try:
            work()
        finally:
            graph, self.capturing = self.capturing, None
        return graph

    def launch_graph(self, graph: list[Callable[[], None]]) -> None:
        self.graph_launches += 1
        for step in graph:
            step()

    def close(self) -> None:
        for address in list(self.owned):
            self.free(address)
        self.closed = True

    @classmethod
    def read(cls, address: int, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        count = int(np.prod(shape)) * dtype.itemsize
        return np.frombuffer(bytes(cls.heap[address][:count]), dtype).reshape(shape)

    @classmethod
    def write(cls, address: int, value: np.ndarray) -> None:
        data = np.ascontiguousarray(value).tobytes()
        cls.heap[address][: len(data)] = data


# ---------------------------------------------------------------------------------- ONNX
def tiny_contract(dynamic: bool = False, **overrides: Any) -> ModelContract:
    values: dict[str, Any] = dict(backbone="tiny", num_classes=3, decoder_embed_dim=8, height=32, width=64,
                                  fp32_nodes=["/head/Conv"])
    if dynamic:
        values["dynamic"] = {"batch": [1, 2, 4], "height": [32, 64, 128], "width": [32, 64, 128]}
    values.update(overrides)
    return ModelContract(**values)


def make_tiny_onnx(path: Path, contract: ModelContract, layernorm: str = "decomposed",
                   qdq: bool = False) -> Path:
    """visible+infrared → 1×1 conv → LayerNorm over channels → seg_logits; sigmoid conv → fused.

    ``layernorm``: "decomposed" (ReduceMean/Sub/Pow/ReduceMean/Add/Sqrt/Div, parses on 8.5) or
    "fused" (one LayerNormalization node, 8.6+). ``qdq`` quantises the concatenated input.
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
