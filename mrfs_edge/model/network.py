"""The MRFS network: a dual MiT encoder with IGM-Att/PC-Att after every stage and two heads.

Attribute names and registration order reproduce the authors' state dict key for key, so
their checkpoints load with ``strict=True`` and ours load in their code.
"""
from __future__ import annotations

from torch import Tensor, nn

from mrfs_edge.model.heads import FusionHead, SegFormerHead, resize
from mrfs_edge.model.interaction import IGMAttention, PCAttention
from mrfs_edge.model.mit import BLOCK_LN_EPS, OverlapPatchEmbed, TransformerBlock, init_weights, tokens_to_map
from mrfs_edge.model.variants import EncoderVariant, ModelConfig


class DualMiTEncoder(nn.Module):
    """Two MiT streams (visible: ``patch_embed``/``block``/``norm``; infrared: ``extra_*``)."""

    def __init__(self, variant: EncoderVariant, drop_path_rate: float = 0.0) -> None:
        super().__init__()
        dims, depths = variant.embed_dims, variant.depths
        in_dims = (3,) + dims[:3]
        for prefix in ("", "extra_"):
            for s in range(4):
                kernel, stride = (7, 4) if s == 0 else (3, 2)
                setattr(self, f"{prefix}patch_embed{s + 1}",
                        OverlapPatchEmbed(in_dims[s], dims[s], kernel, stride))
        rates = _drop_path_rates(depths, drop_path_rate)
        for s in range(4):
            for prefix in ("", "extra_"):
                setattr(self, f"{prefix}block{s + 1}", nn.ModuleList(
                    TransformerBlock(dims[s], variant.num_heads[s], variant.mlp_ratio,
                                     variant.sr_ratios[s], rates[s][i]) for i in range(depths[s])))
                setattr(self, f"{prefix}norm{s + 1}", nn.LayerNorm(dims[s], eps=BLOCK_LN_EPS))
        self.IGMAVCs = nn.ModuleList(IGMAttention(d) for d in dims)
        self.PCASCs = nn.ModuleList(
            PCAttention(d, h, r) for d, h, r in zip(dims, variant.num_heads, variant.sr_ratios))

    def _stream_stage(self, prefix: str, stage: int, x: Tensor) -> Tensor:
        tokens, height, width = getattr(self, f"{prefix}patch_embed{stage}")(x)
        for block in getattr(self, f"{prefix}block{stage}"):
            tokens = block(tokens, height, width)
        return tokens_to_map(getattr(self, f"{prefix}norm{stage}")(tokens), height, width)

    def forward(self, rgb: Tensor, modal_x: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        """Returns (vision maps ``[v1,t1,..,v4,t4]``, semantic maps ``[c1..c4]``)."""
        vision: list[Tensor] = []
        semantic: list[Tensor] = []
        v, t = rgb, modal_x
        for stage in range(1, 5):
            v = self._stream_stage("", stage, v)
            t = self._stream_stage("extra_", stage, t)
            v, t = self.IGMAVCs[stage - 1](v, t)
            semantic.append(self.PCASCs[stage - 1](v, t))
            vision += [v, t]
        return vision, semantic


def _drop_path_rates(depths: tuple[int, ...], rate: float) -> list[list[float]]:
    """Stochastic depth rising linearly over all blocks (training only)."""
    total = sum(depths)
    flat = [rate * i / max(total - 1, 1) for i in range(total)]
    out, start = [], 0
    for depth in depths:
        out.append(flat[start:start + depth])
        start += depth
    return out


class MRFS(nn.Module):
    """``forward(rgb, modal_x) -> (seg_logits, fused)`` exactly as the authors define it.

    ``rgb`` is ``N×3×H×W`` in [0, 1]; ``modal_x`` is the infrared image, ``N×3×H×W`` (replicated
    grey, the authors' convention) or ``N×1×H×W`` (replicated here). H and W must be multiples
    of 32.
    """

    def __init__(self, config: ModelConfig, drop_path_rate: float = 0.0) -> None:
        super().__init__()
        self.config = config
        dims = config.encoder.embed_dims
        self.backbone = DualMiTEncoder(config.encoder, drop_path_rate)
        self.decode_head = SegFormerHead(dims, config.decoder_embed_dim, config.num_classes)
        self.aux_head = FusionHead(dims)

    def reset_parameters(self) -> None:
        """SegFormer initialisation for training from scratch.

        The class predictor starts near zero so initial logits are small (uniform softmax);
        the generic fan-out rule would give logits of std ≈ 5 and a slow first phase.
        """
        self.apply(init_weights)
        nn.init.normal_(self.decode_head.linear_pred.weight, 0.0, 0.01)

    def forward(self, rgb: Tensor, modal_x: Tensor) -> tuple[Tensor, Tensor]:
        if modal_x.shape[1] == 1:
            modal_x = modal_x.expand(-1, 3, -1, -1)
        vision, semantic = self.backbone(rgb, modal_x)
        seg_logits = resize(self.decode_head(semantic), rgb.shape[2:])
        fused = self.aux_head(vision, rgb, modal_x)
        return seg_logits, fused
