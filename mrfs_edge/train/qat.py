"""Quantisation-aware fine-tuning: checkpoint → deploy form → fake INT8 → calibrate → fine-tune → Q/DQ ONNX.

The network trained is the exact deploy form (:func:`mrfs_edge.model.deploy_form.to_deploy_form`)
with every Conv2d/Linear fake-quantised (:mod:`mrfs_edge.train.fake_quant`), so the graph
exported at the end is the deploy graph with the Q/DQ placement of the calibration pipeline
and the weights it was trained with. The objective is the authors' (cross-entropy + 0.1 ×
fusion loss); ``distill`` adds the FP32 network as a teacher (KL on the class probabilities +
L1 on the fused image), which keeps the INT8 network's predictions on the FP32 ones.

The post-training state (after calibration, before any step) is exported and measured too,
so one run reports what fine-tuning buys. Runs under ``torchrun`` as DistributedDataParallel
(each process draws its own pairs through a DistributedSampler; rank 0 saves, exports and
measures).
"""
from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DistributedSampler
from tqdm import tqdm

from mrfs_edge.core.export_options import ExportOptions
from mrfs_edge.core.files import atomic_path, sha256_file, write_json_atomic
from mrfs_edge.io.pairs import Pair, PairFolder
from mrfs_edge.model.checkpoint import build_from_state_dict, read_state_dict
from mrfs_edge.model.deploy_form import to_deploy_form
from mrfs_edge.processing.preprocess import to_network_inputs
from mrfs_edge.train.augment import AugmentConfig, augment
from mrfs_edge.train.distributed import ProcessContext, barrier, wrap_model
from mrfs_edge.train.fake_quant import (
    CalibMethod,
    calibrate,
    insert_attention_quant,
    insert_fake_quant,
)
from mrfs_edge.train.loop import load_pairs, parameter_groups, poly_lr
from mrfs_edge.train.loss import MRFSLoss, balanced_class_weights
from mrfs_edge.train.qat_eval import Int8Figures, Reference, measure_onnx
from mrfs_edge.train.qat_export import export_qat_onnx

LOG = logging.getLogger(__name__)


@dataclass
class QatConfig:
    data: str
    init: str
    train_splits: Sequence[str] = ()
    val_split: str | None = None
    out_dir: str = "runs/qat"
    iterations: int = 400
    batch_size: int = 2
    lr: float = 1e-5
    weight_decay: float = 0.01
    warmup: int = 20
    poly_power: float = 0.9
    crop: tuple[int, int] = (240, 320)
    scales: tuple[float, ...] = (0.5, 0.75, 1.0, 1.25)
    class_balance: bool = True
    balance_c: float = 1.1
    ohem_fraction: float = 1.0
    fusion_weight: float = 0.1
    distill: float = 0.0
    calib_count: int = 8
    calib_method: CalibMethod = "max"
    quantize_attention: bool = False
    threads: int = 0
    seed: int = 0
    save_every: int = 100
    log_every: int = 10
    height: int = 480
    width: int = 640
    export_threads: int = 1
    extra: dict[str, object] = field(default_factory=dict)


def calibration_pairs(pairs: Sequence[Pair], count: int) -> list[Pair]:
    """``count`` pairs spread evenly over the training list (day and night frames alternate in it)."""
    count = min(count, len(pairs))
    return [pairs[int(i)] for i in np.linspace(0, len(pairs) - 1, count).round().astype(int)]


def full_frames(pairs: Sequence[Pair], device: torch.device) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    for pair in pairs:
        visible, infrared, _ = to_network_inputs(pair.visible, pair.infrared)
        yield torch.from_numpy(visible).to(device), torch.from_numpy(infrared).to(device)


