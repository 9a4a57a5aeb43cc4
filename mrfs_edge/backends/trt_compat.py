"""The one place that knows how TensorRT 8.5, 8.6, 10.x and 11 differ.

Jetson releases pin TensorRT (JetPack 5.1: 8.5, JetPack 6.0: 8.6, JetPack 6.1/6.2: 10.3), so an
engine builder meets all of them. The differences this toolkit touches:

* network creation: 8.x needs ``EXPLICIT_BATCH``; 10 ignores it (deprecated) and 11 drops it;
  ``STRONGLY_TYPED`` exists from 9.x on.
* precision: ``BuilderFlag.FP16``/``INT8`` and per-layer ``precision``/``set_output_type`` pins with
  ``OBEY_PRECISION_CONSTRAINTS`` up to 10.x; 11 removes them in favour of strongly typed networks
  whose precision comes from the graph's own types (FP16 casts, Q/DQ nodes).
* implicit INT8 calibration (``IInt8*Calibrator``, ``config.int8_calibrator``): 8.x to 10.x only.
* LayerNorm: 8.6 imports ONNX ``LayerNormalization`` as a ``NORMALIZATION`` layer; 8.5 has neither.
* parser errors name the failing node (``node_name``) only from 10.x; 8.x gives its index.

Always-present calls are the modern ones: ``set_memory_pool_limit`` (8.4+, never the removed
``max_workspace_size``), ``build_serialized_network`` (never the removed ``build_engine``) and the
name-based tensor API of 8.5+. Features are detected with ``hasattr`` wherever NVIDIA removes a
name outright, so a new release fails loudly instead of silently misbuilding.

Everything that reads the ``tensorrt`` module itself is a :class:`TrtApi` method: inside the
class, mypy types ``self.trt`` as the real module, so ``trt-typecheck`` checks each call against
the TensorRT 10 API stubs, and the objects the methods return (builder, network, runtime) carry
stub types into the callers. Names 10.x lacks, or 11 removes, are reached via ``getattr``.
"""
from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Tuple

import numpy as np

from mrfs_edge.core.errors import ExportError
from mrfs_edge.core.files import write_bytes_atomic

if TYPE_CHECKING:
    import tensorrt

Shape = Tuple[int, ...]                   # typing generics: evaluated at run time on Python 3.8
ShapeRange = Tuple[Shape, Shape, Shape]   # (min, opt, max)
# TensorRT DataType member name -> numpy dtype; our own because 8.5.2's trt.nptype builds a map
# with np.bool, which NumPy 1.24 to 1.26 lack (every call fails there, whatever the type).
NUMPY_TYPES = {"FLOAT": np.float32, "HALF": np.float16, "INT8": np.int8, "INT32": np.int32,
               "INT64": np.int64, "BOOL": np.bool_, "UINT8": np.uint8}
PRECISION_FLAGS = {"fp32": (), "fp16": ("FP16",), "int8": ("INT8",), "best": ("FP16", "INT8")}


def parse_version(text: str) -> tuple[int, int, int]:
    """``"8.6.1.6"`` / ``"10.3.0"`` / ``"10.13.0.35"`` → ``(major, minor, patch)``."""
    match = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", text.strip())
    if not match:
        raise ValueError(f"not a TensorRT version: {text!r}")
    major, minor, patch = match.groups()
    return int(major), int(minor), int(patch or 0)


