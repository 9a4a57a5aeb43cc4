"""A resumable MRFS training loop (from scratch or fine-tuning), CPU- or GPU-friendly.

Checkpoints are the authors' format plus resume state, written atomically every
``save_every`` iterations, so a run killed at any moment continues with ``--resume`` from
the last save with the same schedule.
"""
from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from mrfs_edge.core.classes import class_names_for
from mrfs_edge.evaluation import evaluate_segmentation
from mrfs_edge.io.pairs import Pair, PairFolder
from mrfs_edge.model.checkpoint import build_from_state_dict, read_state_dict, save_checkpoint
from mrfs_edge.model.inference import torch_infer_fn
from mrfs_edge.model.network import MRFS
from mrfs_edge.model.variants import ModelConfig
from mrfs_edge.train.augment import AugmentConfig, augment
from mrfs_edge.train.loss import MRFSLoss, balanced_class_weights

LOG = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    data: str
    train_splits: Sequence[str] = ()
    val_split: str | None = None
    out_dir: str = "runs/train"
    backbone: str = "mit_b0"
    num_classes: int = 9
    decoder_embed_dim: int = 256
    init: str | None = None           # checkpoint to fine-tune from; None = from scratch
    iterations: int = 10000
    batch_size: int = 4
    lr: float = 6e-4
    weight_decay: float = 0.01
    warmup: int = 300
    poly_power: float = 0.9
    crop: tuple[int, int] = (240, 320)
    scales: tuple[float, ...] = (0.5, 0.75, 1.0, 1.25)
    class_balance: bool = True
    balance_c: float = 1.1
    ohem_fraction: float = 1.0
    fusion_weight: float = 0.1
    drop_path: float = 0.1
    bf16: bool = False
    threads: int = 0
    seed: int = 0
    save_every: int = 200
    eval_every: int = 0
    log_every: int = 10
    extra: dict[str, object] = field(default_factory=dict)


def load_pairs(root: str, splits: Sequence[str]) -> list[Pair]:
    """Read every listed pair into memory once (a few hundred frames fit easily)."""
    pairs: list[Pair] = []
    for split in splits or [None]:  # type: ignore[list-item]
        pairs.extend(PairFolder(root, split, require_labels=True))
    return pairs


def poly_lr(config: TrainConfig, iteration: int) -> float:
    """Linear warm-up to ``lr``, then ``lr·(1 − t)^power`` over the remaining iterations."""
    if iteration < config.warmup:
        return config.lr * (0.1 + 0.9 * iteration / max(config.warmup, 1))
    progress = (iteration - config.warmup) / max(config.iterations - config.warmup, 1)
    return config.lr * max(1.0 - progress, 0.0) ** config.poly_power


def parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, object]]:
    """No weight decay on biases and norm scales (1-D tensors), decay on the rest."""
    decay, no_decay = [], []
    for parameter in model.parameters():
        (no_decay if parameter.ndim <= 1 else decay).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


