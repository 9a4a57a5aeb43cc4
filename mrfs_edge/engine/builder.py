"""ONNX → TensorRT engine, with its sidecar, on the machine that will run it.

Engines only run on the TensorRT release and GPU architecture that built them, so building is a
deployment step on the Jetson itself. :func:`build_engine` parses the exported ONNX, applies the
precision, FP32 pins, profiles, DLA and timing cache through :mod:`.trt_compat` (which absorbs
the 8.5 / 8.6 / 10.x / 11 differences), then writes the engine and its ``.json`` sidecar
atomically. The ``trt`` module is a parameter so tests can hand in a recording test double.
"""
from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_args

from mrfs_edge import __version__ as TOOLKIT_VERSION
from mrfs_edge.backends import trt_compat as compat
from mrfs_edge.backends.machine import machine_info
from mrfs_edge.backends.sidecar import EngineSidecar, Machine, Precision, Quant, write_sidecar
from mrfs_edge.backends.trt_inspector import parse_engine_information, pins_not_held, summary_line, write_layer_report
from mrfs_edge.core.contract import ModelContract
from mrfs_edge.core.errors import ExportError
from mrfs_edge.core.files import sha256_file, write_bytes_atomic
from mrfs_edge.engine.pins import select_fp32_layers

if TYPE_CHECKING:
    import tensorrt

LOG = logging.getLogger(__name__)
PRECISIONS: tuple[Precision, ...] = get_args(Precision)
QUANT_MODES: tuple[Quant, ...] = get_args(Quant)


@dataclass
class EngineBuildConfig:
    """How to build: precision, quantisation route, memory, DLA, cache and FP32 pins.

    ``precision``: fp32; fp16; int8 (INT8 layers, FP32 elsewhere); best (INT8 + FP16).
    ``quant`` matters for int8/best: "explicit" = the ONNX already holds Q/DQ nodes (the only
    route on strongly typed builds and TensorRT 11); "implicit" = TensorRT calibrates with
    ``calibrator`` (see :func:`mrfs_edge.calibration.trt_calibrator.make_calibrator`).
    ``fp32_nodes``: ONNX node names kept in FP32 (None: the contract's ``fp32_nodes``);
    ``pin_patterns`` also keeps overflow-prone layer types in FP32 (see :mod:`.pins`).
    ``strongly_typed``: precision comes from the graph's types, no flags or pins (forced on
    TensorRT releases without builder precision flags).
    ``calibrator``: any TensorRT INT8 calibrator; one from ``make_calibrator`` also reports a bad
    batch (``error``) and its data set (``info()``) to the sidecar. Its owner closes it after.
    ``allow_tf32``: let FP32 layers use TF32 (off: TensorRT's default is on, which would make
    fp32 builds and FP32 pins compute with a 10-bit mantissa).
    ``require_pins``: an FP32 pin TensorRT did not hold fails the build (else a warning and a note).
    """

    precision: Precision = "fp16"
    quant: Quant = "explicit"
    workspace_mib: int = 1024
    dla_core: int | None = None
    timing_cache: str | os.PathLike[str] | None = None
    fp32_nodes: Sequence[str] | None = None
    pin_patterns: bool = True
    strongly_typed: bool = False
    calibrator: Any = None
    allow_tf32: bool = False
    require_pins: bool = True

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ExportError(f"precision must be one of {PRECISIONS}, not {self.precision!r}")
        if self.quant not in QUANT_MODES:
            raise ExportError(f"quant must be one of {QUANT_MODES}, not {self.quant!r}")
        if self.dla_core is not None and self.precision == "fp32":
            raise ExportError("DLA runs FP16 or INT8 only: build with precision fp16, int8 or best")
        method = getattr(self.calibrator, "method", None)
        if self.dla_core is not None and self.implicit_int8 and method not in (None, "entropy"):
            raise ExportError(f"DLA takes only the entropy calibrator for implicit INT8, not {method!r}: "
                              "use --calib-method entropy (or a Q/DQ ONNX)")

    @property
    def int8(self) -> bool:
        return self.precision in ("int8", "best")

    @property
    def implicit_int8(self) -> bool:
        return self.int8 and self.quant == "implicit"


