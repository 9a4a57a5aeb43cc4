"""The measured part of a model card: mIoU and per-class IoU of a checkpoint on labelled sets.

``python -m mrfs_edge.tools.model_card --checkpoint X --card MODEL_CARD.md --set NAME=FOLDER[:SPLIT] ...``
re-evaluates the checkpoint and rewrites only the block between the card's result markers, so
the prose (data, recipe, wall time) is written by a person and the figures never are. The block
ends with the figures as JSON, which the tests read to re-check the card against the weights.
"""
from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from pathlib import Path

from mrfs_edge.assets import DEMO_CHECKPOINT, DEMO_MODEL_CARD
from mrfs_edge.core.args import check_writable_file, help_text, readable_file
from mrfs_edge.core.classes import class_names_for
from mrfs_edge.core.cli import CliParser, run_cli
from mrfs_edge.core.files import write_bytes_atomic
from mrfs_edge.evaluation import evaluate_segmentation
from mrfs_edge.io.pairs import PairFolder
from mrfs_edge.metrics.segmentation import SegmentationScore

BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"
_JSON_BLOCK = re.compile(r"```json\n(.*?)\n```", re.DOTALL)
LOG = logging.getLogger(__name__)


def evaluate_checkpoint(checkpoint: str | Path, folder: PairFolder) -> SegmentationScore:
    """The authors' mIoU of ``checkpoint`` (PyTorch, CPU, FP32) over every pair of ``folder``."""
    from mrfs_edge.model import load_checkpoint
    from mrfs_edge.model.inference import torch_infer_fn

    model = load_checkpoint(checkpoint)
    classes = model.config.num_classes
    return evaluate_segmentation(torch_infer_fn(model), folder, classes, class_names_for(classes))


def results_markdown(results: dict[str, dict[str, object]]) -> str:
    """Tables (mIoU, pixel accuracy, per-class IoU per set) followed by the same figures as JSON."""
    names = list(next(iter(results.values()))["iou"])  # type: ignore[call-overload]
    lines = ["| set | pairs | mIoU % | pixel acc % |", "| --- | --- | --- | --- |"]
    for name, r in results.items():
        lines.append(f"| {name} | {r['pairs']} | {100 * r['miou']:.2f} | {100 * r['pixel_accuracy']:.2f} |")
    lines += ["", "| class | " + " | ".join(results) + " |", "| --- |" + " --- |" * len(results)]
    for cls in names:
        cells = []
        for r in results.values():
            iou = r["iou"].get(cls)  # type: ignore[union-attr]
            cells.append("n/a" if iou is None else f"{100 * iou:.1f}")
        lines.append(f"| {cls} | " + " | ".join(cells) + " |")
    return "\n".join(lines + ["", "```json", json.dumps(results, indent=1), "```"])


def card_results(card: str | Path) -> dict[str, dict[str, object]]:
    """The JSON figures recorded in a card's result block."""
    text = Path(card).read_text(encoding="utf-8")
    block = text[text.index(BEGIN):text.index(END)]
    match = _JSON_BLOCK.search(block)
    if match is None:
        raise ValueError(f"{card}: no JSON figures between the result markers")
    return json.loads(match.group(1))


def update_card(card: Path, results: dict[str, dict[str, object]]) -> None:
    text = card.read_text(encoding="utf-8")
    if BEGIN not in text or END not in text:
        raise ValueError(f"{card}: needs the markers {BEGIN} and {END} where the results go")
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    write_bytes_atomic(card, f"{head}{BEGIN}\n{results_markdown(results)}\n{END}{tail}".encode())


def _parse_set(text: str) -> tuple[str, PairFolder]:
    name, _, location = text.partition("=")
    folder, _, split = location.partition(":")
    if not name or not folder:
        raise ValueError(f"--set {text!r}: use NAME=FOLDER[:SPLIT]")
    return name, PairFolder(folder, split or None, require_labels=True)


def build_parser() -> argparse.ArgumentParser:
    p = CliParser(prog="python -m mrfs_edge.tools.model_card", description=help_text(__doc__))
    p.add_argument("--checkpoint", type=readable_file, default=str(DEMO_CHECKPOINT),
                   help="checkpoint to evaluate (default: the bundled demo model)")
    p.add_argument("--card", type=readable_file, default=str(DEMO_MODEL_CARD),
                   help="model card whose result block is rewritten (default: the demo model's card)")
    p.add_argument("--set", dest="sets", action="append", required=True, metavar="NAME=FOLDER[:SPLIT]",
                   help="a labelled set to evaluate on, named as the card shows it; repeatable")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    check_writable_file(args.card, "--card")
    sets = [_parse_set(text) for text in args.sets]   # every folder is indexed before the first evaluation
    results: dict[str, dict[str, object]] = {}
    for name, folder in sets:
        score = evaluate_checkpoint(args.checkpoint, folder)
        results[name] = {"folder": str(folder.root), "pairs": len(folder), **score.as_dict()}
        LOG.info(f"{name}: mIoU {100 * score.miou:.2f}% over {len(folder)} pairs")
    update_card(Path(args.card), results)
    return 0


def entry() -> int:
    return run_cli(main)


if __name__ == "__main__":
    sys.exit(entry())
