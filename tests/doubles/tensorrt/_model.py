"""Behaviour of the TensorRT double, wrapped by a release's surface in :func:`build_module`.

What is modelled, and from where in TensorRT's documentation or sources:
* ONNX parser: one layer per ONNX node, named after it (NvOnnxParser); ParserError.node_name /
  node_operator from 10.0 (the spec's ParserError methods); 8.x parsers need an EXPLICIT_BATCH
  network ("only supports networks with an explicit batch dimension"); LayerNormalization imports
  as a NORMALIZATION layer from 8.6 and has no importer on 8.5.
* IBuilderConfig: TF32 is on by default in a new config (Developer Guide, "Reduced Precision":
  "TF32 ... is enabled by default"); precision flags and layer precision pins are errors on a
  STRONGLY_TYPED network (Developer Guide, "Strongly Typed Networks"); layer pins only bind with
  OBEY/PREFER_PRECISION_CONSTRAINTS.
* Implicit INT8: the builder reads the cache first, then calls ``get_batch(names)`` until it
  returns None, reading volume(calibration profile shape) elements from each pointer (the
  calibration profile, else the first profile's opt shape); an exception raised in ``get_batch``
  is caught by the binding, printed and treated as the end of the data (python/src/infer/pyInt8.cpp:
  "Exception caught in get_batch()").
* set_input_shape / set_tensor_address / set_timing_cache return False on refusal (the C++ bool).
  A timing cache from another device is refused unless ignore_mismatch (ITimingCache docs).
* Engine inspector: ``get_engine_information(LayerInformationFormat.JSON)`` gives
  ``{"Layers": [...], "Bindings": [...]}``; with ProfilingVerbosity.DETAILED each layer is an
  object with Name, LayerType, Inputs/Outputs ("Format/Datatype"), TacticName, and from 10.x
  Metadata ("[ONNX Layer: <node>]"); otherwise layers are bare names (Developer Guide, "Engine
  Inspector").
* Engines run with ONNX Runtime, reading inputs from and writing outputs to the tensor addresses
  as host addresses (ctypes), which is what the fake libcudart and FakeCudaMemory hand out.
"""
from __future__ import annotations

import base64
import ctypes
import json
import sys
import types
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

import numpy as np

from . import _onnx

# Knobs a test may set (``_load(release, **knobs)`` or ``module._knobs[...]``):
KNOBS: Dict[str, Any] = {
    "dla_cores": 0,                 # Builder/Runtime.num_DLA_cores
    "fail_build": False,            # build_serialized_network returns None
    "device_name": "Fake GPU",      # written into timing caches; another name = another GPU
    "ignore_fp32_pins": (),         # layer-name prefixes whose pins the builder drops (fused blocks)
    "readable": None,               # callable(address, nbytes) -> bool: is host memory there
    "on_enqueue": None,             # callable(stream, work): lets a CUDA double capture the launch
}

ONNX_TYPES = {1: "FLOAT", 10: "HALF", 3: "INT8", 6: "INT32", 7: "INT64", 9: "BOOL", 2: "UINT8", 16: "BF16"}
NUMPY = {"FLOAT": np.float32, "HALF": np.float16, "INT8": np.int8, "INT32": np.int32, "INT64": np.int64,
         "BOOL": np.bool_, "UINT8": np.uint8}
OP_LAYER = {"ReduceMean": "REDUCE", "ReduceSum": "REDUCE", "Softmax": "SOFTMAX", "Add": "ELEMENTWISE",
            "Sub": "ELEMENTWISE", "Mul": "ELEMENTWISE", "Div": "ELEMENTWISE", "Pow": "ELEMENTWISE",
            "Sqrt": "UNARY", "Exp": "UNARY", "Sigmoid": "ACTIVATION", "Relu": "ACTIVATION",
            "Conv": "CONVOLUTION", "MatMul": "MATRIX_MULTIPLY", "Concat": "CONCATENATION",
            "QuantizeLinear": "QUANTIZE", "DequantizeLinear": "DEQUANTIZE", "LayerNormalization": "NORMALIZATION",
            "Shape": "SHAPE", "Cast": "CAST", "Transpose": "SHUFFLE", "Reshape": "SHUFFLE", "Resize": "RESIZE"}
# Ops onnx-tensorrt has no importer for (its docs/operators.md lists them as unsupported).
UNSUPPORTED_OPS = {"Unique", "StringNormalizer", "TfIdfVectorizer", "Multinomial", "SequenceInsert"}
INT8_KINDS = {"CONVOLUTION", "MATRIX_MULTIPLY", "ACTIVATION", "ELEMENTWISE", "CONCATENATION"}
DLA_KINDS = {"CONVOLUTION", "ACTIVATION", "ELEMENTWISE", "CONCATENATION", "SCALE", "POOLING"}
FORMAT = {"FLOAT": "Row major linear FP32", "HALF": "Row major linear FP16 format",
          "INT8": "Row major Int8 format", "INT32": "Row major linear INT32", "INT64": "Row major linear INT64",
          "BOOL": "Row major linear BOOL"}


