"""``python -m mrfs_edge.train``: train or fine-tune MRFS on a paired folder; resumable."""
from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import fields
from pathlib import Path

from mrfs_edge.core.args import (
    ArgumentCheckError,
    check_readable_dir,
    help_text,
    non_negative_int,
    positive_float,
    positive_int,
    readable_file,
    writable_dir,
    writable_file,
)
from mrfs_edge.core.cli import CliParser, command
from mrfs_edge.core.errors import MrfsEdgeError, needs_extra
from mrfs_edge.core.files import write_json_atomic

LOG = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    p = CliParser(prog="python -m mrfs_edge.train", description=help_text(__doc__))
    p.add_argument("--data", required=True, help="paired folder (vi/ir/label, visible/infrared/label, ...)")
    p.add_argument("--train-split", nargs="*", default=[], help="split list(s) to train on (default: all pairs)")
    p.add_argument("--val-split", help="held-out split list for mIoU at the end")
    p.add_argument("--out-dir", type=writable_dir, default="runs/train",
                   help="checkpoints (last.pth), log.jsonl and eval.json (default runs/train)")
    p.add_argument("--init", type=readable_file, help="checkpoint to fine-tune from (authors' format); default: from scratch")
    p.add_argument("--backbone", default="mit_b0", help="SegFormer MiT encoder (default mit_b0)")
    p.add_argument("--num-classes", type=positive_int, default=9, help="segmentation classes (default 9, MFNet)")
    p.add_argument("--decoder-embed-dim", type=positive_int, default=256,
                   help="channels of the decoder head (default 256)")
    p.add_argument("--iterations", type=positive_int, default=10000, help="optimiser steps in all (default 10000)")
    p.add_argument("--batch-size", type=positive_int, default=4, help="pairs per step (default 4)")
    p.add_argument("--lr", type=positive_float, default=6e-4, help="peak learning rate, AdamW (default 6e-4)")
    p.add_argument("--weight-decay", type=float, default=0.01, help="AdamW weight decay (default 0.01)")
    p.add_argument("--warmup", type=non_negative_int, default=300,
                   help="linear warm-up steps before the poly decay (default 300)")
    p.add_argument("--crop", type=positive_int, nargs=2, default=[240, 320], metavar=("H", "W"),
                   help="random crop of each training pair (default 240 320)")
    p.add_argument("--scales", type=positive_float, nargs="+", default=[0.5, 0.75, 1.0, 1.25],
                   help="random rescale factors before the crop (default 0.5 0.75 1.0 1.25)")
    p.add_argument("--no-class-balance", dest="class_balance", action="store_false",
                   help="unweighted cross-entropy instead of class weights from the label frequencies")
    p.add_argument("--balance-c", type=float, default=1.1,
                   help="class weights 1/ln(c + frequency): smaller c weighs rare classes more")
    p.add_argument("--ohem-fraction", type=positive_float, default=1.0,
                   help="fraction of the hardest pixels the loss keeps (default 1.0: all)")
    p.add_argument("--drop-path", type=float, default=0.1, help="stochastic depth rate of the encoder (default 0.1)")
    p.add_argument("--bf16", action="store_true", help="bfloat16 autocast (faster on CPUs with AVX512-BF16)")
    p.add_argument("--threads", type=non_negative_int, default=0, help="PyTorch CPU threads (default 0: all cores)")
    p.add_argument("--seed", type=int, default=0, help="random seed of weights, crops and sampling (default 0)")
    p.add_argument("--save-every", type=positive_int, default=200,
                   help="steps between checkpoints to OUT_DIR/last.pth (default 200)")
    p.add_argument("--eval-every", type=non_negative_int, default=0,
                   help="steps between --val-split evaluations (default 0: only at the end)")
    p.add_argument("--resume", action="store_true", help="continue from OUT_DIR/last.pth if present")
    p.add_argument("--eval-only", action="store_true", help="only evaluate OUT_DIR/last.pth on --val-split")
    p.add_argument("--ship", type=writable_file, metavar="PATH", help="after training, write the weights (float16) to PATH")
    return p


def check_pairs(args: argparse.Namespace) -> None:
    """Index the training and held-out splits of ``--data`` (no image is read), so a wrong folder or
    split is one line naming it, not an error after the model is built and OUT_DIR created."""
    from mrfs_edge.io.pairs import PairFolder  # OpenCV: not needed for --help

    check_readable_dir(args.data, "--data")   # here, not type=: main() returns 2 instead of raising SystemExit
    wanted = [] if args.eval_only else (args.train_split or [None])
    for split in wanted + ([args.val_split] if args.val_split else []):
        try:
            PairFolder(args.data, split, require_labels=True)
        except MrfsEdgeError as exc:
            raise ArgumentCheckError(f"--data{f' (split {split})' if split else ''}: {exc}") from exc


@command
def main(argv: list[str] | None = None) -> int:
    """Train, evaluate and ship as asked; errors and signals are the CLI base's (one line, 2/130/143)."""
    args = build_parser().parse_args(argv)
    check_pairs(args)   # before PyTorch is imported and before OUT_DIR is created
    with needs_extra("training"):
        from mrfs_edge.model.checkpoint import load_checkpoint, save_checkpoint
        from mrfs_edge.train.loop import TrainConfig, Trainer

    names = {f.name for f in fields(TrainConfig)}
    values = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k in names}
    values["train_splits"] = args.train_split
    values["crop"] = tuple(args.crop)
    values["scales"] = tuple(args.scales)
    config = TrainConfig(**values)
    trainer = Trainer(config, resume=args.resume or args.eval_only)
    if not args.eval_only:
        trainer.run()
    if args.val_split:
        score = trainer.evaluate()
        print(f"held-out {args.val_split}: mIoU {100 * score.miou:.2f}%  pixel acc {100 * score.accuracy:.2f}%")
        print(score.table())
        write_json_atomic(Path(config.out_dir) / "eval.json",
                          {"iteration": trainer.iteration, "split": args.val_split, **score.as_dict()})
    if args.ship:
        save_checkpoint(args.ship, trainer.model, iteration=trainer.iteration, half=True)
        load_checkpoint(args.ship)  # the shipped file must load strictly
        LOG.info(f"wrote {args.ship}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