def build_engine(onnx_path: str | os.PathLike[str], engine_path: str | os.PathLike[str],
                 config: EngineBuildConfig, trt: Any = None, machine: Machine | None = None,
                 contract: ModelContract | None = None) -> EngineSidecar:
    """Build ``engine_path`` from ``onnx_path``; returns the sidecar written beside it.

    ``trt``: the tensorrt module, a :class:`~.trt_compat.TrtApi`, or None to import it.
    ``machine``: this machine (default :func:`machine_info`); ``contract``: default read from the ONNX.
    """
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    api = compat.as_api(trt)
    if contract is None:
        from mrfs_edge.backends.onnxruntime_runner import read_onnx_contract

        contract = read_onnx_contract(onnx_path)
    machine = machine or machine_info(api)
    strongly_typed = config.strongly_typed or not api.has_precision_flags
    if config.implicit_int8 and (strongly_typed or config.calibrator is None):
        raise ExportError(f"{onnx_path.name}: implicit INT8 needs a calibrator and a weakly typed build"
                          + ("" if api.has_precision_flags else f" (TensorRT {api.version_text} has neither)"))

    builder = api.create_builder()
    network = api.create_network(builder, strongly_typed)
    parser = api.create_parser(network)   # owns the weights: must stay alive until the build ends
    if not parser.parse_from_file(str(onnx_path)):
        raise ExportError(_parse_failure(api, onnx_path, parser, contract))
    _check_io(network, contract, onnx_path)
    if strongly_typed and config.precision in ("fp16", "best") and not api.has_fp16_tensors(network):
        raise ExportError(f"{onnx_path.name}: a strongly typed {config.precision} build takes its types from the "
                          f"graph and this one has no FP16 tensors; pass the {onnx_path.stem.split('.')[0]}.fp16.onnx "
                          "the workstation wrote (FP16 graph with its FP32 pins as casts)")
    if config.int8 and config.quant == "explicit" and not _has_qdq(api, network):
        raise ExportError(f"{onnx_path.name}: quant='explicit' but the graph has no Q/DQ nodes; "
                          "quantise the ONNX first or use quant='implicit' with a calibrator")

    notes: list[str] = []
    build_config = builder.create_builder_config()
    pins = _apply_precision(api, network, build_config, config, contract, strongly_typed, notes)
    ranges = _profile_ranges(network, contract)
    # The calibration data's shape: CalibrationSet feeds the contract's static batch and size.
    calibration_shapes = {name: tuple(shape) for name, shape in
                          contract.input_shapes(contract.batch, contract.height, contract.width).items()}
    cache_warning = _configure(api, builder, build_config, config, ranges, calibration_shapes)
    if cache_warning:
        LOG.warning(cache_warning)
        notes.append(cache_warning)

    start = time.perf_counter()
    serialized = builder.build_serialized_network(network, build_config)
    build_time = time.perf_counter() - start
    calibration_error = getattr(config.calibrator, "error", None) if config.implicit_int8 else None
    if calibration_error:
        raise ExportError(f"{onnx_path.name}: INT8 calibration failed: {calibration_error}")
    if serialized is None:
        raise ExportError(f"{onnx_path.name}: TensorRT {api.version_text} could not build an engine "
                          "(its log above says why)")
    data = bytes(serialized)
    layers = _layer_report(api, data, config, pins, onnx_path, notes)
    write_bytes_atomic(engine_path, data)
    write_layer_report(engine_path, layers)
    if config.timing_cache is not None:
        compat.save_timing_cache(build_config, config.timing_cache)

    static = {name: shape for name, shape in _input_shapes(network).items() if name not in ranges}
    calibration = config.calibrator.info() if config.implicit_int8 and hasattr(config.calibrator, "info") else None
    sidecar = EngineSidecar(
        engine_file=engine_path.name, engine_sha256=hashlib.sha256(data).hexdigest(),
        tensorrt_version=machine.tensorrt_version, gpu_name=machine.gpu_name,
        compute_capability=machine.compute_capability, precision=config.precision,
        strongly_typed=strongly_typed, quant=config.quant if config.int8 else None,
        dla_core=config.dla_core, pins={"fp32": pins} if pins else {},
        input_shapes={**static, **{name: list(opt) for name, (_, opt, _) in ranges.items()}},
        profiles=[{name: [list(s) for s in r] for name, r in ranges.items()}] if ranges else [],
        onnx_file=onnx_path.name, onnx_sha256=sha256_file(onnx_path),
        build_time_s=round(build_time, 3), built_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        toolkit_version=TOOLKIT_VERSION, contract=contract, checkpoint_sha256=contract.checkpoint_sha256,
        calibration=calibration, notes=notes, precision_built=_precision_built(layers, config.precision),
        tf32=config.allow_tf32, layers=layers)
    write_sidecar(engine_path, sidecar)
    return sidecar


