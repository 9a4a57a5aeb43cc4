"""The two MRFS heads: SegFormer's all-MLP segmentation decoder and the CNN fusion head."""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mrfs_edge.model.mit import map_to_tokens, tokens_to_map
from mrfs_edge.model.variants import FUSION_HEAD_WIDTH


def resize(x: Tensor, size: Sequence[int]) -> Tensor:
    """Bilinear resize with ``align_corners=False``, the only resize MRFS uses.

    ``size`` is passed through untouched (no ``int()``) so that, under tracing, it stays tied
    to the input's shape and dynamic-resolution exports keep run-time output sizes.
    """
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class TokenLinear(nn.Module):
    """A per-pixel Linear on a feature map (SegFormer's ``MLP`` with its ``proj`` key)."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(in_dim, out_dim)

    def forward(self, x: Tensor) -> Tensor:
        return tokens_to_map(self.proj(map_to_tokens(x)), x.shape[2], x.shape[3])


class SegFormerHead(nn.Module):
    """Project c1..c4 to E, upsample to stride 4, concat ``[c4,c3,c2,c1]``, fuse, predict."""

    def __init__(self, in_dims: Sequence[int], embed_dim: int, num_classes: int) -> None:
        super().__init__()
        self.linear_c4 = TokenLinear(in_dims[3], embed_dim)
        self.linear_c3 = TokenLinear(in_dims[2], embed_dim)
        self.linear_c2 = TokenLinear(in_dims[1], embed_dim)
        self.linear_c1 = TokenLinear(in_dims[0], embed_dim)
        self.linear_fuse = nn.Sequential(
            nn.Conv2d(4 * embed_dim, embed_dim, 1), nn.BatchNorm2d(embed_dim), nn.ReLU())
        self.dropout = nn.Dropout2d(0.1)
        self.linear_pred = nn.Conv2d(embed_dim, num_classes, 1)

    def forward(self, features: Sequence[Tensor]) -> Tensor:
        c1, c2, c3, c4 = features
        size = c1.shape[2:]
        projected = [resize(self.linear_c4(c4), size), resize(self.linear_c3(c3), size),
                     resize(self.linear_c2(c2), size), self.linear_c1(c1)]
        return self.linear_pred(self.dropout(self.linear_fuse(torch.cat(projected, dim=1))))


class PointConv(nn.Module):
    """1×1 conv to 16 channels + BN + ReLU (one per stage and stream)."""

    def __init__(self, in_dim: int) -> None:
        super().__init__()
        self.pconv = nn.Sequential(
            nn.Conv2d(in_dim, FUSION_HEAD_WIDTH, 1), nn.BatchNorm2d(FUSION_HEAD_WIDTH), nn.ReLU())

    def forward(self, x: Tensor) -> Tensor:
        return self.pconv(x)


class FusionHead(nn.Module):
    """Eight vision maps at input resolution plus both images → 3-channel fused image in (0, 1)."""

    def __init__(self, in_dims: Sequence[int], image_channels: int = 6) -> None:
        super().__init__()
        for stage, dim in enumerate(in_dims, start=1):
            setattr(self, f"PointConv_{stage}_rgb", PointConv(dim))
            setattr(self, f"PointConv_{stage}_ir", PointConv(dim))
        width = FUSION_HEAD_WIDTH
        self.CNN_fuse = nn.Sequential(
            nn.Conv2d(8 * width + image_channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, 3, 1), nn.Sigmoid())

    def forward(self, vision: Sequence[Tensor], rgb: Tensor, modal_x: Tensor) -> Tensor:
        size = rgb.shape[2:]
        maps = []
        for stage in range(1, 5):
            visible, infrared = vision[2 * stage - 2], vision[2 * stage - 1]
            maps.append(resize(getattr(self, f"PointConv_{stage}_rgb")(visible), size))
            maps.append(resize(getattr(self, f"PointConv_{stage}_ir")(infrared), size))
        return self.CNN_fuse(torch.cat(maps + [rgb, modal_x], dim=1))