class Ctx:
    """One module's state: its spec, release, enums and knobs."""

    def __init__(self, spec: Dict[str, Any], version: str, knobs: Dict[str, Any]) -> None:
        self.spec, self.version = spec, version
        self.major = int(version.split(".")[0])
        self.knobs = dict(KNOBS, **knobs)
        self.module: Any = None
        # What tests inspect afterwards (private: not TensorRT API): builders, runtimes, contexts.
        self.record: Dict[str, List[Any]] = {"builders": [], "runtimes": [], "contexts": []}

    def enum(self, name: str) -> Any:
        return getattr(self.module, name)

    def has(self, enum: str, member: str) -> bool:
        return member in self.spec["enums"].get(enum, [])

    def log(self, severity: str, message: str) -> None:
        print(f"[TRT double] [{severity}] {message}", file=sys.stderr)


# ------------------------------------------------------------------------------- surface
def _members(spec: Dict[str, Any], name: str) -> Set[str]:
    entry = spec["classes"].get(name, {})
    found = set(entry.get("methods", [])) | set(entry.get("properties", [])) | set(entry.get("attributes", []))
    found |= set(entry.get("nested", []))
    for base in entry.get("bases", []):
        found |= _members(spec, base)
    return found


def _not_modelled(cls: str, member: str, kind: str) -> Any:
    def fail(*_: Any, **__: Any) -> Any:
        raise NotImplementedError(f"TensorRT double: {cls}.{member} exists in this release but is not modelled")
    return property(fail, fail) if kind == "property" else fail


class Surface:
    """Public attributes outside the release's spec raise AttributeError, as pybind11 objects do."""

    _allowed: frozenset = frozenset()

    def __getattribute__(self, name: str) -> Any:
        if not name.startswith("_") and name not in type(self)._allowed:
            raise AttributeError(f"'tensorrt.{type(self).__name__}' object has no attribute '{name}'")
        return object.__getattribute__(self, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if not name.startswith("_") and name not in type(self)._allowed:
            raise AttributeError(f"'tensorrt.{type(self).__name__}' object has no attribute '{name}'")
        object.__setattr__(self, name, value)


def surface_class(ctx: Ctx, name: str, impl: type, strict: bool = True) -> type:
    """``impl`` under the spec's name, its unmodelled spec members raising NotImplementedError."""
    allowed = _members(ctx.spec, name)
    entry = ctx.spec["classes"][name]
    props = set(entry.get("properties", []))
    namespace: Dict[str, Any] = {"_allowed": frozenset(allowed), "_ctx": ctx, "__module__": "tensorrt"}
    for member in allowed:
        if member.startswith("__") or hasattr(impl, member):
            continue
        namespace[member] = _not_modelled(name, member, "property" if member in props else "method")
    bases = (impl, Surface) if strict else (impl,)
    return type(name, bases, namespace)


class EnumMember:
    def __init__(self, owner: str, name: str, value: int) -> None:
        self.owner, self.name, self.value = owner, name, value

    def __int__(self) -> int:
        return self.value

    __index__ = __int__

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, EnumMember) and (other.owner, other.value) == (self.owner, self.value)

    def __hash__(self) -> int:
        return hash((self.owner, self.value))

    def __repr__(self) -> str:
        return f"<{self.owner}.{self.name}: {self.value}>"


def make_enum(name: str, members: List[str]) -> type:
    values = {m: EnumMember(name, m, i) for i, m in enumerate(members)}
    return type(name.split(".")[-1], (), dict(values, __members__=values, __module__="tensorrt"))


# ------------------------------------------------------------------------------- network
class Dims:
    def __init__(self, shape: Any = ()) -> None:
        self._shape = tuple(int(d) for d in shape)

    def __getitem__(self, i: int) -> int:
        return self._shape[i]

    def __len__(self) -> int:
        return len(self._shape)

    def __iter__(self) -> Any:
        return iter(self._shape)

    def __eq__(self, other: Any) -> bool:
        return tuple(self) == tuple(other)

    def __repr__(self) -> str:
        return f"{self._shape}"


class Tensor:
    def __init__(self, name: str, dtype: Any, shape: Tuple[int, ...], symbols: List[Any]) -> None:
        self._name, self._dtype, self._shape, self._symbols = name, dtype, shape, symbols

    name = property(lambda self: self._name)
    dtype = property(lambda self: self._dtype)
    shape = property(lambda self: self._ctx.module.Dims(self._shape))