class Trainer:
    """Owns the model, optimiser, data and schedule; ``run()`` trains until ``iterations``."""

    def __init__(self, config: TrainConfig, resume: bool = False) -> None:
        self.config = config
        self.out_dir = Path(config.out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if config.threads:
            torch.set_num_threads(config.threads)
        torch.manual_seed(config.seed)
        self.pairs = load_pairs(config.data, config.train_splits)
        self.model = self._build_model()
        self.optimizer = torch.optim.AdamW(parameter_groups(self.model, config.weight_decay), lr=config.lr)
        self.rng = np.random.default_rng(config.seed)
        self.iteration = 0
        if resume and self.last_path.exists():
            self._resume()
        weights = balanced_class_weights(self._pixel_counts(), config.balance_c) if config.class_balance else None
        self.loss = MRFSLoss(weights, config.fusion_weight, config.ohem_fraction)
        self.augment = AugmentConfig(tuple(config.crop), tuple(config.scales))

    @property
    def last_path(self) -> Path:
        return self.out_dir / "last.pth"

    def _build_model(self) -> MRFS:
        c = self.config
        if c.init:
            return build_from_state_dict(read_state_dict(c.init), c.init, drop_path_rate=c.drop_path)
        model = MRFS(ModelConfig(c.backbone, c.num_classes, c.decoder_embed_dim), drop_path_rate=c.drop_path)
        model.reset_parameters()
        return model

    def _pixel_counts(self) -> np.ndarray:
        counts = np.zeros(self.model.config.num_classes, np.int64)
        for pair in self.pairs:
            assert pair.label is not None
            counts += np.bincount(pair.label.reshape(-1), minlength=counts.size)[: counts.size]
        return counts

    def _resume(self) -> None:
        state = torch.load(self.last_path, map_location="cpu", weights_only=True)
        self.model.load_state_dict(state["model"], strict=True)
        self.optimizer.load_state_dict(state["optimizer"])
        self.iteration = int(state["iteration"])
        self.rng.bit_generator.state = state["rng"]
        LOG.info(f"resumed {self.last_path} at iteration {self.iteration}/{self.config.iterations}")

    def save(self) -> None:
        save_checkpoint(self.last_path, self.model, optimizer=self.optimizer, iteration=self.iteration,
                        extra={"rng": self.rng.bit_generator.state, "train_config": asdict(self.config)})

    def _batch(self) -> dict[str, torch.Tensor]:
        indices = self.rng.integers(0, len(self.pairs), self.config.batch_size)
        seeds = self.rng.integers(0, 2**31, self.config.batch_size)
        samples = [augment(self.pairs[i], np.random.default_rng(s), self.augment) for i, s in zip(indices, seeds)]
        return {key: torch.from_numpy(np.stack([getattr(s, key) for s in samples]))
                for key in ("visible", "infrared", "label", "mask")}

    def step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        lr = poly_lr(self.config, self.iteration)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.config.bf16):
            seg, fused = self.model(batch["visible"], batch["infrared"])
        total, parts = self.loss(seg.float(), fused.float(), batch["label"], batch["visible"],
                                 batch["infrared"], batch["mask"])
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        self.optimizer.step()
        self.iteration += 1
        return {"loss": float(total.detach()), **parts, "lr": lr}

    def run(self) -> None:
        c = self.config
        self.model.train()
        started, start_iteration = time.time(), self.iteration
        # Closed on every way out (a signal, an error): the bar is not redrawn after the last message.
        with open(self.out_dir / "log.jsonl", "a") as log, ThreadPoolExecutor(max_workers=1) as prefetch, \
                tqdm(total=c.iterations, initial=self.iteration, desc="train", unit="it", dynamic_ncols=True) as bar:
            upcoming = prefetch.submit(self._batch)
            while self.iteration < c.iterations:
                batch = upcoming.result()
                upcoming = prefetch.submit(self._batch)
                figures = self.step(batch)
                done = self.iteration - start_iteration
                images_per_s = done * c.batch_size / max(time.time() - started, 1e-9)
                bar.update(1)
                bar.set_postfix(loss=f"{figures['loss']:.3f}", seg=f"{figures['seg']:.3f}",
                                img_s=f"{images_per_s:.1f}")
                if self.iteration % c.log_every == 0:
                    log.write(json.dumps({"iteration": self.iteration, "time": time.time(), **figures}) + "\n")
                    log.flush()
                if self.iteration % c.save_every == 0 or self.iteration == c.iterations:
                    self.save()
                if c.eval_every and c.val_split and self.iteration % c.eval_every == 0:
                    score = self.evaluate()
                    log.write(json.dumps({"iteration": self.iteration, "val_miou": score.miou}) + "\n")
                    bar.write(f"iteration {self.iteration}: val mIoU {100 * score.miou:.2f}%")
                    self.model.train()

    def evaluate(self, split: str | None = None, scale: float = 1.0):
        """mIoU on the held-out list at full resolution (480×640 for MFNet), authors' metric."""
        self.model.eval()
        pairs = PairFolder(self.config.data, split or self.config.val_split, require_labels=True)
        n = self.model.config.num_classes
        return evaluate_segmentation(torch_infer_fn(self.model), pairs, n, class_names_for(n), scale=scale)