class TrtApi:
    """The ``tensorrt`` module (or a test double), its version, one logger and every call into it."""

    def __init__(self, module: Any = None) -> None:
        if module is None:
            import tensorrt as trt
        else:
            trt = module
        self.trt = trt
        self.version_text: str = trt.__version__    # full, build number included (sidecars compare it)
        self.version = parse_version(self.version_text)
        self.logger = trt.Logger(trt.Logger.WARNING)
        kinds = trt.LayerType
        self._kinds = {kinds.REDUCE: "reduce", kinds.SOFTMAX: "softmax", kinds.ELEMENTWISE: "arithmetic",
                       kinds.UNARY: "arithmetic", kinds.QUANTIZE: "qdq", kinds.DEQUANTIZE: "qdq"}
        # 8.6+ only: 8.5 has no NORMALIZATION layer (its graphs carry LayerNorm decomposed).
        normalization = getattr(kinds, "NORMALIZATION", None)
        if normalization is not None:
            self._kinds[normalization] = "normalization"

    # -- what this release supports ---------------------------------------------------------
    @property
    def supports_strong_typing(self) -> bool:
        return hasattr(self.trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED")

    @property
    def has_precision_flags(self) -> bool:
        """Builder FP16/INT8 flags and layer pins: up to 10.x, gone once strong typing is the only mode."""
        return hasattr(self.trt.BuilderFlag, "FP16")

    @property
    def has_implicit_int8(self) -> bool:
        return hasattr(self.trt, "IInt8EntropyCalibrator2") and hasattr(self.trt.BuilderFlag, "INT8")

    @property
    def has_normalization_layer(self) -> bool:
        """8.6+ imports ONNX LayerNormalization; 8.5 needs it decomposed at export."""
        return "normalization" in self._kinds.values()

    # -- building ---------------------------------------------------------------------------
    def create_builder(self) -> tensorrt.Builder:
        return self.trt.Builder(self.logger)

    def create_network(self, builder: tensorrt.Builder, strongly_typed: bool) -> tensorrt.INetworkDefinition:
        """Explicit-batch network on 8.x/9.x; strongly typed when asked (9.0+)."""
        flag_enum = self.trt.NetworkDefinitionCreationFlag
        flags = 0
        if self.version[0] < 10:
            # Required on 8.x (implicit batch is its default); deprecated and ignored on 10 and
            # absent from 11, hence getattr rather than an attribute the stubs may drop.
            flags |= 1 << int(getattr(flag_enum, "EXPLICIT_BATCH"))
        if strongly_typed:
            if not self.supports_strong_typing:
                raise ExportError(f"TensorRT {self.version_text} cannot build strongly typed networks "
                                  "(needs 9.0 or newer); build without strong typing")
            flags |= 1 << int(flag_enum.STRONGLY_TYPED)
        return builder.create_network(flags)

    def create_parser(self, network: tensorrt.INetworkDefinition) -> tensorrt.OnnxParser:
        return self.trt.OnnxParser(network, self.logger)

    def set_workspace(self, config: tensorrt.IBuilderConfig, mib: int) -> None:
        config.set_memory_pool_limit(self.trt.MemoryPoolType.WORKSPACE, int(mib) << 20)

    def set_precision(self, config: tensorrt.IBuilderConfig, precision: str) -> None:
        """Flags of a weakly typed build: fp16 → FP16, int8 → INT8, best → both (fp32: none).

        Strongly typed networks take no flags (their tensors carry their types); callers skip this.
        """
        flags = PRECISION_FLAGS[precision]
        if flags and not self.has_precision_flags:
            raise ExportError(f"TensorRT {self.version_text} has no builder precision flags; "
                              "build a strongly typed engine from an FP16 or Q/DQ ONNX instead")
        for name in flags:
            config.set_flag(getattr(self.trt.BuilderFlag, name))

    def set_tf32(self, config: tensorrt.IBuilderConfig, allowed: bool) -> None:
        """TF32 is on in every new builder config; clear it unless asked, so FP32 layers (fp32
        builds, FP32 pins) compute in true FP32 rather than with a 10-bit mantissa."""
        if not allowed:
            config.clear_flag(self.trt.BuilderFlag.TF32)

    def has_fp16_tensors(self, network: tensorrt.INetworkDefinition) -> bool:
        """Whether a (strongly typed) network computes anything in FP16: its types are the graph's."""
        half = self.trt.float16
        return any(network.get_layer(i).get_output(j).dtype == half
                   for i in range(network.num_layers) for j in range(network.get_layer(i).num_outputs))

    def set_calibrator(self, config: tensorrt.IBuilderConfig, calibrator: Any,
                       profile: tensorrt.IOptimizationProfile | None) -> None:
        """Attach an implicit-INT8 calibrator (8.x to 10.x; removed with the precision flags).

        8.5+ calibrates at fixed shapes, so a dynamic network needs a calibration profile with
        min = opt = max (the caller builds it from the opt shapes).
        """
        if not self.has_implicit_int8:
            raise ExportError(f"TensorRT {self.version_text} has no implicit INT8 calibration; "
                              "export a Q/DQ ONNX and build with quant='explicit'")
        # Both deprecated in 10.x and absent from 11: reached by name.
        setattr(config, "int8_calibrator", calibrator)
        if profile is not None and not getattr(config, "set_calibration_profile")(profile):
            raise ExportError("TensorRT refused the calibration profile (min = opt = max at the data's shape)")

    def calibrator_base(self, method: str) -> type:
        """TensorRT's calibrator class for ``method``: "entropy" or "minmax"."""
        if not self.has_implicit_int8:
            raise ExportError(f"TensorRT {self.version_text} has no implicit INT8 calibration; "
                              "use a Q/DQ ONNX (explicit quantisation)")
        bases = {"entropy": self.trt.IInt8EntropyCalibrator2, "minmax": self.trt.IInt8MinMaxCalibrator}
        if method not in bases:
            raise ValueError(f"calibration method must be 'entropy' or 'minmax', not {method!r}")
        return bases[method]

    def layer_kind(self, layer: tensorrt.ILayer) -> str:
        """reduce | softmax | normalization | arithmetic | qdq | other (what FP32 pins care about)."""
        return self._kinds.get(layer.type, "other")

    def is_float_layer(self, layer: tensorrt.ILayer) -> bool:
        """True when every output is FP32/FP16: integer shape arithmetic must never be pinned."""
        floats = (self.trt.float32, self.trt.float16)
        return layer.num_outputs > 0 and all(layer.get_output(i).dtype in floats
                                             for i in range(layer.num_outputs))

    def pin_layers(self, config: tensorrt.IBuilderConfig, layers: Sequence[tensorrt.ILayer],
                   dtype: str = "fp32") -> list[str]:
        """Force ``layers`` (compute and outputs) to ``dtype`` and make the builder obey it."""
        if not layers:
            return []
        trt_type = {"fp32": self.trt.float32, "fp16": self.trt.float16}[dtype]
        for layer in layers:
            layer.precision = trt_type
            for index in range(layer.num_outputs):
                layer.set_output_type(index, trt_type)
        # OBEY: a pin the builder cannot honour fails the build instead of being dropped silently.
        # Deprecated in 10.12 and absent once strong typing is the only mode, hence the guard.
        obey = getattr(self.trt.BuilderFlag, "OBEY_PRECISION_CONSTRAINTS", None)
        if obey is not None:
            config.set_flag(obey)
        return [layer.name for layer in layers]

    @property
    def has_dla(self) -> bool:
        """TensorRT 11.0 to 11.3 ship no DLA support (their bindings keep the names; the library does not)."""
        return self.version[0] < 11 or self.version >= (11, 4, 0)

    def set_dla(self, builder: tensorrt.Builder, config: tensorrt.IBuilderConfig, core: int) -> None:
        """Run on DLA ``core``; layers DLA cannot run fall back to the GPU."""
        if not self.has_dla:
            raise ExportError(f"TensorRT {self.version_text} has no DLA support (11.0 to 11.3); "
                              "build for the GPU (no --dla-core) or use TensorRT 10.x")
        available = builder.num_DLA_cores
        if not 0 <= core < available:
            raise ExportError(f"DLA core {core} requested, this machine has {available} DLA core(s)")
        config.default_device_type = self.trt.DeviceType.DLA
        config.DLA_core = core
        config.set_flag(self.trt.BuilderFlag.GPU_FALLBACK)

    def make_profile(self, builder: tensorrt.Builder,
                     ranges: Mapping[str, ShapeRange]) -> tensorrt.IOptimizationProfile:
        """One optimisation profile: ``{input: (min, opt, max)}``."""
        profile = builder.create_optimization_profile()
        for name, (low, opt, high) in ranges.items():
            profile.set_shape(name, self.trt.Dims(list(low)), self.trt.Dims(list(opt)),
                              self.trt.Dims(list(high)))
        return profile

    def add_profile(self, config: tensorrt.IBuilderConfig, profile: tensorrt.IOptimizationProfile,
                    ranges: Mapping[str, ShapeRange]) -> None:
        """add_optimization_profile returns -1 for a profile TensorRT finds invalid (min > opt > max)."""
        if config.add_optimization_profile(profile) < 0:
            raise ExportError(f"TensorRT refused the optimisation profile {dict(ranges)}")

    def set_detailed_profiling(self, config: tensorrt.IBuilderConfig) -> None:
        """DETAILED verbosity: the engine inspector then reports each layer's types and tactic."""
        config.profiling_verbosity = self.trt.ProfilingVerbosity.DETAILED

    def engine_information(self, data: bytes, dla_core: int | None = None) -> str | None:
        """The engine inspector's JSON for a serialized engine (None: TensorRT cannot load it here)."""
        runtime = self.create_runtime(dla_core)
        engine = runtime.deserialize_cuda_engine(data)
        if engine is None:
            return None
        inspector = engine.create_engine_inspector()
        return str(inspector.get_engine_information(self.trt.LayerInformationFormat.JSON))

    # -- running ----------------------------------------------------------------------------
    def create_runtime(self, dla_core: int | None = None) -> tensorrt.Runtime:
        """A runtime; a DLA engine runs on the core it was built for (set before deserializing)."""
        runtime = self.trt.Runtime(self.logger)
        if dla_core is not None:
            runtime.DLA_core = dla_core
        return runtime

    def is_input(self, engine: tensorrt.ICudaEngine, name: str) -> bool:
        return engine.get_tensor_mode(name) == self.trt.TensorIOMode.INPUT

    def numpy_dtype(self, engine: tensorrt.ICudaEngine, name: str) -> np.dtype:
        """Our own map, not ``trt.nptype`` (broken on 8.5.2 with NumPy 1.24+, see NUMPY_TYPES)."""
        dtype = engine.get_tensor_dtype(name)
        if dtype.name not in NUMPY_TYPES:
            raise ExportError(f"tensor {name}: TensorRT type {dtype.name} has no numpy equivalent here")
        return np.dtype(NUMPY_TYPES[dtype.name])


def as_api(trt: Any = None) -> TrtApi:
    """``trt`` as a :class:`TrtApi`: one already made, a module (or test double), or None to import."""
    return trt if isinstance(trt, TrtApi) else TrtApi(trt)


def dims(shape: tensorrt.Dims) -> tuple[int, ...]:
    """A TensorRT ``Dims`` as a tuple (-1 marks a run-time dimension)."""
    return tuple(int(shape[i]) for i in range(len(shape)))


def load_timing_cache(config: tensorrt.IBuilderConfig, path: str | os.PathLike[str]) -> str | None:
    """Start from the cache at ``path`` when it exists (an empty one otherwise).

    ``set_timing_cache`` returns False for a cache from another GPU or TensorRT release
    (ignore_mismatch=False: such a cache is never trusted). That costs only build time, so the
    build goes on with a fresh cache, which then replaces the foreign one at ``path``; refusing
    would stop every first build on a new device that shares the path. Returns the warning.
    """
    data = Path(path).read_bytes() if Path(path).is_file() else b""
    if config.set_timing_cache(config.create_timing_cache(data), False):
        return None
    if not config.set_timing_cache(config.create_timing_cache(b""), False):
        raise ExportError(f"{path}: TensorRT refused even an empty timing cache")
    return (f"timing cache {Path(path).name} was made on another GPU or TensorRT release: not used, "
            "built with a fresh one that replaces it")


def save_timing_cache(config: tensorrt.IBuilderConfig, path: str | os.PathLike[str]) -> None:
    write_bytes_atomic(path, bytes(config.get_timing_cache().serialize()))


def parser_errors(parser: tensorrt.OnnxParser) -> list[str]:
    """One line per ONNX-parser error: node (name from 10.x, index on 8.x), operator, message."""
    lines = []
    for index in range(parser.num_errors):
        error = parser.get_error(index)
        # node_name/node_operator arrived in 10.0; 8.x errors only carry the node index.
        name = getattr(error, "node_name", None)
        operator = getattr(error, "node_operator", None)
        where = f"node {name()}" if name is not None and name() else f"node #{error.node()}"
        if operator is not None and operator():
            where += f" ({operator()})"
        lines.append(f"{where}: {error.desc().strip()}")
    return lines