class Layer:
    def __init__(self, name: str, kind: Any, op: str, inputs: List[Any], outputs: List[Any]) -> None:
        self._name, self._kind, self._op, self._in, self._out = name, kind, op, inputs, outputs
        self._precision: Any = None
        self._output_types: Dict[int, Any] = {}

    name = property(lambda self: self._name)
    type = property(lambda self: self._kind)
    num_inputs = property(lambda self: len(self._in))
    num_outputs = property(lambda self: len(self._out))
    metadata = property(lambda self: f"[ONNX Layer: {self._name}]")

    def get_input(self, i: int) -> Any:
        return self._in[i]

    def get_output(self, i: int) -> Any:
        return self._out[i]

    @property
    def precision(self) -> Any:
        return self._precision if self._precision is not None else self._ctx.module.float32

    @precision.setter
    def precision(self, value: Any) -> None:
        self._precision = value

    precision_is_set = property(lambda self: self._precision is not None)

    def set_output_type(self, index: int, dtype: Any) -> None:
        self._output_types[index] = dtype

    def get_output_type(self, index: int) -> Any:
        return self._output_types.get(index, self._out[index].dtype)

    def output_type_is_set(self, index: int) -> bool:
        return index in self._output_types


class Network:
    def __init__(self, flags: int) -> None:
        self._flags = flags
        self._layers: List[Any] = []
        self._inputs: List[Any] = []
        self._outputs: List[Any] = []
        self._onnx = b""

    flags = property(lambda self: self._flags)
    num_layers = property(lambda self: len(self._layers))
    num_inputs = property(lambda self: len(self._inputs))
    num_outputs = property(lambda self: len(self._outputs))

    @property
    def has_implicit_batch_dimension(self) -> bool:
        ctx = self._ctx
        return ctx.major < 10 and not self._flags & (1 << int(ctx.module.NetworkDefinitionCreationFlag.EXPLICIT_BATCH))

    def _strongly_typed(self) -> bool:
        ctx = self._ctx
        return ctx.has("NetworkDefinitionCreationFlag", "STRONGLY_TYPED") and bool(
            self._flags & (1 << int(ctx.module.NetworkDefinitionCreationFlag.STRONGLY_TYPED)))

    def get_layer(self, i: int) -> Any:
        return self._layers[i]

    def get_input(self, i: int) -> Any:
        return self._inputs[i]

    def get_output(self, i: int) -> Any:
        return self._outputs[i]


class ParserError:
    def __init__(self, node: int, name: str, op: str, desc: str) -> None:
        self._node, self._node_name, self._op, self._desc = node, name, op, desc

    def node(self) -> int:
        return self._node

    def node_name(self) -> str:        # allowed from 10.0 only (the spec's ParserError)
        return self._node_name

    def node_operator(self) -> str:
        return self._op

    def desc(self) -> str:
        return self._desc

    def code(self) -> int:
        return 1


class OnnxParser:
    def __init__(self, network: Any, logger: Any) -> None:
        self._network, self._errors = network, []

    num_errors = property(lambda self: len(self._errors))

    def get_error(self, i: int) -> Any:
        return self._errors[i]

    def clear_errors(self) -> None:
        self._errors = []

    def _fail(self, index: int, node: Any, desc: str) -> bool:
        self._errors.append(self._ctx.module.ParserError(index, node.name if node else "", node.op_type if node else "", desc))
        return False

    def parse_from_file(self, path: str) -> bool:
        return self.parse(Path(path).read_bytes(), path)

    def parse(self, model: bytes, path: Any = None) -> bool:
        ctx, network = self._ctx, self._network
        trt = ctx.module
        if network.has_implicit_batch_dimension:
            return self._fail(0, None, "The ONNX parser only supports networks with an explicit batch dimension")
        graph = _onnx.read_graph(bytes(model))
        network._onnx = bytes(model)
        types_of: Dict[str, str] = {name: ONNX_TYPES.get(t, "FLOAT") for name, t in graph.initializers.items()}
        tensors: Dict[str, Any] = {}

        def dtype(kind: str) -> Any:
            if kind == "INT64" and not ctx.has("DataType", "INT64"):
                kind = "INT32"   # 8.x casts INT64 ONNX tensors down to INT32
            return getattr(trt.DataType, kind)

        for value in graph.inputs:
            kind = ONNX_TYPES.get(value.elem_type, "FLOAT")
            types_of[value.name] = kind
            shape = tuple(d if isinstance(d, int) and d > 0 else -1 for d in value.shape)
            tensors[value.name] = trt.ITensor(value.name, dtype(kind), shape, list(value.shape))
            network._inputs.append(tensors[value.name])
        for index, node in enumerate(graph.nodes):
            kind = OP_LAYER.get(node.op_type, "IDENTITY")
            if not ctx.has("LayerType", kind) or node.op_type in UNSUPPORTED_OPS:
                return self._fail(index, node, f"No importer registered for op: {node.op_type}")
            if node.op_type == "Cast":
                out_kind = ONNX_TYPES.get(node.ints.get("to", 1), "FLOAT")
            elif node.op_type == "Shape":
                out_kind = "INT64"
            elif node.op_type == "QuantizeLinear":
                out_kind = "INT8"
            elif node.op_type == "DequantizeLinear":
                out_kind = types_of.get(node.inputs[1], "FLOAT") if len(node.inputs) > 1 else "FLOAT"
            else:
                floats = [types_of[i] for i in node.inputs if types_of.get(i) in ("FLOAT", "HALF")]
                out_kind = floats[0] if floats else "FLOAT"
            outputs = []
            for name in node.outputs:
                types_of[name] = out_kind
                tensors[name] = trt.ITensor(name, dtype(out_kind), (), [])
                outputs.append(tensors[name])
            layer = trt.ILayer(node.name, getattr(trt.LayerType, kind), node.op_type,
                               [tensors.get(i) for i in node.inputs], outputs)
            network._layers.append(layer)
        for value in graph.outputs:
            kind = ONNX_TYPES.get(value.elem_type, "FLOAT")
            shape = tuple(d if isinstance(d, int) and d > 0 else -1 for d in value.shape)
            network._outputs.append(trt.ITensor(value.name, dtype(kind), shape, list(value.shape)))
        return True


