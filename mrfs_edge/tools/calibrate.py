"""``python calibration/calibrate.py``: FP32 ONNX → calibrated mixed-precision Q/DQ ONNX (CPU)."""
from __future__ import annotations

import argparse
import logging
from typing import get_args

from mrfs_edge.assets import CALIB_SPLIT, EVAL_SPLIT, SAMPLES
from mrfs_edge.calibration.options import CALIBRATION_METHODS, Budget, Quantizer
from mrfs_edge.core.args import help_text, positive_int, readable_dir, readable_file, writable_dir
from mrfs_edge.core.cli import CliParser, run_cli
from mrfs_edge.core.onnx_scan import check_onnx_model
from mrfs_edge.io.pairs import PairFolder

LOG = logging.getLogger(__name__)


BUDGET_KEYS = {"agreement": "min_agreement", "psnr": "min_psnr", "miou": "max_miou_drop",
               "int8": "min_int8_mac_fraction"}


def parse_budget(text: str) -> Budget:
    """``"agreement=0.995,psnr=40,miou=0.3,int8=0.95"`` → :class:`Budget` (keys optional)."""
    budget = Budget()
    for item in filter(None, (p.strip() for p in text.split(","))):
        key, _, value = item.partition("=")
        field = BUDGET_KEYS.get(key)
        if field is None or not value:
            raise ValueError(f"--accuracy-budget item {item!r}: use agreement=F, psnr=DB, miou=POINTS, int8=F")
        setattr(budget, field, float(value))
    return budget


def add_calibration_arguments(p: argparse.ArgumentParser) -> None:
    """Flags shared with build_engine.py."""
    g = p.add_argument_group("INT8 calibration")
    g.add_argument("--calib-dir", type=readable_dir, help="paired folder to calibrate on (default: bundled calibration pairs)")
    g.add_argument("--calib-split", help="split list inside --calib-dir")
    g.add_argument("--calib-count", type=positive_int, default=16, help="pairs to calibrate on (stratified; default 16)")
    g.add_argument("--calib-method", choices=CALIBRATION_METHODS,
                   help="activation ranges: percentile 99.999 %% (default for Q/DQ: robust to the long tails of "
                        "attention and GELU outputs), entropy (KL), max; implicit TensorRT calibration: entropy "
                        "(default) or max")
    g.add_argument("--quantizer", choices=get_args(Quantizer), default="auto",
                   help="Q/DQ producer: ModelOpt's ONNX PTQ when installed (auto), else builtin (streamed ranges, "
                        "Q/DQ placed where TensorRT fuses it)")
    # Two flags, not argparse.BooleanOptionalAction: that needs Python 3.9, and build_engine.py (which
    # shares these arguments) must parse on JetPack 5's Python 3.8.
    g.add_argument("--quantize-attention", action="store_true", default=False,
                   help="INT8 for the attention products q·kᵀ and attn·v too: every multiply-add in INT8 (default "
                        "off: on the demo model it costs about 0.3 points of held-out pixel agreement)")
    g.add_argument("--no-quantize-attention", dest="quantize_attention", action="store_false",
                   help="keep the attention products in float (the default)")
    budget = Budget()
    g.add_argument("--accuracy-budget", type=parse_budget, default=budget,
                   metavar=f"agreement={budget.min_agreement},psnr={budget.min_psnr:g},miou={budget.max_miou_drop},"
                           f"int8={budget.min_int8_mac_fraction}",
                   help=f"floors vs FP32 on the held-out pairs (default pixel agreement {budget.min_agreement}, fused "
                        f"PSNR {budget.min_psnr:g} dB, mIoU drop at most {budget.max_miou_drop} points) and the INT8 "
                        f"share of the weighted layers' MACs (default {budget.min_int8_mac_fraction}); when every "
                        "layer in INT8 misses them, a per-block sensitivity search keeps the fewest blocks high")
    g.add_argument("--no-mixed-precision", dest="mixed_precision", action="store_false",
                   help="quantise every layer (no sensitivity search when the budget is missed)")
    g.add_argument("--sensitivity-pairs", type=positive_int, default=4, help="calibration pairs scored per variant (default 4)")
    g.add_argument("--eval-dir", type=readable_dir, help="held-out labelled pairs for the summary (default: bundled eval pairs)")
    g.add_argument("--eval-split", help="split list inside --eval-dir")


def eval_folder_from_args(args: argparse.Namespace) -> PairFolder:
    """The held-out pairs every summary's figures come from (default: the bundled eval pairs)."""
    return PairFolder(args.eval_dir, args.eval_split) if args.eval_dir else PairFolder(SAMPLES, EVAL_SPLIT)


def folders_from_args(args: argparse.Namespace) -> tuple[PairFolder, PairFolder]:
    """``(calibration pairs, held-out pairs)``."""
    if args.calib_dir:
        calib = PairFolder(args.calib_dir, args.calib_split)
    else:
        LOG.info(f"no --calib-dir given: calibrating on the bundled pairs in {CALIB_SPLIT.name}")
        calib = PairFolder(SAMPLES, CALIB_SPLIT)
    return calib, eval_folder_from_args(args)


def config_from_args(args: argparse.Namespace):
    from mrfs_edge.calibration.pipeline import CalibrationConfig

    return CalibrationConfig(count=args.calib_count, method=args.calib_method or "percentile", quantizer=args.quantizer,
                             mixed_precision=args.mixed_precision, sensitivity_pairs=args.sensitivity_pairs,
                             quantize_attention=args.quantize_attention, budget=args.accuracy_budget)


def build_parser() -> argparse.ArgumentParser:
    p = CliParser(prog="calibrate.py", description=help_text(__doc__))
    p.add_argument("--onnx", type=readable_file, help="FP32 ONNX exported by export_onnx.py (default: the demo model)")
    p.add_argument("--output-dir", type=writable_dir, default="build",
                   help="where the Q/DQ model, range table and summary go (created when they are written)")
    add_calibration_arguments(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    calib, evaluation = folders_from_args(args)   # the pair folders are checked before any model work
    if args.onnx:
        check_onnx_model(args.onnx, "--onnx")
    from mrfs_edge.core.errors import needs_extra
    from mrfs_edge.deploy.demo import default_onnx

    with needs_extra("INT8 calibration"):
        from mrfs_edge.calibration.pipeline import calibrate

    onnx_path = args.onnx or default_onnx()   # the demo model is exported (once) only after every check
    artifacts = calibrate(onnx_path, args.output_dir, calib, config_from_args(args), evaluation)
    return 0 if artifacts.summary["budget_met"] else 1


def entry() -> int:
    return run_cli(main)
