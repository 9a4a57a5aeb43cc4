"""MRFS encoder variants and the rules that recover a variant from checkpoint weights.

Torch-free on purpose: the runtime and the export metadata describe a network by these
names without importing PyTorch.
"""
from __future__ import annotations

from dataclasses import dataclass, field

# The spec: heads, MLP ratio and spatial-reduction ratios are shared by every MiT size.
NUM_HEADS = (1, 2, 5, 8)
SR_RATIOS = (8, 4, 2, 1)
MLP_RATIO = 4
FUSION_HEAD_WIDTH = 16  # every PointConv and CNN_fuse works at 16 channels


@dataclass(frozen=True)
class EncoderVariant:
    """Widths and depths of one MiT size, as the authors instantiate it."""

    name: str
    embed_dims: tuple[int, int, int, int]
    depths: tuple[int, int, int, int]
    num_heads: tuple[int, int, int, int] = field(default=NUM_HEADS)
    sr_ratios: tuple[int, int, int, int] = field(default=SR_RATIOS)
    mlp_ratio: int = MLP_RATIO


_SMALL = (32, 64, 160, 256)
_LARGE = (64, 128, 320, 512)

VARIANTS: dict[str, EncoderVariant] = {
    "mit_b0": EncoderVariant("mit_b0", _SMALL, (2, 2, 2, 2)),
    "mit_b1": EncoderVariant("mit_b1", _LARGE, (2, 2, 2, 2)),
    "mit_b2": EncoderVariant("mit_b2", _LARGE, (3, 4, 6, 3)),
    "mit_b3": EncoderVariant("mit_b3", _LARGE, (3, 4, 18, 3)),
    "mit_b4": EncoderVariant("mit_b4", _LARGE, (3, 8, 27, 3)),
    "mit_b5": EncoderVariant("mit_b5", _LARGE, (3, 6, 40, 3)),
}


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to instantiate an MRFS network whose state dict fits a checkpoint."""

    backbone: str = "mit_b0"
    num_classes: int = 9
    decoder_embed_dim: int = 256

    @property
    def encoder(self) -> EncoderVariant:
        return VARIANTS[self.backbone]

    def as_dict(self) -> dict[str, object]:
        return {"backbone": self.backbone, "num_classes": self.num_classes,
                "decoder_embed_dim": self.decoder_embed_dim}


class UnsupportedVariantError(ValueError):
    """The weights describe an encoder no MiT size has."""


def variant_from_shapes(shapes: dict[str, tuple[int, ...]]) -> ModelConfig:
    """Infer the configuration from parameter shapes alone (nothing in the file names it).

    Width comes from the first patch embedding, depths from the highest block index per stage,
    classes from the prediction layer and the decoder width from ``linear_c1``.
    """
    width = shapes["backbone.patch_embed1.proj.weight"][0]
    depths = []
    for stage in range(1, 5):
        prefix = f"backbone.block{stage}."
        indices = {int(k[len(prefix):].split(".", 1)[0]) for k in shapes if k.startswith(prefix)}
        depths.append(max(indices) + 1 if indices else 0)
    found = tuple(depths)
    embed = _SMALL if width == 32 else _LARGE if width == 64 else None
    matches = [v for v in VARIANTS.values() if v.embed_dims == embed and v.depths == found]
    if not matches:
        raise UnsupportedVariantError(
            f"no MiT variant has stage-1 width {width} and depths {list(found)} "
            f"(supported: {', '.join(f'{v.name} {v.embed_dims[0]}/{list(v.depths)}' for v in VARIANTS.values())})")
    return ModelConfig(
        backbone=matches[0].name,
        num_classes=shapes["decode_head.linear_pred.weight"][0],
        decoder_embed_dim=shapes["decode_head.linear_c1.proj.weight"][0],
    )