# ------------------------------------------------------------------------------- builder
class Profile:
    def __init__(self) -> None:
        self._shapes: Dict[str, Tuple[Tuple[int, ...], ...]] = {}

    def set_shape(self, name: str, low: Any, opt: Any, high: Any) -> None:
        self._shapes[name] = (tuple(low), tuple(opt), tuple(high))

    def get_shape(self, name: str) -> List[Any]:
        return [self._ctx.module.Dims(s) for s in self._shapes.get(name, ())]

    def __bool__(self) -> bool:
        return all(lo <= op <= hi for r in self._shapes.values() for lo, op, hi in zip(*r))


class TimingCache:
    def __init__(self, device: str, body: bytes) -> None:
        self._device, self._body = device, body

    def serialize(self) -> bytes:
        return f"FAKECACHE {self._device}\n".encode() + self._body


class BuilderConfig:
    def __init__(self) -> None:
        ctx = self._ctx
        self._flags = 1 << int(ctx.module.BuilderFlag.TF32)   # TF32 on by default (see module docstring)
        self._pools: Dict[str, int] = {}
        self._profiles: List[Any] = []
        self._calibration_profile: Any = None
        self._calibrator: Any = None
        self._device = ctx.module.DeviceType.GPU
        self._dla_core = -1
        self._cache: Any = None
        self._verbosity = ctx.module.ProfilingVerbosity.LAYER_NAMES_ONLY

    flags = property(lambda self: self._flags, lambda self, v: object.__setattr__(self, "_flags", int(v)))

    def set_flag(self, flag: Any) -> None:
        self._flags |= 1 << int(flag)

    def clear_flag(self, flag: Any) -> None:
        self._flags &= ~(1 << int(flag))

    def get_flag(self, flag: Any) -> bool:
        return bool(self._flags & (1 << int(flag)))

    def set_memory_pool_limit(self, pool: Any, size: int) -> None:
        self._pools[pool.name] = int(size)

    def get_memory_pool_limit(self, pool: Any) -> int:
        return self._pools.get(pool.name, 0)

    def add_optimization_profile(self, profile: Any) -> int:
        if not profile:
            return -1
        self._profiles.append(profile)
        return len(self._profiles) - 1

    num_optimization_profiles = property(lambda self: len(self._profiles))

    def set_calibration_profile(self, profile: Any) -> bool:
        if not profile:
            return False
        self._calibration_profile = profile
        return True

    def get_calibration_profile(self) -> Any:
        return self._calibration_profile

    int8_calibrator = property(lambda self: self._calibrator,
                               lambda self, v: object.__setattr__(self, "_calibrator", v))
    default_device_type = property(lambda self: self._device,
                                   lambda self, v: object.__setattr__(self, "_device", v))
    DLA_core = property(lambda self: self._dla_core, lambda self, v: object.__setattr__(self, "_dla_core", int(v)))
    profiling_verbosity = property(lambda self: self._verbosity,
                                   lambda self, v: object.__setattr__(self, "_verbosity", v))

    def create_timing_cache(self, data: bytes) -> Any:
        data = bytes(data)
        if not data:
            return self._ctx.module.ITimingCache(self._ctx.knobs["device_name"], b"")
        header, _, body = data.partition(b"\n")
        return self._ctx.module.ITimingCache(header.decode().replace("FAKECACHE ", ""), body)

    def set_timing_cache(self, cache: Any, ignore_mismatch: bool) -> bool:
        if cache._device != self._ctx.knobs["device_name"] and not ignore_mismatch:
            self._ctx.log("ERROR", "timing cache was created on a different device; not attached")
            return False
        self._cache = cache
        return True

    def get_timing_cache(self) -> Any:
        return self._cache


