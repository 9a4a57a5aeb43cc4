"""``python -m mrfs_edge.train``: train or fine-tune MRFS on a paired folder; resumable."""
from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import fields
from pathlib import Path

from mrfs_edge.core.cli import CliParser, command
from mrfs_edge.core.files import write_json_atomic
from mrfs_edge.model.checkpoint import load_checkpoint, save_checkpoint
from mrfs_edge.train.loop import TrainConfig, Trainer

LOG = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    p = CliParser(prog="python -m mrfs_edge.train", description=__doc__)
    p.add_argument("--data", required=True, help="paired folder (vi/ir/label, visible/infrared/label, ...)")
    p.add_argument("--train-split", nargs="*", default=[], help="split list(s) to train on (default: all pairs)")
    p.add_argument("--val-split", help="held-out split list for mIoU at the end")
    p.add_argument("--out-dir", default="runs/train")
    p.add_argument("--init", help="checkpoint to fine-tune from (authors' format); default: from scratch")
    p.add_argument("--backbone", default="mit_b0")
    p.add_argument("--num-classes", type=int, default=9)
    p.add_argument("--decoder-embed-dim", type=int, default=256)
    p.add_argument("--iterations", type=int, default=10000)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--lr", type=float, default=6e-4)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--warmup", type=int, default=300)
    p.add_argument("--crop", type=int, nargs=2, default=[240, 320], metavar=("H", "W"))
    p.add_argument("--scales", type=float, nargs="+", default=[0.5, 0.75, 1.0, 1.25])
    p.add_argument("--no-class-balance", dest="class_balance", action="store_false")
    p.add_argument("--balance-c", type=float, default=1.1,
                   help="class weights 1/ln(c + frequency): smaller c weighs rare classes more")
    p.add_argument("--ohem-fraction", type=float, default=1.0)
    p.add_argument("--drop-path", type=float, default=0.1)
    p.add_argument("--bf16", action="store_true", help="bfloat16 autocast (faster on CPUs with AVX512-BF16)")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save-every", type=int, default=200)
    p.add_argument("--eval-every", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="continue from OUT_DIR/last.pth if present")
    p.add_argument("--eval-only", action="store_true", help="only evaluate OUT_DIR/last.pth on --val-split")
    p.add_argument("--ship", metavar="PATH", help="after training, write the weights (float16) to PATH")
    return p


@command
def main(argv: list[str] | None = None) -> int:
    """Train, evaluate and ship as asked; errors and signals are the CLI base's (one line, 2/130/143)."""
    args = build_parser().parse_args(argv)
    names = {f.name for f in fields(TrainConfig)}
    values = {k: v for k, v in vars(args).items() if k in names}
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