def distillation_loss(seg: torch.Tensor, fused: torch.Tensor, teacher_seg: torch.Tensor,
                      teacher_fused: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """KL(teacher ‖ student) of the per-pixel class distributions + L1 to the teacher's fused image."""
    kl = F.kl_div(F.log_softmax(seg, dim=1), F.log_softmax(teacher_seg, dim=1), log_target=True,
                  reduction="none").sum(dim=1, keepdim=True)
    valid = mask.sum().clamp_min(1.0)
    return (kl * mask).sum() / valid + (torch.abs(fused - teacher_fused) * mask).sum() / (3 * valid)


class QatTrainer:
    """Owns the FP32 teacher, the fake-quantised deploy form and the schedule."""

    def __init__(self, config: QatConfig, context: ProcessContext | None = None) -> None:
        self.config = config
        self.context = context or ProcessContext()
        self.out_dir = Path(config.out_dir)
        if self.context.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        if config.threads:
            torch.set_num_threads(config.threads)
        torch.manual_seed(config.seed)
        device = self.context.device
        self.pairs = load_pairs(config.data, config.train_splits)
        self.teacher = build_from_state_dict(read_state_dict(config.init), config.init).to(device).eval()
        for parameter in self.teacher.parameters():
            parameter.requires_grad_(False)
        self.student = to_deploy_form(self.teacher, 1).train()
        for parameter in self.student.parameters():
            parameter.requires_grad_(True)
        self.layers = insert_fake_quant(self.student)
        self.attention = insert_attention_quant(self.student) if config.quantize_attention else []
        self.model = self.student   # wrapped for DDP once calibrated
        self.iteration = 0
        self.report: dict[str, object] = {"config": asdict(config), "quantized_layers": len(self.layers),
                                          "quantized_attentions": len(self.attention)}
        self.options = ExportOptions(height=config.height, width=config.width, rewrite=False)
        self.checkpoint_sha256 = sha256_file(config.init)
        counts = np.zeros(self.teacher.config.num_classes, np.int64)
        for pair in self.pairs:
            assert pair.label is not None
            counts += np.bincount(pair.label.reshape(-1), minlength=counts.size)[: counts.size]
        weights = balanced_class_weights(counts, config.balance_c) if config.class_balance else None
        self.loss = MRFSLoss(weights, config.fusion_weight, config.ohem_fraction).to(device)
        self.augment = AugmentConfig(tuple(config.crop), tuple(config.scales))
        self.sampler = DistributedSampler(range(len(self.pairs)), num_replicas=self.context.world_size,
                                          rank=self.context.rank, shuffle=True, seed=config.seed)
        self.optimizer: torch.optim.Optimizer | None = None
        self._reference: Reference | None = None

    @property
    def last_path(self) -> Path:
        return self.out_dir / "qat_last.pth"

    # ------------------------------------------------------------------ calibration
    def calibrate(self) -> int:
        """Activation ranges from full frames of the training list (the same on every rank)."""
        started = time.perf_counter()
        pairs = calibration_pairs(self.pairs, self.config.calib_count)
        count = calibrate(self.student, full_frames(pairs, self.context.device), self.config.calib_method)
        seconds = time.perf_counter() - started
        self.report["calibration"] = {"pairs": [p.name for p in pairs], "method": self.config.calib_method,
                                      "seconds": round(seconds, 1)}
        LOG.info(f"calibrated {len(self.layers)} weighted layers' input ranges ({self.config.calib_method}) "
                 f"on {count} pairs in {seconds:.0f} s")
        return count

    def start(self, resume: bool = False) -> None:
        """Calibrate (or restore a saved run), then make the optimiser and the DDP wrapper."""
        state = torch.load(self.last_path, map_location=self.context.device, weights_only=True) \
            if resume and self.last_path.exists() else None
        if state is None:
            self.calibrate()
        else:
            self.student.load_state_dict(state["model"], strict=True)
            self.iteration = int(state["iteration"])
            self.report.update(state.get("report", {}))
            LOG.info(f"resumed {self.last_path} at iteration {self.iteration}/{self.config.iterations}")
        self.optimizer = torch.optim.AdamW(parameter_groups(self.student, self.config.weight_decay),
                                           lr=self.config.lr)
        if state is not None:
            self.optimizer.load_state_dict(state["optimizer"])
        self.model = wrap_model(self.student, self.context)

    # ------------------------------------------------------------------ training
    def _indices(self) -> Iterator[int]:
        """This rank's pair indices, epoch after epoch (DistributedSampler), from the current iteration on."""
        per_epoch = len(self.sampler)
        epoch, offset = divmod(self.iteration * self.config.batch_size, per_epoch)
        while True:
            self.sampler.set_epoch(epoch)
            yield from list(self.sampler)[offset:]
            epoch, offset = epoch + 1, 0

    def _batch(self, indices: Iterator[int]) -> dict[str, torch.Tensor]:
        c = self.config
        samples = []
        for slot in range(c.batch_size):
            rng = np.random.default_rng([c.seed, self.context.rank, self.iteration, slot])
            samples.append(augment(self.pairs[next(indices)], rng, self.augment))
        return {key: torch.from_numpy(np.stack([getattr(s, key) for s in samples])).to(self.context.device)
                for key in ("visible", "infrared", "label", "mask")}

    def step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        assert self.optimizer is not None, "start() first"
        lr = poly_lr(self.config, self.iteration)  # type: ignore[arg-type]  # the same schedule fields
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        seg, fused = self.model(batch["visible"], batch["infrared"])
        total, parts = self.loss(seg, fused, batch["label"], batch["visible"], batch["infrared"], batch["mask"])
        if self.config.distill:
            with torch.no_grad():
                teacher_seg, teacher_fused = self.teacher(batch["visible"], batch["infrared"])
            distill = distillation_loss(seg, fused, teacher_seg, teacher_fused, batch["mask"])
            total = total + self.config.distill * distill
            parts["distill"] = float(distill.detach())
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        self.optimizer.step()
        self.iteration += 1
        return {"loss": float(total.detach()), **parts, "lr": lr}

    def run(self) -> list[dict[str, float]]:
        """Fine-tune until ``iterations``; rank 0 logs to OUT_DIR/qat_log.jsonl and saves every ``save_every``."""
        c, main = self.config, self.context.is_main
        self.model.train()
        history: list[dict[str, float]] = []
        indices = self._indices()
        started, first = time.time(), self.iteration
        with (open(self.out_dir / "qat_log.jsonl", "a") if main else contextlib.nullcontext()) as log, \
                tqdm(total=c.iterations, initial=self.iteration, desc="qat", unit="it", dynamic_ncols=True,
                     disable=not main) as bar:
            while self.iteration < c.iterations:
                figures = self.step(self._batch(indices))
                history.append(figures)
                bar.update(1)
                rate = (self.iteration - first) * c.batch_size / max(time.time() - started, 1e-9)
                bar.set_postfix(loss=f"{figures['loss']:.3f}", img_s=f"{rate:.2f}")
                if log is not None and self.iteration % c.log_every == 0:
                    log.write(json.dumps({"iteration": self.iteration, "time": time.time(), **figures}) + "\n")
                    log.flush()
                if self.iteration % c.save_every == 0 or self.iteration == c.iterations:
                    self.save()
        self.report["training"] = {"iterations": self.iteration, "seconds": round(time.time() - started, 1),
                                   "world_size": self.context.world_size}
        return history

    def save(self) -> None:
        if not self.context.is_main:
            return
        assert self.optimizer is not None
        with atomic_path(self.last_path) as tmp:
            torch.save({"model": self.student.state_dict(), "optimizer": self.optimizer.state_dict(),
                        "iteration": self.iteration, "report": {k: v for k, v in self.report.items()
                                                               if k in ("calibration", "ptq")}}, tmp)

    # ------------------------------------------------------------------ export and measurement
    def export(self, path: str | Path, stage: str) -> Path:
        """The Q/DQ ONNX of the current weights (rank 0), with the stage in its metadata."""
        path = Path(path)
        if self.context.is_main:
            export_qat_onnx(self.student, path, self.options, self.checkpoint_sha256,
                            {"mrfs_edge.quantization": f"int8 {stage} (fake-quantised deploy form, "
                                                       f"{len(self.layers)} weighted layers, "
                                                       f"{2 * len(self.attention)} attention products)"})
        barrier(self.context)
        return path

    def reference(self) -> Reference:
        if self._reference is None:
            assert self.config.val_split, "a held-out split is needed to measure"
            pairs = list(PairFolder(self.config.data, self.config.val_split, require_labels=True))
            self._reference = Reference.compute(self.teacher, pairs, self.teacher.config.num_classes)
        return self._reference

    def measure(self, path: Path, stage: str) -> Int8Figures | None:
        """ONNX Runtime on the held-out pairs vs the FP32 network (rank 0; ``None`` elsewhere)."""
        if not self.context.is_main or not self.config.val_split:
            return None
        figures = measure_onnx(path, self.reference(), self.config.export_threads)
        self.report[stage] = {"onnx": str(path), **figures.as_dict()}
        LOG.info(f"{stage}: {figures.summary()}")
        return figures

    def write_report(self) -> Path | None:
        if not self.context.is_main:
            return None
        return write_json_atomic(self.out_dir / "qat_report.json", self.report)