def _layer_report(api: compat.TrtApi, data: bytes, config: EngineBuildConfig, pins: list[str],
                  onnx_path: Path, notes: list[str]) -> dict[str, Any]:
    """Per-layer precision/device from the inspector; a dropped FP32 pin fails (or warns, see config)."""
    text = api.engine_information(data, config.dla_core)
    if text is None:
        raise ExportError(f"{onnx_path.name}: TensorRT {api.version_text} cannot load the engine it just built")
    report = parse_engine_information(text)
    LOG.info(f"{onnx_path.name}: {summary_line(report)}")   # what the user must see after every build
    dropped = pins_not_held(report, pins)
    if dropped:
        message = (f"{onnx_path.name}: {len(dropped)} FP32 pin(s) did not hold (TensorRT fused them into lower "
                   f"precision): {', '.join(dropped[:5])}")
        if config.require_pins:
            raise ExportError(message + "; build with fewer fusions or set require_pins=False to accept")
        LOG.warning(message)
        notes.append(message)
    return report


def _precision_built(report: dict[str, Any], requested: str) -> str:
    """The precision the engine really has, from its layers (the request when none were read)."""
    counts = report.get("counts", {})
    if counts.get("INT8"):
        return "best" if counts.get("FP16") else "int8"
    if counts.get("FP16"):
        return "fp16"
    if counts.get("FP32"):
        return "fp32"
    return requested


def _configure(api: compat.TrtApi, builder: tensorrt.Builder, build_config: tensorrt.IBuilderConfig,
               config: EngineBuildConfig, ranges: dict[str, compat.ShapeRange],
               calibration_shapes: dict[str, tuple[int, ...]]) -> str | None:
    """Workspace, profile, calibrator, DLA, TF32 and timing cache (precision and pins are set apart).

    Returns the timing cache's warning when a foreign cache was replaced by a fresh one.
    """
    api.set_workspace(build_config, config.workspace_mib)
    api.set_tf32(build_config, config.allow_tf32)
    api.set_detailed_profiling(build_config)
    if config.dla_core is not None:
        dynamic = {name: r for name, r in ranges.items() if not r[0] == r[1] == r[2]}
        if dynamic:
            raise ExportError(f"DLA needs static shapes (min = opt = max); inputs {sorted(dynamic)} have a "
                              "dynamic profile: export with a static size for DLA")
    if ranges:
        api.add_profile(build_config, api.make_profile(builder, ranges), ranges)
    if config.implicit_int8:
        # TensorRT reads volume(calibration profile shape) from each buffer get_batch returns, so
        # the profile is the data's own shape and the calibrator checks every batch against it.
        for name, (low, _, high) in ranges.items():
            shape = calibration_shapes[name]
            if len(shape) != len(low) or not all(lo <= d <= hi for d, lo, hi in zip(shape, low, high)):
                raise ExportError(f"calibration data of shape {list(shape)} for {name} is outside the engine's "
                                  f"profile {list(low)}..{list(high)}")
        calibration_ranges = {name: (calibration_shapes[name],) * 3 for name in ranges}
        expect = getattr(config.calibrator, "expect_shapes", None)
        if expect is not None:
            expect(calibration_shapes)
        api.set_calibrator(build_config, config.calibrator,
                           api.make_profile(builder, calibration_ranges) if ranges else None)
    if config.dla_core is not None:
        api.set_dla(builder, build_config, config.dla_core)
    if config.timing_cache is not None:
        return compat.load_timing_cache(build_config, config.timing_cache)
    return None