class Builder:
    def __init__(self, logger: Any) -> None:
        self._logger = logger
        self._network: Any = None
        self._config: Any = None
        self._ctx.record["builders"].append(self)

    num_DLA_cores = property(lambda self: self._ctx.knobs["dla_cores"])
    platform_has_tf32 = property(lambda self: True)
    platform_has_fast_fp16 = property(lambda self: True)
    platform_has_fast_int8 = property(lambda self: True)

    def create_network(self, flags: int = 0) -> Any:
        self._network = self._ctx.module.INetworkDefinition(int(flags))
        return self._network

    def create_builder_config(self) -> Any:
        self._config = self._ctx.module.IBuilderConfig()
        return self._config

    def create_optimization_profile(self) -> Any:
        return self._ctx.module.IOptimizationProfile()

    def build_serialized_network(self, network: Any, config: Any) -> Optional[bytes]:
        ctx = self._ctx
        plan = _Build(ctx, network, config).run()
        if plan is None or ctx.knobs["fail_build"]:
            return None
        return plan


class _Build:
    """One build_serialized_network call: checks, calibration, per-layer precision and device."""

    def __init__(self, ctx: Ctx, network: Any, config: Any) -> None:
        self.ctx, self.network, self.config = ctx, network, config
        self.trt = ctx.module

    def flag(self, name: str) -> bool:
        return self.ctx.has("BuilderFlag", name) and self.config.get_flag(getattr(self.trt.BuilderFlag, name))

    def run(self) -> Optional[bytes]:
        net, trt = self.network, self.trt
        strong = net._strongly_typed()
        if strong and (self.flag("FP16") or self.flag("INT8") or self.flag("BF16")):
            self.ctx.log("ERROR", "precision flags are not allowed on a strongly typed network")
            return None
        if strong and any(layer._precision is not None or layer._output_types for layer in net._layers):
            self.ctx.log("ERROR", "layer precision constraints are not allowed on a strongly typed network")
            return None
        dynamic = any(-1 in t._shape for t in net._inputs)
        if dynamic and not self.config._profiles:
            self.ctx.log("ERROR", "network has dynamic inputs but no optimization profile")
            return None
        qdq = any(layer._op in ("QuantizeLinear", "DequantizeLinear") for layer in net._layers)
        calibration = None
        if self.flag("INT8") and self.config._calibrator is not None and not qdq:
            calibration = self.calibrate()
            if calibration is None:
                return None
        dla = self.config._device == trt.DeviceType.DLA
        layers = [self.layer_info(layer, strong, dla and not dynamic) for layer in net._layers]
        if any(info is None for info in layers):
            return None
        io = {"inputs": {t.name: {"dtype": t.dtype.name, "symbols": t._symbols, "shape": list(t._shape)}
                         for t in net._inputs},
              "outputs": {t.name: {"dtype": t.dtype.name, "symbols": t._symbols} for t in net._outputs},
              "profiles": [{n: [list(s) for s in r] for n, r in p._shapes.items()} for p in self.config._profiles],
              "layers": layers, "detailed": self.config._verbosity == trt.ProfilingVerbosity.DETAILED,
              "version": self.ctx.version, "calibration": calibration,
              "onnx": base64.b64encode(net._onnx).decode()}
        return b"FAKEPLAN" + json.dumps(io).encode()

    def calibrate(self) -> Optional[Dict[str, Any]]:
        calibrator, net = self.config._calibrator, self.network
        cache = calibrator.read_calibration_cache()
        if cache:
            return {"batches": 0, "from_cache": True}
        profile = self.config._calibration_profile or (self.config._profiles[0] if self.config._profiles else None)
        shapes = {}
        for t in net._inputs:
            shape = profile._shapes[t.name][1] if profile is not None and t.name in profile._shapes else t._shape
            if -1 in shape:
                self.ctx.log("ERROR", f"calibration: no shape for dynamic input {t.name}")
                return None
            shapes[t.name] = shape
        names = [t.name for t in net._inputs]
        batches, lows, highs = 0, {}, {}
        while True:
            try:
                pointers = calibrator.get_batch(names)
            except Exception as exc:   # pyInt8.cpp: caught, printed, calibration ends
                print(f"[ERROR] Exception caught in get_batch(): {exc}", file=sys.stderr)
                break
            if not pointers:
                break
            for t, pointer in zip(net._inputs, pointers):
                dtype = np.dtype(NUMPY[t.dtype.name])
                nbytes = int(np.prod(shapes[t.name])) * dtype.itemsize
                data = read_device(self.ctx, int(pointer), nbytes)
                if data is None:
                    self.ctx.log("ERROR", f"calibration read {nbytes} bytes for {t.name} past its buffer")
                    return None
                values = np.frombuffer(data, dtype)
                lows[t.name] = min(lows.get(t.name, np.inf), float(values.min()))
                highs[t.name] = max(highs.get(t.name, -np.inf), float(values.max()))
            batches += 1
        text = f"TRT-{self.ctx.version}-EntropyCalibration2\nbatches: {batches}\n" + "".join(
            f"{n}: {lows[n]:.6g} {highs[n]:.6g}\n" for n in lows)
        calibrator.write_calibration_cache(text.encode())
        return {"batches": batches, "from_cache": False}

    def layer_info(self, layer: Any, strong: bool, dla_ok: bool) -> Optional[Dict[str, Any]]:
        trt, kind = self.trt, layer._kind.name
        obey = self.flag("OBEY_PRECISION_CONSTRAINTS") or self.flag("PREFER_PRECISION_CONSTRAINTS")
        out = layer._out[0].dtype.name if layer._out else "FLOAT"
        if strong:
            precision = out
        elif layer._precision is not None and obey and not any(
                layer._name.startswith(p) for p in self.ctx.knobs["ignore_fp32_pins"]):
            precision = layer._precision.name
        elif out not in ("FLOAT", "HALF"):
            precision = out
        elif self.flag("INT8") and kind in INT8_KINDS:
            precision = "INT8"
        elif self.flag("FP16") or (self.flag("INT8") and kind in INT8_KINDS):
            precision = "HALF"
        else:
            precision = "FLOAT"
        device = "GPU"
        if self.config._device == trt.DeviceType.DLA:
            if dla_ok and kind in DLA_KINDS and precision in ("HALF", "INT8"):
                device = "DLA"
            elif not self.flag("GPU_FALLBACK"):
                self.ctx.log("ERROR", f"layer {layer._name} cannot run on DLA and GPU_FALLBACK is not set")
                return None
        return {"name": layer._name, "kind": kind, "precision": precision, "device": device,
                "inputs": [t.name for t in layer._in if t is not None], "outputs": [t.name for t in layer._out]}


