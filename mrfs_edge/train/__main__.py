"""``python -m mrfs_edge.train``: train or fine-tune MRFS on a paired folder; resumable.

``--qat`` fine-tunes the INT8 deploy graph instead (quantisation-aware training, default from the
bundled demo checkpoint) and writes its Q/DQ ONNX, with pixel agreement and mIoU against the FP32
network on ``--val-split`` before (post-training quantisation) and after fine-tuning. Several
processes: ``torchrun --nproc_per_node=N -m mrfs_edge.train --qat ...`` (DistributedDataParallel).
"""
from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import fields
from pathlib import Path

from mrfs_edge.assets import DEMO_CHECKPOINT
from mrfs_edge.core.args import (
    ArgumentCheckError,
    check_readable_dir,
    help_text,
    non_negative_int,
    positive_float,
    positive_int,
    readable_file,
    side_problem,
    writable_dir,
    writable_file,
)
from mrfs_edge.core.cli import CliParser, command
from mrfs_edge.core.errors import MrfsEdgeError, needs_extra
from mrfs_edge.core.files import write_json_atomic
from mrfs_edge.train.qat_options import CALIB_METHODS, PERCENTILE

LOG = logging.getLogger(__name__)

TRAIN_DEFAULTS = {"iterations": 10000, "batch_size": 4, "lr": 6e-4, "warmup": 300, "save_every": 200}
# A short fine-tune from a trained network: its ranges are calibrated, the weights only adapt to rounding.
QAT_DEFAULTS = {"iterations": 400, "batch_size": 2, "lr": 1e-5, "warmup": 20, "save_every": 100,
                "calib_count": 8, "calib_method": "max", "distill": 0.0}


def build_parser() -> argparse.ArgumentParser:
    p = CliParser(prog="python -m mrfs_edge.train", description=help_text(__doc__))
    p.add_argument("--data", required=True, help="paired folder (vi/ir/label, visible/infrared/label, ...)")
    p.add_argument("--train-split", nargs="*", default=[], help="split list(s) to train on (default: all pairs)")
    p.add_argument("--val-split", help="held-out split list for mIoU at the end")
    p.add_argument("--out-dir", type=writable_dir, default="runs/train",
                   help="checkpoints (last.pth), log.jsonl and eval.json (default runs/train)")
    p.add_argument("--init", type=readable_file,
                   help="checkpoint to fine-tune from (authors' format); default: from scratch, "
                        "with --qat the bundled demo model")
    p.add_argument("--backbone", default="mit_b0", help="SegFormer MiT encoder (default mit_b0)")
    p.add_argument("--num-classes", type=positive_int, default=9, help="segmentation classes (default 9, MFNet)")
    p.add_argument("--decoder-embed-dim", type=positive_int, default=256,
                   help="channels of the decoder head (default 256)")
    p.add_argument("--iterations", type=positive_int,
                   help=f"optimiser steps in all (default {TRAIN_DEFAULTS['iterations']}, --qat {QAT_DEFAULTS['iterations']})")
    p.add_argument("--batch-size", type=positive_int,
                   help=f"pairs per step and process (default {TRAIN_DEFAULTS['batch_size']}, "
                        f"--qat {QAT_DEFAULTS['batch_size']})")
    p.add_argument("--lr", type=positive_float,
                   help=f"peak learning rate, AdamW (default {TRAIN_DEFAULTS['lr']:g}, --qat {QAT_DEFAULTS['lr']:g})")
    p.add_argument("--weight-decay", type=float, default=0.01, help="AdamW weight decay (default 0.01)")
    p.add_argument("--warmup", type=non_negative_int,
                   help=f"linear warm-up steps before the poly decay (default {TRAIN_DEFAULTS['warmup']}, "
                        f"--qat {QAT_DEFAULTS['warmup']})")
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
    p.add_argument("--save-every", type=positive_int,
                   help=f"steps between checkpoints to OUT_DIR/last.pth (--qat: qat_last.pth) "
                        f"(default {TRAIN_DEFAULTS['save_every']}, --qat {QAT_DEFAULTS['save_every']})")
    p.add_argument("--eval-every", type=non_negative_int, default=0,
                   help="steps between --val-split evaluations (default 0: only at the end)")
    p.add_argument("--resume", action="store_true", help="continue from OUT_DIR/last.pth if present")
    p.add_argument("--eval-only", action="store_true", help="only evaluate OUT_DIR/last.pth on --val-split")
    p.add_argument("--ship", type=writable_file, metavar="PATH", help="after training, write the weights (float16) to PATH")
    q = p.add_argument_group("quantisation-aware training")
    q.add_argument("--qat", action="store_true",
                   help="fine-tune the INT8 deploy graph (every Conv/Linear fake-quantised) and export its Q/DQ ONNX")
    q.add_argument("--calib-count", type=positive_int,
                   help=f"training pairs that set the activation ranges (default {QAT_DEFAULTS['calib_count']})")
    q.add_argument("--calib-method", choices=CALIB_METHODS,
                   help=f"activation range: largest |x| or its {PERCENTILE}th percentile (default max)")
    q.add_argument("--distill", type=float,
                   help="weight of the FP32 teacher term (KL of class probabilities + L1 of the fused image) "
                        "added to the authors' objective (default 0: their objective alone)")
    q.add_argument("--quantize-attention", action="store_true",
                   help="also both operands of every attention product (q·kᵀ, softmax·v) in INT8, "
                        "as the Q/DQ graph's --quantize-attention")
    q.add_argument("--export", type=writable_file, metavar="PATH",
                   help="the fine-tuned Q/DQ ONNX (default OUT_DIR/qat.int8.onnx; the calibrated state "
                        "before fine-tuning goes to OUT_DIR/ptq.int8.onnx)")
    q.add_argument("--height", type=positive_int, default=480, help="exported input height (default 480)")
    q.add_argument("--width", type=positive_int, default=640, help="exported input width (default 640)")
    q.add_argument("--local-rank", "--local_rank", dest="local_rank", type=int,
                   help=argparse.SUPPRESS)  # torch.distributed.launch passes it; torchrun sets LOCAL_RANK
    return p