def _parse_failure(api: compat.TrtApi, onnx_path: Path, parser: tensorrt.OnnxParser,
                   contract: ModelContract) -> str:
    lines = [f"{onnx_path.name}: TensorRT {api.version_text} ONNX parser: {line}"
             for line in compat.parser_errors(parser)] or [f"{onnx_path.name}: TensorRT ONNX parser failed"]
    if not api.has_normalization_layer and contract.trt_compat != "8.5":
        lines.append(f"{onnx_path.name}: TensorRT {api.version_text} has no LayerNormalization; "
                     "re-export the ONNX for it (--trt-compat 8.5)")
    return "\n".join(lines)


def _input_shapes(network: tensorrt.INetworkDefinition) -> dict[str, list[int]]:
    return {network.get_input(i).name: list(compat.dims(network.get_input(i).shape)) for i in range(network.num_inputs)}


def _check_io(network: tensorrt.INetworkDefinition, contract: ModelContract, onnx_path: Path) -> None:
    """The graph's I/O must be the contract's: runners and calibration address tensors by name."""
    inputs = sorted(_input_shapes(network))
    outputs = sorted(network.get_output(i).name for i in range(network.num_outputs))
    if inputs != sorted(contract.input_names) or outputs != sorted(contract.output_names):
        raise ExportError(f"{onnx_path.name}: graph I/O {inputs} → {outputs} differs from its contract "
                          f"{sorted(contract.input_names)} → {sorted(contract.output_names)}")


def _has_qdq(api: compat.TrtApi, network: tensorrt.INetworkDefinition) -> bool:
    return any(api.layer_kind(network.get_layer(i)) == "qdq" for i in range(network.num_layers))


def _apply_precision(api: compat.TrtApi, network: tensorrt.INetworkDefinition,
                     build_config: tensorrt.IBuilderConfig, config: EngineBuildConfig,
                     contract: ModelContract, strongly_typed: bool, notes: list[str]) -> list[str]:
    """Precision flags and FP32 pins (weakly typed builds); returns the pinned layer names."""
    nodes = list(contract.fp32_nodes if config.fp32_nodes is None else config.fp32_nodes)
    if strongly_typed:
        if not config.strongly_typed:
            notes.append(f"TensorRT {api.version_text} has no precision flags: built strongly typed, so the "
                         "precision is the ONNX graph's own (FP16 casts, Q/DQ nodes)")
        if nodes:
            notes.append("strongly typed: FP32 nodes come from the ONNX graph's types, no layer pins applied")
        return []
    api.set_precision(build_config, config.precision)
    if config.precision == "fp32":
        return []
    layers, unmatched = select_fp32_layers(api, network, nodes, config.pin_patterns)
    if unmatched:
        notes.append(f"{len(unmatched)} FP32 node(s) matched no TensorRT layer: {', '.join(unmatched[:5])}")
    return api.pin_layers(build_config, layers)


def _dim_range(contract: ModelContract, key: str, static: int) -> tuple[int, int, int]:
    values = (contract.dynamic or {}).get(key)
    return (int(values[0]), int(values[1]), int(values[2])) if values else (static, static, static)


def _profile_ranges(network: tensorrt.INetworkDefinition, contract: ModelContract) -> dict[str, compat.ShapeRange]:
    """``{input: (min, opt, max)}`` for inputs with run-time dimensions, from ``contract.dynamic``
    (the contract's static size where it gives no range for a dimension)."""
    dynamic = [name for name, shape in _input_shapes(network).items() if -1 in shape]
    if not dynamic:
        return {}
    batch = _dim_range(contract, "batch", contract.batch)
    height = _dim_range(contract, "height", contract.height)
    width = _dim_range(contract, "width", contract.width)
    low, opt, high = (contract.input_shapes(batch[i], height[i], width[i]) for i in range(3))
    return {name: (low[name], opt[name], high[name]) for name in dynamic}