# ------------------------------------------------------------------------------- memory
def read_device(ctx: Ctx, address: int, nbytes: int) -> Optional[bytes]:
    readable = ctx.knobs["readable"]
    if address == 0 or (readable is not None and not readable(address, nbytes)):
        return None
    return ctypes.string_at(address, nbytes)


def write_device(ctx: Ctx, address: int, data: bytes) -> bool:
    readable = ctx.knobs["readable"]
    if address == 0 or (readable is not None and not readable(address, len(data))):
        return False
    ctypes.memmove(address, data, len(data))
    return True


# ------------------------------------------------------------------------------- runtime
class Engine:
    def __init__(self, plan: Dict[str, Any]) -> None:
        self._plan = plan
        self._names = list(plan["inputs"]) + list(plan["outputs"])

    num_io_tensors = property(lambda self: len(self._names))
    num_layers = property(lambda self: len(self._plan["layers"]))

    def get_tensor_name(self, i: int) -> str:
        return self._names[i]

    def get_tensor_mode(self, name: str) -> Any:
        modes = self._ctx.module.TensorIOMode
        return modes.INPUT if name in self._plan["inputs"] else modes.OUTPUT if name in self._plan["outputs"] else modes.NONE

    def get_tensor_dtype(self, name: str) -> Any:
        spec = self._plan["inputs"].get(name) or self._plan["outputs"][name]
        return getattr(self._ctx.module.DataType, spec["dtype"])

    def get_tensor_shape(self, name: str) -> Any:
        spec = self._plan["inputs"].get(name) or self._plan["outputs"][name]
        return self._ctx.module.Dims([s if isinstance(s, int) and s > 0 else -1 for s in spec["symbols"]])

    def get_tensor_profile_shape(self, name: str, index: int) -> List[Any]:
        ranges = self._plan["profiles"][index][name]
        return [self._ctx.module.Dims(s) for s in ranges]

    def create_execution_context(self) -> Any:
        return self._ctx.module.IExecutionContext(self)

    def create_engine_inspector(self) -> Any:
        return self._ctx.module.EngineInspector(self)

    def serialize(self) -> bytes:
        return b"FAKEPLAN" + json.dumps(self._plan).encode()


