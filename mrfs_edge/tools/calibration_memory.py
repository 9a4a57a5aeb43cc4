"""Time and peak memory of each INT8 calibration phase, for the demo B0 or a seeded B4 (issue 13).

    python benchmarks/calibration_memory.py                       # demo B0 at 480x640, the default run's settings
    OMP_NUM_THREADS=1 python benchmarks/calibration_memory.py --variant b4 --threads 1

The FP32 ONNX is made first in a child process (the demo model's cached export, or a seeded
MRFS-B4 checkpoint with the spec's widths, decoder 512 and 9 classes, exported here), so the
figures printed afterwards are the calibration's alone: per phase (ranges, Q/DQ, sensitivity,
selection, Q/DQ model, held-out scoring) its wall time and peak resident memory, then the
calibrating process's peak. ``--json`` also writes them with the calibration summary's figures.
"""
from __future__ import annotations

import argparse
import multiprocessing
import resource
import tempfile
import time
from pathlib import Path

from mrfs_edge.core.args import positive_int
from mrfs_edge.core.cli import CliParser, run_cli
from mrfs_edge.core.errors import ExportError
from mrfs_edge.core.files import write_json_atomic
from mrfs_edge.core.memory import peak_rss_bytes

VARIANTS = {"b0": ("mit_b0", 9, 256), "b4": ("mit_b4", 9, 512)}


def seeded_checkpoint(path: Path, variant: str, seed: int) -> Path:
    """An MRFS checkpoint in the authors' format with PyTorch's default initialisation, seeded.

    Random weights give the graph, the shapes and the activation sizes of a real checkpoint of
    that variant, which is what memory and time depend on (not the accuracy figures).
    """
    import torch

    from mrfs_edge.model import MRFS, ModelConfig, save_checkpoint

    torch.manual_seed(seed)
    return save_checkpoint(path, MRFS(ModelConfig(*VARIANTS[variant])).eval())


def _export(variant: str, height: int, width: int, seed: int, target: str) -> None:
    """In a child process: the FP32 ONNX of ``variant`` at ``target``."""
    import torch

    torch.set_num_threads(1)
    from mrfs_edge.core.export_options import ExportOptions
    from mrfs_edge.export import export_onnx

    if variant == "b0":
        from mrfs_edge.assets import DEMO_CHECKPOINT
        checkpoint = DEMO_CHECKPOINT
    else:
        checkpoint = seeded_checkpoint(Path(target).with_suffix(".pth"), variant, seed)
    export_onnx(checkpoint, target, ExportOptions(height=height, width=width, parity_pairs=1))


def prepare_onnx(args: argparse.Namespace, work: Path) -> tuple[Path, dict[str, float]]:
    """The FP32 ONNX to calibrate and what making it cost (in a child process, not counted below)."""
    if args.onnx:
        return args.onnx, {}
    target = work / f"mrfs_{args.variant}_{args.height}x{args.width}.onnx"
    started = time.perf_counter()
    child = multiprocessing.get_context("spawn").Process(
        target=_export, args=(args.variant, args.height, args.width, args.seed, str(target)))
    child.start()
    child.join()
    if child.exitcode != 0:
        raise ExportError(f"exporting a seeded {args.variant} failed (exit {child.exitcode}): see the lines above")
    peak = peak_rss_bytes(resource.RUSAGE_CHILDREN)
    return target, {"seconds": round(time.perf_counter() - started, 1), "peak_rss_mb": round(peak / 2 ** 20)}