QAT_ONLY = ("calib_count", "calib_method", "distill", "export")


def resolve_defaults(args: argparse.Namespace) -> None:
    """Mode-dependent defaults (QAT fine-tunes briefly at a small learning rate) and the checks
    between flags, before any heavy import."""
    if args.qat:
        for flag, problem in (("eval_only", "evaluates a trained checkpoint; --qat measures its own graphs"),
                              ("ship", "writes float weights; --qat writes its Q/DQ ONNX (--export)"),
                              ("bf16", "would round the fake-quantised activations again; QAT runs in float32")):
            if getattr(args, flag):
                raise ArgumentCheckError(f"--{flag.replace('_', '-')} cannot be combined with --qat: it {problem}")
        for flag in ("height", "width"):
            problem = side_problem(getattr(args, flag))
            if problem:
                raise ArgumentCheckError(f"--{flag} {problem}")
        if args.distill is not None and args.distill < 0:
            raise ArgumentCheckError(f"--distill {args.distill} is negative; give a weight of 0 or more")
        if args.init is None:
            args.init = DEMO_CHECKPOINT
            LOG.info(f"--qat without --init: fine-tuning the bundled demo model {DEMO_CHECKPOINT.name}")
    else:
        given = [f"--{name.replace('_', '-')}" for name in QAT_ONLY if getattr(args, name) is not None]
        given += ["--quantize-attention"] if args.quantize_attention else []
        if given:
            raise ArgumentCheckError(f"{given[0]} needs --qat")
    for name, value in (QAT_DEFAULTS if args.qat else TRAIN_DEFAULTS).items():
        if getattr(args, name, None) is None:
            setattr(args, name, value)


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


def run_qat(args: argparse.Namespace) -> int:
    """Calibrate, measure the post-training graph, fine-tune, export and measure the QAT graph."""
    with needs_extra("quantisation-aware training"):
        from mrfs_edge.train.distributed import close_process, init_process
        from mrfs_edge.train.qat import QatConfig, QatTrainer

    names = {f.name for f in fields(QatConfig)}
    values = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k in names}
    values.update(train_splits=args.train_split, crop=tuple(args.crop), scales=tuple(args.scales))
    config = QatConfig(**values)
    context = init_process(args.local_rank)
    try:
        trainer = QatTrainer(config, context)
        trainer.start(resume=args.resume)
        out_dir = Path(config.out_dir)
        if "ptq" not in trainer.report:
            ptq = trainer.export(out_dir / "ptq.int8.onnx", "ptq")
            trainer.measure(ptq, "ptq")
        trainer.run()
        qat = trainer.export(args.export or out_dir / "qat.int8.onnx", "qat")
        trainer.measure(qat, "qat")
        report = trainer.write_report()
        if context.is_main:
            for stage in ("ptq", "qat"):
                figures = trainer.report.get(stage)
                if isinstance(figures, dict):
                    print(f"{stage}: agreement {100 * figures['pixel_agreement']:.3f}%  "
                          f"mIoU {100 * figures['miou_int8']:.2f}% (FP32 {100 * figures['miou_fp32']:.2f}%, "
                          f"drop {figures['miou_drop_points']:.2f})  {figures['onnx']}")
            print(f"Q/DQ ONNX {qat}; report {report}")
    finally:
        close_process(context)
    return 0


@command
def main(argv: list[str] | None = None) -> int:
    """Train, evaluate and ship as asked; errors and signals are the CLI base's (one line, 2/130/143)."""
    args = build_parser().parse_args(argv)
    resolve_defaults(args)
    check_pairs(args)   # before PyTorch is imported and before OUT_DIR is created
    if args.qat:
        return run_qat(args)
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