class Inspector:
    def __init__(self, engine: Any) -> None:
        self._engine = engine

    def _layer(self, info: Dict[str, Any]) -> Any:
        plan, ctx = self._engine._plan, self._ctx
        if not plan["detailed"]:
            return info["name"]
        fmt = FORMAT.get(info["precision"], info["precision"])
        entry: Dict[str, Any] = {
            "Name": info["name"], "LayerType": "DLA" if info["device"] == "DLA" else info["kind"].title(),
            "Inputs": [{"Name": n, "Location": "Device", "Format/Datatype": fmt} for n in info["inputs"]],
            "Outputs": [{"Name": n, "Location": "Device", "Format/Datatype": fmt} for n in info["outputs"]],
            "TacticName": "dla_subgraph" if info["device"] == "DLA" else f"fake_{info['kind'].lower()}_kernel",
            "StreamId": 0}
        if ctx.major >= 10:
            entry["Metadata"] = f"[ONNX Layer: {info['name']}]"
        return entry

    def get_engine_information(self, fmt: Any) -> str:
        layers = [self._layer(info) for info in self._engine._plan["layers"]]
        if fmt == self._ctx.module.LayerInformationFormat.JSON:
            return json.dumps({"Layers": layers, "Bindings": self._engine._names})
        return "\n".join(json.dumps(layer) if isinstance(layer, dict) else layer for layer in layers)

    def get_layer_information(self, index: int, fmt: Any) -> str:
        return json.dumps(self._layer(self._engine._plan["layers"][index]))


class Context:
    def __init__(self, engine: Any) -> None:
        self._engine = engine
        self._shapes: Dict[str, Tuple[int, ...]] = {}
        self._addresses: Dict[str, int] = {}
        self._session: Any = None
        self._shape_calls: List[Tuple[str, Tuple[int, ...]]] = []
        self._executions = 0
        self._ctx.record["contexts"].append(self)

    def set_input_shape(self, name: str, shape: Any) -> bool:
        plan = self._engine._plan
        if name not in plan["inputs"]:
            return False
        shape = tuple(int(d) for d in shape)
        self._shape_calls.append((name, shape))
        static = plan["inputs"][name]["shape"]
        if -1 in static:
            low, _, high = plan["profiles"][0][name]
            if len(shape) != len(low) or not all(lo <= d <= hi for d, lo, hi in zip(shape, low, high)):
                self._ctx.log("ERROR", f"set_input_shape {name} {shape} outside the profile")
                return False
        elif list(shape) != list(static):
            return False
        self._shapes[name] = shape
        return True

    def get_tensor_shape(self, name: str) -> Any:
        plan, trt = self._engine._plan, self._ctx.module
        if name in plan["inputs"]:
            return trt.Dims(self._shapes.get(name, plan["inputs"][name]["shape"]))
        sizes: Dict[Any, int] = {}
        for input_name, spec in plan["inputs"].items():
            for symbol, size in zip(spec["symbols"], self._shapes.get(input_name, spec["shape"])):
                sizes[symbol] = size
        return trt.Dims([s if isinstance(s, int) and s > 0 else sizes.get(s, -1) for s in plan["outputs"][name]["symbols"]])

    def set_tensor_address(self, name: str, address: int) -> bool:
        if name not in self._engine._names or not address:
            return False
        self._addresses[name] = int(address)
        return True

    def get_tensor_address(self, name: str) -> int:
        return self._addresses.get(name, 0)

    def execute_async_v3(self, stream_handle: int) -> bool:
        plan = self._engine._plan
        if any(n not in self._addresses for n in self._engine._names):
            self._ctx.log("ERROR", "execute_async_v3: a tensor address is not set")
            return False
        if any(n not in self._shapes and -1 in plan["inputs"][n]["shape"] for n in plan["inputs"]):
            return False
        hook = self._ctx.knobs["on_enqueue"]
        if hook is not None:
            return bool(hook(stream_handle, self._run))
        return self._run()

    def _run(self) -> bool:
        import onnxruntime as ort

        plan, ctx = self._engine._plan, self._ctx
        self._executions += 1
        if self._session is None:
            self._session = ort.InferenceSession(base64.b64decode(plan["onnx"]), providers=["CPUExecutionProvider"])
        feed = {}
        for name, spec in plan["inputs"].items():
            dtype = np.dtype(NUMPY[spec["dtype"]])
            shape = self._shapes.get(name, tuple(spec["shape"]))
            data = read_device(ctx, self._addresses[name], int(np.prod(shape)) * dtype.itemsize)
            if data is None:
                return False
            feed[name] = np.frombuffer(data, dtype).reshape(shape)
        outputs = self._session.run(list(plan["outputs"]), feed)
        for name, value in zip(plan["outputs"], outputs):
            value = value.astype(NUMPY[plan["outputs"][name]["dtype"]], copy=False)
            if not write_device(ctx, self._addresses[name], np.ascontiguousarray(value).tobytes()):
                return False
        return True