def build_parser() -> argparse.ArgumentParser:
    p = CliParser(prog="calibration_memory.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--variant", choices=sorted(VARIANTS), default="b0",
                   help="b0: the bundled demo checkpoint; b4: a seeded random MRFS-B4 (default b0)")
    p.add_argument("--onnx", type=Path, help="calibrate this FP32 ONNX instead of exporting --variant")
    p.add_argument("--height", type=positive_int, default=480)
    p.add_argument("--width", type=positive_int, default=640)
    p.add_argument("--seed", type=int, default=0, help="seed of the random B4 weights")
    p.add_argument("--calib-count", type=positive_int, default=16, help="calibration pairs (the default run's 16)")
    p.add_argument("--sensitivity-pairs", type=positive_int, default=4)
    p.add_argument("--no-mixed-precision", dest="mixed_precision", action="store_false")
    p.add_argument("--quantize-attention", action="store_true")
    p.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (0: its default)")
    p.add_argument("--work-dir", type=Path, help="where the ONNX files go (default: a temporary folder)")
    p.add_argument("--json", type=Path, help="also write the figures here")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="calibration_memory.") as scratch:
        work = args.work_dir or Path(scratch)
        work.mkdir(parents=True, exist_ok=True)
        fp32, export = prepare_onnx(args, work)
        from mrfs_edge.assets import CALIB_SPLIT, EVAL_SPLIT, SAMPLES
        from mrfs_edge.calibration.options import Budget
        from mrfs_edge.calibration.pipeline import CalibrationConfig, calibrate
        from mrfs_edge.io.pairs import PairFolder

        config = CalibrationConfig(count=args.calib_count, mixed_precision=args.mixed_precision,
                                   sensitivity_pairs=args.sensitivity_pairs, quantize_attention=args.quantize_attention,
                                   budget=Budget(), threads=args.threads)
        summary = calibrate(fp32, work / "int8", PairFolder(SAMPLES, CALIB_SPLIT), config,
                            PairFolder(SAMPLES, EVAL_SPLIT)).summary
    peak = peak_rss_bytes()
    print(f"\n{args.onnx or args.variant} at {args.height}x{args.width}, {summary['calibration']['pairs']} calibration "
          f"pairs, {args.threads or 'default'} ORT threads")
    if export:
        print(f"{'export (child)':<16} {export['seconds']:>8.1f} s {'':>10} {export['peak_rss_mb'] / 1024:>7.2f} GB")
    print(f"{'phase':<16} {'wall':>10} {'CPU':>10} {'peak RSS':>10}")
    for name, phase in summary["phases"].items():
        print(f"{name:<16} {phase['seconds']:>8.1f} s {phase['cpu_seconds']:>8.1f} s {phase['peak_rss_mb'] / 1024:>7.2f} GB")
    print(f"{'calibration':<16} {summary['seconds']:>8.1f} s {summary['cpu_seconds']:>8.1f} s {peak / 2 ** 30:>7.2f} GB "
          "(this process's peak)")
    held = summary["held_out"] or {}
    print(f"INT8: {100 * summary['int8_weighted_mac_fraction']:.1f}% of the weighted MACs, "
          f"{100 * summary['int8_mac_fraction']:.1f}% of all; kept high: {summary['kept_high_precision'] or 'none'}; "
          f"held-out agreement {100 * held.get('pixel_agreement', float('nan')):.2f}%, "
          f"PSNR {held.get('fused_psnr', float('nan')):.1f} dB, mIoU drop {held.get('miou_drop', float('nan')):.2f} "
          f"points; budget met: {summary['budget_met']}")
    if args.json:
        write_json_atomic(args.json, {"variant": None if args.onnx else args.variant, "onnx": str(args.onnx or ""), "height": args.height,
                                         "width": args.width, "threads": args.threads, "export": export,
                                         "peak_rss_mb": round(peak / 2 ** 20), **{k: summary[k] for k in (
                                             "phases", "seconds", "cpu_seconds", "int8_weighted_mac_fraction", "int8_mac_fraction",
                                             "kept_high_precision", "held_out", "budget_met", "calibration_pairs_check",
                                             "quantize_attention")}})
    return 0


def entry() -> int:
    """Console script and benchmarks/calibration_memory.py: the CLI base's errors and exit statuses."""
    return run_cli(main)
