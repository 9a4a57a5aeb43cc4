"""``python export/build_engine.py``: checkpoint or ONNX → the precision's ONNX, its accuracy, an engine.

One command does what a deployment needs for a precision, on any machine:

1. the FP32 ONNX (``--onnx``, or exported from ``--checkpoint``, by default the bundled demo model);
2. the precision's graph and its measured accuracy against FP32 on held-out pairs, in ONNX
   Runtime: ``--fp16`` writes the FP16 graph with its FP32 pins (emulated numerics), ``--int8`` /
   ``--best`` calibrate and write the mixed-precision Q/DQ graph (explicit quantisation) or
   prepare TensorRT's own calibration (``--quant implicit``);
3. the TensorRT engine and its sidecar, when TensorRT and a GPU are present. Where they are not
   (a laptop, CI), the command says so, prints exactly what to run on the target, and still
   exits 0 unless ``--require-engine`` is given.

Each file is made by a step of :mod:`mrfs_edge.deploy` and reused from an earlier run only when the
key recorded beside it (``<file>.key.json``: input hashes, options, calibration pairs and settings,
toolkit version) matches exactly; one log line says why a file is reused or rebuilt.

Everything lands in ``--output-dir`` with a JSON summary of the figures and file names. Exit
status: 0 done, 1 the INT8 graph misses the accuracy budget on the held-out pairs (files are still
written, so the sensitivity table can be read), 2 bad input or ``--require-engine`` unmet.
"""
from __future__ import annotations

import argparse
import logging
import shlex
import time
from pathlib import Path
from typing import Any

from mrfs_edge.core.args import help_text, non_negative_int, positive_int, readable_file, writable_dir, writable_file
from mrfs_edge.core.cli import CliParser, run_cli
from mrfs_edge.core.errors import ExportError, needs_extra
from mrfs_edge.core.files import write_json_atomic
from mrfs_edge.core.onnx_scan import check_onnx_model, export_stem, scan_onnx
from mrfs_edge.deploy import EngineBuild, Fp16Graph, Fp32Onnx, QdqGraph
from mrfs_edge.engine.builder import PRECISIONS, EngineBuildConfig
from mrfs_edge.metrics.cost import cost_of_onnx, engine_split
from mrfs_edge.metrics.jetson_floor import cost_record, summary_lines
from mrfs_edge.tools.calibrate import (
    add_calibration_arguments,
    config_from_args,
    eval_folder_from_args,
    folders_from_args,
)
from mrfs_edge.tools.defaults import checkpoint_or_default
from mrfs_edge.tools.export_onnx import (
    add_export_arguments,
    default_onnx_name,
    options_from_args,
)

LOG = logging.getLogger(__name__)

TRT_CALIBRATORS = {"entropy": "entropy", "max": "minmax"}  # --calib-method → TensorRT calibrator


