"""The MRFS objective: cross-entropy + 0.1 × fusion loss (intensity, gradient, colour).

Kept as plain modules so fine-tuning and quantisation-aware training reuse them unchanged.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mrfs_edge.train.augment import IGNORE_LABEL

_SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
_SOBEL_Y = torch.tensor([[1.0, 2.0, 1.0], [0.0, 0.0, 0.0], [-1.0, -2.0, -1.0]])


def sobel(image: Tensor) -> tuple[Tensor, Tensor]:
    """Signed Sobel responses per channel (zero padding), as the authors' loss uses them."""
    channels = image.shape[1]
    kx = _SOBEL_X.to(image).expand(channels, 1, 3, 3)
    ky = _SOBEL_Y.to(image).expand(channels, 1, 3, 3)
    return (F.conv2d(image, kx, padding=1, groups=channels),
            F.conv2d(image, ky, padding=1, groups=channels))


def chroma(image: Tensor) -> tuple[Tensor, Tensor]:
    """Cb and Cr of an RGB image: ``Y=.299R+.587G+.114B``, ``Cr=(R−Y)·.713+.5``, ``Cb=(B−Y)·.564+.5``."""
    r, g, b = image[:, 0:1], image[:, 1:2], image[:, 2:3]
    y = 0.299 * r + 0.587 * g + 0.114 * b
    return (b - y) * 0.564 + 0.5, (r - y) * 0.713 + 0.5


def adjust_contrast(image: Tensor, factor: float) -> Tensor:
    """torchvision's ``adjust_contrast``: blend with the per-image mean grey, clamp to [0, 1].

    The grey is torchvision's ``rgb_to_grayscale`` (0.2989, not 0.299, for red).
    """
    r, g, b = image[:, 0:1], image[:, 1:2], image[:, 2:3]
    mean = (0.2989 * r + 0.587 * g + 0.114 * b).mean(dim=(1, 2, 3), keepdim=True)
    return (factor * image + (1.0 - factor) * mean).clamp(0.0, 1.0)


def fusion_loss(fused: Tensor, visible: Tensor, infrared: Tensor, mask: Tensor) -> Tensor:
    """``0.5·L1(F, max(V', I')) + 0.2·(½L1(∇xF, max ∇x) + ½L1(∇yF, max ∇y)) + L1(Cb) + L1(Cr)``.

    ``V' = V^0.5`` (gamma), ``I' = contrast(I, 1.7)``; ``F`` is masked to the unpadded crop;
    ``infrared`` is the 3-channel replicated image the network sees.
    """
    fused = fused * mask
    vis_target = visible.clamp_min(0.0).sqrt()
    ir_target = adjust_contrast(infrared, 1.7)
    intensity = F.l1_loss(fused, torch.maximum(vis_target, ir_target))
    fx, fy = sobel(fused)
    vx, vy = sobel(vis_target)
    ix, iy = sobel(ir_target)
    gradient = 0.5 * F.l1_loss(fx, torch.maximum(vx, ix)) + 0.5 * F.l1_loss(fy, torch.maximum(vy, iy))
    cb_f, cr_f = chroma(fused)
    cb_v, cr_v = chroma(vis_target)
    colour = F.l1_loss(cb_f, cb_v) + F.l1_loss(cr_f, cr_v)
    return 0.5 * intensity + 0.2 * gradient + colour


def balanced_class_weights(pixel_counts: torch.Tensor | list[int], c: float = 1.02) -> Tensor:
    """ENet weighting ``w_k = 1 / ln(c + p_k)``; c = 1.02 weighs rare classes ~30× background, c = 1.1 ~7×."""
    counts = torch.as_tensor(pixel_counts, dtype=torch.float64)
    frequency = counts / counts.sum().clamp_min(1)
    return (1.0 / torch.log(c + frequency)).float()


class MRFSLoss(nn.Module):
    """``CE(seg, label, ignore 255) + fusion_weight · fusion_loss``; optional class weights/OHEM.

    ``ohem_fraction`` < 1 keeps only that fraction of the hardest valid pixels per batch
    (online hard example mining), useful when background dominates.
    """

    def __init__(self, class_weights: Tensor | None = None, fusion_weight: float = 0.1,
                 ohem_fraction: float = 1.0) -> None:
        super().__init__()
        self.register_buffer("class_weights", class_weights if class_weights is not None else None)
        self.fusion_weight = fusion_weight
        self.ohem_fraction = ohem_fraction

    def segmentation(self, logits: Tensor, label: Tensor) -> Tensor:
        weights = self.class_weights
        if self.ohem_fraction >= 1.0:
            return F.cross_entropy(logits, label, weight=weights, ignore_index=IGNORE_LABEL)
        per_pixel = F.cross_entropy(logits, label, weight=weights, ignore_index=IGNORE_LABEL,
                                    reduction="none").flatten()
        valid = per_pixel[label.flatten() != IGNORE_LABEL]
        keep = max(1, int(valid.numel() * self.ohem_fraction))
        return valid.topk(keep).values.mean()

    def forward(self, seg_logits: Tensor, fused: Tensor, label: Tensor, visible: Tensor,
                infrared: Tensor, mask: Tensor) -> tuple[Tensor, dict[str, float]]:
        seg = self.segmentation(seg_logits, label)
        fusion = fusion_loss(fused, visible, infrared.expand(-1, 3, -1, -1), mask)
        total = seg + self.fusion_weight * fusion
        return total, {"seg": float(seg.detach()), "fusion": float(fusion.detach())}