class Runtime:
    def __init__(self, logger: Any) -> None:
        self._dla = -1
        self._ctx.record["runtimes"].append(self)

    DLA_core = property(lambda self: self._dla, lambda self, v: object.__setattr__(self, "_dla", int(v)))
    num_DLA_cores = property(lambda self: self._ctx.knobs["dla_cores"])

    def deserialize_cuda_engine(self, data: Any) -> Any:
        data = bytes(data)
        if not data.startswith(b"FAKEPLAN"):
            self._ctx.log("ERROR", "not a serialized engine")
            return None
        plan = json.loads(data[len(b"FAKEPLAN"):])
        if plan["version"] != self._ctx.version:
            self._ctx.log("ERROR", f"expecting library version {self._ctx.version} got {plan['version']}")
            return None
        return self._ctx.module.ICudaEngine(plan)


class Logger:
    def __init__(self, min_severity: Any = None) -> None:
        self._severity = min_severity

    min_severity = property(lambda self: self._severity)

    def log(self, severity: Any, msg: str) -> None:
        print(f"[TRT double] {msg}", file=sys.stderr)


class Calibrator:
    """Python-subclassable calibrator base: the subclass supplies get_batch and the cache calls."""

    def __init__(self) -> None:
        pass


# ------------------------------------------------------------------------------- module
IMPLS = {"Builder": Builder, "IBuilderConfig": BuilderConfig, "INetworkDefinition": Network, "ILayer": Layer,
         "ITensor": Tensor, "OnnxParser": OnnxParser, "ParserError": ParserError, "IOptimizationProfile": Profile,
         "ITimingCache": TimingCache, "ICudaEngine": Engine, "IExecutionContext": Context, "Runtime": Runtime,
         "EngineInspector": Inspector, "Dims": Dims, "Logger": Logger}
CALIBRATORS = ("IInt8Calibrator", "IInt8EntropyCalibrator2", "IInt8EntropyCalibrator", "IInt8MinMaxCalibrator",
               "IInt8LegacyCalibrator")
DTYPE_ATTRS = {"float32": "FLOAT", "float16": "HALF", "bfloat16": "BF16", "int8": "INT8", "int32": "INT32",
               "int64": "INT64", "bool": "BOOL", "uint8": "UINT8", "fp8": "FP8", "int4": "INT4"}


def build_module(spec_path: Path, version: str, knobs: Dict[str, Any]) -> types.ModuleType:
    spec = json.loads(spec_path.read_text(encoding="utf-8"))
    ctx = Ctx(spec, version, knobs)
    module = types.ModuleType("tensorrt", f"TensorRT {version} double (surface of {spec_path.name})")
    ctx.module = module
    module.__version__ = version
    module._knobs = ctx.knobs
    module._record = ctx.record
    for name, members in spec["enums"].items():
        if "." not in name:
            setattr(module, name, make_enum(name, members))
    for name in spec["classes"]:
        if name in IMPLS:
            cls = surface_class(ctx, name, IMPLS[name])
        elif name in CALIBRATORS:
            cls = surface_class(ctx, name, Calibrator, strict=False)
        else:
            def refuse(self: Any, *_: Any, _name: str = name, **__: Any) -> None:
                raise NotImplementedError(f"TensorRT double: {_name} exists in this release but is not modelled")
            cls = surface_class(ctx, name, type(name, (), {"__init__": refuse}))
        setattr(module, name, cls)
    severity = spec["enums"].get("ILogger.Severity", ["INTERNAL_ERROR", "ERROR", "WARNING", "INFO", "VERBOSE"])
    severity_enum = make_enum("ILogger.Severity", severity)
    for cls_name in ("ILogger", "Logger"):
        if hasattr(module, cls_name):
            cls = getattr(module, cls_name)
            cls.Severity = severity_enum
            for member in severity:
                setattr(cls, member, getattr(severity_enum, member))
    for attr in spec["module_attributes"]:
        if attr in DTYPE_ATTRS and DTYPE_ATTRS[attr] in spec["enums"].get("DataType", []):
            setattr(module, attr, getattr(module.DataType, DTYPE_ATTRS[attr]))
    functions = spec["details"].get("module_functions", {})

    if "nptype" in spec["module_functions"]:
        mapping = functions.get("nptype", {}).get("mapping", {})

        def nptype(trt_type: Any) -> Any:
            """As tensorrt/__init__.py: the whole map is built on every call, so a numpy name that
            is gone (np.bool on numpy 1.24 to 1.26, for 8.5.2) fails for every type."""
            table = {getattr(module, k): getattr(np, v.replace("np.", "")) for k, v in mapping.items()
                     if hasattr(module, k)}
            if trt_type in table:
                return table[trt_type]
            raise TypeError("Could not resolve TensorRT datatype to an equivalent numpy datatype.")
        module.nptype = nptype
    if "volume" in spec["module_functions"]:
        module.volume = lambda iterable: int(np.prod(list(iterable)))
    for name in spec["module_functions"]:
        if not hasattr(module, name):
            def missing(*_: Any, _name: str = name, **__: Any) -> None:
                raise NotImplementedError(f"TensorRT double: tensorrt.{_name} is not modelled")
            setattr(module, name, missing)
    return module