def build_parser() -> argparse.ArgumentParser:
    p = CliParser(prog="build_engine.py", description=help_text(__doc__),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    precision = p.add_argument_group("precision (default --fp16)").add_mutually_exclusive_group()
    for name in PRECISIONS:
        precision.add_argument(f"--{name}", dest="precision", action="store_const", const=name,
                               help={"fp32": "FP32 engine (reference numerics)",
                                     "fp16": "FP16 engine; overflow-prone layers pinned to FP32",
                                     "int8": "INT8 engine from a calibrated mixed-precision Q/DQ graph",
                                     "best": "INT8 where calibrated, FP16 elsewhere"}[name])
    p.set_defaults(precision="fp16")
    p.add_argument("--onnx", type=readable_file, help="FP32 ONNX from export_onnx.py, or a Q/DQ ONNX to build as is "
                                  "(default: export --checkpoint first)")
    p.add_argument("--quant", choices=("explicit", "implicit"), default="explicit",
                   help="INT8 route: explicit = Q/DQ graph calibrated here on the CPU (default, the only "
                        "route on TensorRT 11); implicit = TensorRT calibrates while building (needs TensorRT)")
    p.add_argument("--output-dir", type=writable_dir, default=Path("build"), help="where ONNX files, caches, summary and engine go")
    p.add_argument("--output", type=writable_file, help="engine path (default: <output-dir>/<onnx stem>.<precision>.engine)")
    trt = p.add_argument_group("TensorRT")
    trt.add_argument("--workspace", type=positive_int, default=1024, metavar="MiB", help="builder workspace (default 1024)")
    trt.add_argument("--dla-core", type=non_negative_int, help="build for this DLA core (Jetson Xavier/Orin), GPU fallback on")
    trt.add_argument("--timing-cache", type=writable_file, help="TensorRT timing cache file, read and updated (faster rebuilds)")
    trt.add_argument("--tf32", action="store_true",
                     help="allow TF32 for FP32 layers (faster on Ampere+, not reference numerics; default off)")
    trt.add_argument("--require-engine", action="store_true",
                     help="fail (exit 2) when no engine can be built here instead of stopping after the ONNX")
    add_export_arguments(p)
    add_calibration_arguments(p)
    return p


def _fp32_onnx(args: argparse.Namespace, output_dir: Path) -> Path:
    """The FP32 ONNX to start from: given, or the FP32 export step's (reused on an exact key match)."""
    if args.onnx:
        return args.onnx
    options = options_from_args(args)
    checkpoint = checkpoint_or_default(args.checkpoint)
    if not checkpoint.is_file():
        raise ExportError(f"{checkpoint}: no such checkpoint")
    parity = {k: Path(v) if v else None for k, v in (("parity_data", args.parity_data),
                                                    ("parity_split", args.parity_split))}
    return Fp32Onnx(checkpoint, options, **parity).run(output_dir / default_onnx_name(options, checkpoint).name)


def _fp16_graph(fp32_path: Path, output_dir: Path, args: argparse.Namespace) -> dict[str, Any]:
    """The FP16 graph with its pins (made, or reused on an exact key match), measured against FP32 on held-out pairs."""
    from mrfs_edge.backends.onnxruntime_runner import read_onnx_contract

    with needs_extra("FP16 conversion"):
        from mrfs_edge.calibration.pipeline import held_out_agreement

    half_path = Fp16Graph(fp32_path).run(output_dir / f"{fp32_path.stem}.fp16.onnx")
    contract = read_onnx_contract(fp32_path)
    held_out = held_out_agreement(fp32_path, half_path, eval_folder_from_args(args), contract, "FP16 (emulated)")
    LOG.info(f"FP16 graph {half_path} ({len(contract.fp32_nodes)} nodes pinned to FP32)")
    return {"fp16_onnx": str(half_path), "emulated": True, "fp32_pins": len(contract.fp32_nodes),
            "held_out": held_out}


def _int8_graph(fp32_path: Path, output_dir: Path, args: argparse.Namespace) -> tuple[Path, dict[str, Any]]:
    """The mixed-precision Q/DQ graph calibrated on the CPU (or reused on an exact key match); its summary."""
    with needs_extra("INT8 calibration"):
        config = config_from_args(args)
    calib, evaluation = folders_from_args(args)
    result = QdqGraph(fp32_path, calib, config, evaluation).run(output_dir)
    return result.path, result.summary


def _engine_path(args: argparse.Namespace, output_dir: Path, source: Path) -> Path:
    return args.output if args.output else output_dir / f"{export_stem(source.name)}.{args.precision}.engine"


def target_command(args: argparse.Namespace, onnx_for_engine: Path, engine: Path) -> str:
    """What to run on the Jetson: the prepared ONNX in, no calibration or export repeated there."""
    parts = ["python3", "export/build_engine.py", "--onnx", str(onnx_for_engine), f"--{args.precision}",
             "--output", str(engine)]
    if args.quant == "implicit" and args.precision in ("int8", "best"):
        parts += ["--quant", "implicit", "--calib-dir", str(args.calib_dir or "<calibration pairs>")]
    if args.dla_core is not None:
        parts += ["--dla-core", str(args.dla_core)]
    if args.tf32:
        parts += ["--tf32"]
    if args.timing_cache:
        parts += ["--timing-cache", str(args.timing_cache)]
    return shlex.join(parts)


def _build(args: argparse.Namespace, onnx_for_engine: Path, engine: Path, output_dir: Path,
           machine: str) -> dict[str, Any]:
    """Build with TensorRT (or reuse on an exact key match); for implicit INT8 feed TensorRT's calibrator."""
    from mrfs_edge.backends.onnxruntime_runner import read_onnx_contract
    from mrfs_edge.backends.sidecar import read_sidecar
    from mrfs_edge.backends.trt_compat import TrtApi
    from mrfs_edge.calibration.dataset import CalibrationSet
    from mrfs_edge.calibration.trt_calibrator import make_calibrator

    calibrator, calibration_key = None, None
    if args.quant == "implicit" and args.precision in ("int8", "best"):
        method = _trt_calibrator(args)
        calib, _ = folders_from_args(args)
        calibration = CalibrationSet.from_folder(calib, args.calib_count, read_onnx_contract(onnx_for_engine))
        calibration_key = {"method": method, "names": calibration.names, "sha256": calibration.fingerprint()}
        calibrator = make_calibrator(TrtApi(), calibration, output_dir / f"{engine.stem}.calib.cache", method,
                                     fingerprint=calibration_key["sha256"])
    config = EngineBuildConfig(precision=args.precision, quant=args.quant, workspace_mib=args.workspace,
                               dla_core=args.dla_core, calibrator=calibrator,
                               timing_cache=str(args.timing_cache) if args.timing_cache else None,
                               allow_tf32=args.tf32)
    try:
        sidecar = EngineBuild(onnx_for_engine, config, machine, calibration_key).run(engine)
    finally:
        if calibrator is not None:
            calibrator.close()
    if sidecar is None:
        sidecar = read_sidecar(engine)
    else:
        LOG.info(f"wrote {engine} ({sidecar.precision}, TensorRT {sidecar.tensorrt_version} on {sidecar.gpu_name}) "
                 f"in {sidecar.build_time_s:.0f} s")
    return {"path": str(engine), "sidecar": sidecar.to_dict()}


def _cost(onnx_for_engine: Path, precision: str) -> dict[str, Any]:
    """What the engine's graph costs per frame and its floor per Jetson, logged and for the summary.

    Read from the graph's metadata (torch/onnx-free on the target), counted where onnx is installed.
    """
    split = cost_of_onnx(onnx_for_engine)
    split = engine_split(split, precision) if split is not None else None
    for line in summary_lines(split):
        LOG.info(line)
    return cost_record(split)


def _trt_calibrator(args: argparse.Namespace) -> str:
    """TensorRT's calibrator for ``--calib-method`` (implicit INT8), or a one-line error."""
    method = TRT_CALIBRATORS.get(args.calib_method or "entropy")
    if method is None:
        raise ExportError(f"--calib-method {args.calib_method} has no TensorRT calibrator; use entropy or max")
    return method


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Every check that needs no model runs before the first file or folder is made.
    given = check_onnx_model(args.onnx, "--onnx") if args.onnx else None
    if args.quant == "implicit" and args.precision in ("int8", "best"):
        _trt_calibrator(args)
    from mrfs_edge.backends.machine import tensorrt_status

    started = time.perf_counter()
    output_dir: Path = args.output_dir
    output_dir.mkdir(parents=True, exist_ok=True)
    fp32_path = _fp32_onnx(args, output_dir)
    summary: dict[str, Any] = {"precision": args.precision, "fp32_onnx": str(fp32_path)}
    onnx_for_engine, budget_met = fp32_path, True
    scan = given or scan_onnx(fp32_path)
    calibrated, half = scan.has_qdq, scan.is_fp16
    prepared = calibrated or half   # built as is: the target run of a graph prepared on the workstation
    if calibrated:
        LOG.info(f"{fp32_path.name} already holds Q/DQ nodes: building it as calibrated")
    elif half:
        LOG.info(f"{fp32_path.name} is already an FP16 graph (FP32 pins in its types): building it as is")
    if args.precision in ("int8", "best") and args.quant == "explicit" and not prepared:
        onnx_for_engine, summary["int8"] = _int8_graph(fp32_path, output_dir, args)
        budget_met = bool(summary["int8"]["budget_met"])
    if args.precision in ("fp16", "best") and not prepared:
        summary["fp16"] = _fp16_graph(fp32_path, output_dir, args)
        if args.precision == "fp16":
            # TensorRT 11 builds strongly typed only: the FP16 graph is what makes the engine FP16.
            onnx_for_engine = Path(summary["fp16"]["fp16_onnx"])

    engine = _engine_path(args, output_dir, onnx_for_engine)
    summary["onnx_for_engine"] = str(onnx_for_engine)
    summary["cost"] = _cost(onnx_for_engine, args.precision)
    summary["target_command"] = target_command(args, onnx_for_engine, engine)
    available, reason = tensorrt_status()
    if available:
        summary["engine"] = _build(args, onnx_for_engine, engine, output_dir, reason)
    else:
        summary["engine"] = {"path": None, "reason": reason}
        LOG.info(f"no engine built here: {reason}")
        LOG.info(f"on the target (Jetson), run: {summary['target_command']}")
    summary["seconds"] = round(time.perf_counter() - started, 1)
    # A prepared graph's build (the target command) writes its own summary, so running it on the
    # workstation keeps the workstation summary's accuracy figures.
    summary_name = f"{engine.stem}.target.build.json" if prepared else f"{engine.stem}.build.json"
    summary_path = write_json_atomic(output_dir / summary_name, summary)
    LOG.info(f"summary: {summary_path}")
    if not available and args.require_engine:
        raise ExportError(f"--require-engine: {reason}")
    if not budget_met:
        LOG.warning("accuracy budget NOT met on the held-out pairs: see held_out, kept_high_precision and sensitivity "
                    f"in {summary_path}; calibrate on more pairs (--calib-count) or loosen --accuracy-budget")
        return 1
    return 0


def entry() -> int:
    return run_cli(main)
