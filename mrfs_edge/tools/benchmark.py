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
from typing import Any

from mrfs_edge.bench.modes import ALIASES, MODES
from mrfs_edge.core.args import (
    check_readable_dir,
    help_text,
    non_negative_int,
    positive_int,
    readable_file,
    writable_dir,
    writable_file,
)
from mrfs_edge.core.cli import CliParser, run_cli
from mrfs_edge.tools.defaults import checkpoint_or_default, data_or_default

LOG = logging.getLogger(__name__)
EPILOG = """exit status:
  0    every mode was measured (modes left to the default may be skipped where they cannot run)
  2    a bad argument, path or input, reported before anything is measured
  3    a mode asked for by name (--modes, --engine) was skipped or failed: the report is still
       written, the reason is under "Not measured" in report.md and in the row's reasons
  1    an unexpected error; 130 / 143 interrupted by SIGINT / SIGTERM"""
EXIT_MODE_FAILED = 3


def build_parser() -> argparse.ArgumentParser:
    p = CliParser(prog="run.py", description=help_text(__doc__), epilog=EPILOG,
                  formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=readable_file, help="MRFS checkpoint (default: the bundled demo model)")
    p.add_argument("--onnx", type=readable_file,
                   help="FP32 ONNX of that checkpoint to use instead of exporting it (without PyTorch: the "
                        "reference; default there: the FP32 ONNX beside --engine)")
    p.add_argument("--data",
                   help="paired folder (vi/ ir/ [label/], ...); without labels the ground-truth metrics are "
                        "skipped (default: the bundled labelled evaluation pairs)")
    p.add_argument("--split", help="split list inside --data (default: every pair of the folder)")
    p.add_argument("--modes", nargs="+", metavar="MODE",
                   help=f"subset of {', '.join(MODES)} (short forms {', '.join(ALIASES)}); default: all "
                        "(a row that cannot run here is skipped with the reason; the reference is always added)")
    p.add_argument("--runs", type=positive_int, default=10, help="timed runs per batch size (default 10)")
    p.add_argument("--warmup", type=non_negative_int, default=2, help="untimed runs first (default 2)")
    p.add_argument("--batch", type=positive_int, nargs="+", default=[1], metavar="N",
                   help="batch sizes to time (default 1; above 1 the ONNX is exported with a dynamic batch)")
    p.add_argument("--threads", type=positive_int, default=os.cpu_count() or 1,
                   help="CPU threads for PyTorch and ONNX Runtime alike (default: all cores)")
    p.add_argument("--torch-device", choices=("cpu", "cuda"), default="cpu",
                   help="where the PyTorch reference row runs (default cpu; cuda on a GPU machine or a Jetson)")
    p.add_argument("--qdq", type=readable_file, help="calibrated Q/DQ ONNX to run as the INT8 row (e.g. build/*.int8.onnx from "
                                 "export/build_engine.py --int8); default: calibrate once into --output-dir")
    p.add_argument("--engine", type=readable_file, action="append", default=[], metavar="PATH",
                   help="TensorRT engine (with its .json sidecar) to run as the row of its precision; repeatable")
    p.add_argument("--save-reference", type=writable_file, metavar="REF.npz",
                   help="write the reference row's outputs per pair here, for --reference on a machine without PyTorch")
    p.add_argument("--reference", type=readable_file, metavar="REF.npz",
                   help="compare with outputs saved by --save-reference instead of running a reference model here")
    p.add_argument("--grid-pairs", type=non_negative_int, default=3, help="pairs in each mode's grid_<mode>.png: the most disagreeing, with a day and a night pair (default 3)")
    p.add_argument("--output-dir", type=writable_dir, default="build/benchmark",
                   help="where report.md/json, plots and models go (checked before measuring)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    p.add_argument("--compare", type=readable_file, nargs=2, metavar=("A.json", "B.json"),
                   help="print B − A for every figure of two reports (also written to <output-dir>/compare.md)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    output_dir = args.output_dir
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
    data, split = data_or_default(args.data and check_readable_dir(args.data, "--data"), what="--data")
    engines = engine_modes(args.engine)
    modes = parse_modes(args.modes + list(engines) if args.modes else None)   # a given engine always gets its row
    config = BenchConfig(checkpoint=checkpoint, data=data, split=Path(args.split) if args.split else split,
                         output_dir=output_dir, modes=modes, runs=args.runs, warmup=args.warmup, batches=args.batch,
                         threads=args.threads, torch_device=args.torch_device, onnx=args.onnx,
                         qdq=args.qdq, engines=engines, reference=args.reference, save_reference=args.save_reference,
                         grid_pairs=args.grid_pairs, progress=args.progress)
    result = run_benchmark(config)
    text = markdown(result.report)
    summary = text[text.index("**ONNX Runtime") if "**ONNX Runtime" in text else text.index("## Summary"):
                   text.index("## Latency")]
    print(summary.rstrip())
    LOG.info("wrote " + ", ".join(str(p) for p in result.paths.values()))
    return _asked_status(result.report["rows"], set(modes or ()) | set(engines))


def _asked_status(rows: list[dict[str, Any]], asked: set[str]) -> int:
    """:data:`EXIT_MODE_FAILED` when a mode asked for by name has no measurement, each named in one line.

    A row without latency is one that was skipped or failed (the harness records why in its reasons);
    a mode left to the default may be skipped where it cannot run, one the user named may not.
    """
    missing = [row for row in rows if row["mode"] in asked and row["latency"] is None]
    for row in missing:
        LOG.error(f"{row['mode']} was asked for but not measured: {row['reasons'].get('latency') or 'no reason recorded'}")
    return EXIT_MODE_FAILED if missing else 0


def entry() -> int:
    return run_cli(main)
