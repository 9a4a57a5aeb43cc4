"""``python benchmarks/run.py``: every precision and backend timed and scored on the same pairs.

Default: the bundled demo checkpoint on the bundled labelled pairs, all modes (TensorRT rows
only where TensorRT and a GPU are present), report in build/benchmark/. ``--compare A.json
B.json`` prints the differences of two reports instead (e.g. host emulation vs the Jetson run).

Reference (what agreement and drops are measured against): PyTorch FP32 eager where PyTorch is
installed; without it (a Jetson) the FP32 ONNX in ONNX Runtime, from --onnx or found beside the
--engine (build/<model>.onnx next to build/<model>.int8.engine); or --reference ref.npz, the
outputs a workstation run saved with --save-reference ref.npz.
"""
from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from mrfs_edge.bench.modes import ALIASES, MODES
from mrfs_edge.core.cli import CliParser, run_cli
from mrfs_edge.tools.defaults import checkpoint_or_default, data_or_default

LOG = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    p = CliParser(prog="run.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", help="MRFS checkpoint (default: the bundled demo model)")
    p.add_argument("--onnx", help="FP32 ONNX of that checkpoint to use instead of exporting it (without "
                                  "PyTorch: the reference; default there: the FP32 ONNX beside --engine)")
    p.add_argument("--data", help="paired folder (vi/ ir/ [label/], ...); without labels the ground-truth "
                                  "metrics are skipped (default: the bundled labelled evaluation pairs)")
    p.add_argument("--split", help="split list inside --data (default: every pair of the folder)")
    p.add_argument("--modes", nargs="+", metavar="MODE",
                   help=f"subset of {', '.join(MODES)} (short forms {', '.join(ALIASES)}); default: all "
                        "(a row that cannot run here is skipped with the reason; the reference is always added)")
    p.add_argument("--runs", type=int, default=10, help="timed runs per batch size (default 10)")
    p.add_argument("--warmup", type=int, default=2, help="untimed runs first (default 2)")
    p.add_argument("--batch", type=int, nargs="+", default=[1], metavar="N",
                   help="batch sizes to time (default 1; above 1 the ONNX is exported with a dynamic batch)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                   help="CPU threads for PyTorch and ONNX Runtime alike (default: all cores)")
    p.add_argument("--torch-device", choices=("cpu", "cuda"), default="cpu",
                   help="where the PyTorch reference row runs (default cpu; cuda on a GPU machine or a Jetson)")
    p.add_argument("--qdq", help="calibrated Q/DQ ONNX to run as the INT8 row (e.g. build/*.int8.onnx from "
                                 "export/build_engine.py --int8); default: calibrate once into --output-dir")
    p.add_argument("--engine", action="append", default=[], metavar="PATH",
                   help="TensorRT engine (with its .json sidecar) to run as the row of its precision; repeatable")
    p.add_argument("--save-reference", metavar="REF.npz",
                   help="write the reference row's outputs per pair here, for --reference on a machine without PyTorch")
    p.add_argument("--reference", metavar="REF.npz",
                   help="compare with outputs saved by --save-reference instead of running a reference model here")
    p.add_argument("--grid-pairs", type=int, default=3, help="pairs shown in grid.png (default 3)")
    p.add_argument("--output-dir", default="build/benchmark", help="where report.md/json, plots and models go")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    p.add_argument("--compare", nargs=2, metavar=("A.json", "B.json"),
                   help="print B − A for every figure of two reports (also written to <output-dir>/compare.md)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    output_dir = Path(args.output_dir)
    if args.compare:
        from mrfs_edge.bench.compare import compare_files

        print(compare_files(*args.compare, output=output_dir / "compare.md"))
        return 0
    from mrfs_edge.bench.harness import BenchConfig, run_benchmark
    from mrfs_edge.bench.modes import engine_modes, parse_modes
    from mrfs_edge.bench.report import markdown

    checkpoint = checkpoint_or_default(args.checkpoint)
    if not checkpoint.is_file():
        raise FileNotFoundError(f"{checkpoint}: no such checkpoint")
    data, split = data_or_default(args.data, what="--data")
    engines = engine_modes(args.engine)
    modes = parse_modes(args.modes + list(engines) if args.modes else None)   # a given engine always gets its row
    config = BenchConfig(checkpoint=checkpoint, data=data, split=Path(args.split) if args.split else split,
                         output_dir=output_dir, modes=modes, runs=args.runs, warmup=args.warmup, batches=args.batch,
                         threads=args.threads, torch_device=args.torch_device, onnx=Path(args.onnx) if args.onnx else None,
                         qdq=Path(args.qdq) if args.qdq else None, engines=engines,
                         reference=Path(args.reference) if args.reference else None,
                         save_reference=Path(args.save_reference) if args.save_reference else None,
                         grid_pairs=args.grid_pairs, progress=args.progress)
    result = run_benchmark(config)
    text = markdown(result.report)
    summary = text[text.index("**ONNX Runtime") if "**ONNX Runtime" in text else text.index("## Summary"):
                   text.index("## Latency")]
    print(summary.rstrip())
    LOG.info("wrote " + ", ".join(str(p) for p in result.paths.values()))
    return 0


def entry() -> int:
    return run_cli(main)
