"""``python export/export_onnx.py``: checkpoint → checked, self-describing ONNX file."""
from __future__ import annotations

import argparse
from pathlib import Path

from mrfs_edge.core.args import (
    MAX_SIDE,
    ArgumentCheckError,
    check_image_side,
    check_writable_file,
    help_text,
    positive_float,
    positive_int,
    readable_dir,
    writable_file,
)
from mrfs_edge.core.cli import CliParser, run_cli
from mrfs_edge.core.contract import SEG_OUTPUTS, TRT_COMPAT_CHOICES
from mrfs_edge.core.errors import MrfsEdgeError, needs_extra
from mrfs_edge.core.export_options import DYNAMIC_CHOICES, ExportOptions, parse_shape
from mrfs_edge.tools.defaults import checkpoint_or_default


def add_export_arguments(p: argparse.ArgumentParser) -> None:
    """Flags shared with build_engine.py, which exports first when given a checkpoint."""
    g = p.add_argument_group("export")
    g.add_argument("--checkpoint",
                   help="MRFS checkpoint in the authors' format (default: bundled demo model)")
    g.add_argument("--height", type=int, default=480,
                   help=f"input height, a multiple of 32 up to {MAX_SIDE} (default 480)")
    g.add_argument("--width", type=int, default=640,
                   help=f"input width, a multiple of 32 up to {MAX_SIDE} (default 640)")
    g.add_argument("--batch", type=positive_int, default=1, help="static batch size of the graph (default 1)")
    g.add_argument("--dynamic", choices=DYNAMIC_CHOICES, help="dynamic axes: batch, hw (height and width) or both")
    g.add_argument("--min-shape", type=parse_shape, metavar="NxHxW", help="dynamic profile minimum")
    g.add_argument("--opt-shape", type=parse_shape, metavar="NxHxW", help="dynamic profile optimum (default: static)")
    g.add_argument("--max-shape", type=parse_shape, metavar="NxHxW", help="dynamic profile maximum")
    g.add_argument("--opset", type=positive_int, default=17,
                   help="ONNX opset (default 17; --trt-compat 8.5 lowers it to 16)")
    g.add_argument("--seg-output", choices=SEG_OUTPUTS, default="logits",
                   help="labels: ArgMax inside the graph, int32 N×H×W (30× less to copy off the GPU)")
    g.add_argument("--uint8-io", action="store_true", help="uint8 NHWC frames in, uint8 NHWC fused out")
    g.add_argument("--ir-channels", type=int, choices=(1, 3), default=1,
                   help="infrared input channels: 1 (thermal) or 3 (a colour-mapped camera); default 1")
    g.add_argument("--trt-compat", choices=TRT_COMPAT_CHOICES,
                   help="8.5: decompose LayerNorm into primitive ops (JetPack 5 parsers)")
    g.add_argument("--no-simplify", dest="simplify", action="store_false",
                   help="keep the traced graph as it is (no onnxslim pass)")
    g.add_argument("--no-rewrite", dest="rewrite", action="store_false",
                   help="export the authors' network literally instead of its exact deploy form (segmentation "
                        "head folded per branch, one infrared channel: about 20%% fewer multiply-adds for B0)")
    g.add_argument("--tolerance", type=positive_float, default=1e-3,
                   help="max |Δ| ONNX Runtime vs PyTorch (default 1e-3)")
    g.add_argument("--parity-data", type=readable_dir,
                   help="paired folder for the parity check (default: bundled samples)")
    g.add_argument("--parity-split", help="split list inside --parity-data")


def check_parity_data(args: argparse.Namespace) -> None:
    """Open ``--parity-data`` (and its split) now, so a folder without pairs is one line before the
    PyTorch import and tracing, not after them; only the index is read, no image."""
    if args.parity_data is not None:
        from mrfs_edge.io.pairs import PairFolder  # OpenCV: not needed for --help

        try:
            PairFolder(args.parity_data, args.parity_split)
        except MrfsEdgeError as exc:
            raise ArgumentCheckError(f"--parity-data: {exc}") from exc
    elif args.parity_split is not None:
        raise ArgumentCheckError("--parity-split needs --parity-data (the bundled samples have their own split)")


def options_from_args(args: argparse.Namespace) -> ExportOptions:
    """The export options of the flags; a side above 8192 or not a multiple of 32 is a one-line error here."""
    check_image_side(args.height, "--height")
    check_image_side(args.width, "--width")
    return ExportOptions(height=args.height, width=args.width, batch=args.batch, opset=args.opset,
                         dynamic=args.dynamic, min_shape=args.min_shape, opt_shape=args.opt_shape,
                         max_shape=args.max_shape, seg_output=args.seg_output, uint8_io=args.uint8_io,
                         ir_channels=args.ir_channels, trt_compat=args.trt_compat, simplify=args.simplify,
                         rewrite=args.rewrite, tolerance=args.tolerance)


def default_onnx_name(options: ExportOptions, checkpoint: Path) -> Path:
    parts = [checkpoint.stem, f"{options.height}x{options.width}"]
    parts += [f"b{options.batch}"] if options.batch != 1 else []
    parts += [f"dyn-{options.dynamic}"] if options.dynamic else []
    parts += ["labels"] if options.seg_output == "labels" else []
    parts += ["u8"] if options.uint8_io else []
    parts += [f"trt{options.trt_compat}"] if options.trt_compat else []
    parts += [] if options.rewrite else ["literal"]
    return Path("build") / ("_".join(parts) + ".onnx")


def build_parser() -> argparse.ArgumentParser:
    p = CliParser(prog="export_onnx.py", description=help_text(__doc__))
    add_export_arguments(p)
    p.add_argument("--output", type=writable_file, help="ONNX path (default: build/<checkpoint>_<H>x<W>[...].onnx)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    options = options_from_args(args)   # every check before torch is imported: errors come in a second
    checkpoint = checkpoint_or_default(args.checkpoint)
    if not checkpoint.is_file():
        raise ArgumentCheckError(f"{checkpoint}: no such file")
    output = args.output or check_writable_file(default_onnx_name(options, checkpoint), "--output")
    check_parity_data(args)
    with needs_extra("ONNX export"):
        from mrfs_edge.export.onnx_export import export_onnx  # imports torch

    export_onnx(checkpoint, output, options, args.parity_data, args.parity_split)
    return 0


def entry() -> int:
    return run_cli(main)
