"""GMACs of every MRFS variant per input size: literal network vs exact deploy form, weighted vs attention.

Each variant (spec decoder widths and classes, random weights: the count depends on shapes only)
is traced once per form with dynamic height and width at a small size; tracing B5 at 720×1280
would take minutes and gigabytes for nothing. Each size's tensor shapes then come from ONNX
Runtime's symbolic shape inference with the inputs fixed (``export.cost_report.static_copy``)
and the multiply-adds from ``metrics.cost.graph_costs``, the counter the export and calibration
use. The deploy form's analytic savings (``model.deploy_form.rewrite_savings``) are checked
against the difference of the two graph counts at every size.

Sides that are not multiples of 32 are counted at the padded size the runtime feeds (600×800
runs as 608×800, 720×1280 as 736×1280), as the authors' evaluation pads.

    python benchmarks/gmacs.py [--variants B0 B2 B4 B5] [--json build/gmacs.json] [--markdown gmacs.md]
"""
from __future__ import annotations

import argparse
import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path

from mrfs_edge.core.cli import CliParser, run_cli
from mrfs_edge.core.files import atomic_path, write_json_atomic

LOG = logging.getLogger(__name__)

# The spec's four configurations: (backbone, classes, decoder width).
VARIANTS = {"B0": ("mit_b0", 9, 256), "B2": ("mit_b2", 15, 512), "B4": ("mit_b4", 9, 512), "B5": ("mit_b5", 5, 768)}
SIZES = ((480, 640), (600, 800), (720, 1280))
TRACE_SIZE = (64, 96)


def padded(side: int) -> int:
    return -(-side // 32) * 32


def trace(config: tuple[str, int, int], rewrite: bool, folder: Path):
    """One dynamic-H×W graph of ``config`` with random weights (deploy form if ``rewrite``)."""
    import torch

    from mrfs_edge.core.export_options import ExportOptions
    from mrfs_edge.export.onnx_export import trace_to_onnx
    from mrfs_edge.model import MRFS, ModelConfig
    from mrfs_edge.model.contract import build_contract

    torch.manual_seed(0)
    model = MRFS(ModelConfig(*config)).eval()
    options = ExportOptions(height=TRACE_SIZE[0], width=TRACE_SIZE[1], dynamic="hw", rewrite=rewrite)
    contract = build_contract(model, options, "")
    return trace_to_onnx(model, contract, options, folder / f"{config[0]}_{rewrite}.onnx"), contract


def count(graph, contract, height: int, width: int) -> dict[str, int]:
    from mrfs_edge.export.cost_report import split_macs, static_copy
    from mrfs_edge.metrics.cost import graph_costs

    costs = graph_costs(static_copy(graph, contract.input_shapes(height=height, width=width)))
    weighted, attention = split_macs(costs)
    return {"weighted": weighted, "attention": attention, "total": weighted + attention}


def measure(variants: Sequence[str]) -> list[dict[str, object]]:
    from mrfs_edge.core.log import progress
    from mrfs_edge.model import ModelConfig
    from mrfs_edge.model.deploy_form import rewrite_savings

    rows = []
    with tempfile.TemporaryDirectory(prefix="mrfs_gmacs_") as tmp:
        for name in progress(variants, desc="variants", unit="variant"):
            config = VARIANTS[name]
            graphs = {form: trace(config, form == "deploy", Path(tmp)) for form in ("literal", "deploy")}
            for height, width in SIZES:
                run_h, run_w = padded(height), padded(width)
                figures = {form: count(graph, contract, run_h, run_w) for form, (graph, contract) in graphs.items()}
                saved = rewrite_savings(ModelConfig(*config), run_h, run_w).total
                difference = figures["literal"]["total"] - figures["deploy"]["total"]
                if difference != saved:
                    raise RuntimeError(f"{name} {run_h}x{run_w}: graphs differ by {difference} MACs, "
                                       f"rewrite_savings says {saved}")
                rows.append({"variant": name, "backbone": config[0], "classes": config[1], "decoder": config[2],
                             "size": [height, width], "run_size": [run_h, run_w], **figures})
            for path in Path(tmp).iterdir():
                path.unlink()
    return rows


def markdown(rows: list[dict[str, object]]) -> str:
    header = "| variant | input (run at) | literal GMACs (weighted + attention) | deploy GMACs (weighted + attention) | saved |"
    lines = [header, "| --- | --- | --- | --- | --- |"]
    for row in rows:
        lit, dep = row["literal"], row["deploy"]
        h, w = row["size"]
        rh, rw = row["run_size"]
        size = f"{h}×{w}" + ("" if (h, w) == (rh, rw) else f" ({rh}×{rw})")
        lines.append(f"| {row['variant']} ({row['classes']} classes, decoder {row['decoder']}) | {size} | "
                     f"{lit['total'] / 1e9:.2f} ({lit['weighted'] / 1e9:.2f} + {lit['attention'] / 1e9:.2f}) | "
                     f"{dep['total'] / 1e9:.2f} ({dep['weighted'] / 1e9:.2f} + {dep['attention'] / 1e9:.2f}) | "
                     f"{100 * (1 - dep['total'] / lit['total']):.1f}% |")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = CliParser(prog="gmacs.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--variants", nargs="+", choices=tuple(VARIANTS), default=list(VARIANTS),
                   help="variants to count (default: all four)")
    p.add_argument("--json", type=Path, default=Path("build") / "gmacs.json", help="JSON output (default build/gmacs.json)")
    p.add_argument("--markdown", type=Path, help="also write the table to this Markdown file")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import torch

    torch.set_num_threads(1)
    rows = measure(args.variants)
    table = markdown(rows)
    print(table)
    write_json_atomic(args.json, {"sizes_note": "sides padded to multiples of 32 (run_size)", "rows": rows})
    LOG.info(f"wrote {args.json}")
    if args.markdown:
        with atomic_path(args.markdown) as tmp:
            tmp.write_text(table + "\n")
    return 0


def entry() -> int:
    """Console script and benchmarks/gmacs.py: the CLI base's errors and exit statuses."""
    return run_cli(main)
