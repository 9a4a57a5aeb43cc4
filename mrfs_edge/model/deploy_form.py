"""The deploy form of MRFS: the same outputs as the authors' network with fewer multiply-adds.

Every rewrite here is exact up to float rounding (the export's parity check compares the
exported deploy graph with the literal network on every export):

- **Segmentation head.** ``linear_fuse`` (1×1 conv 4E→E + BatchNorm) is linear and commutes with
  the bilinear resizes (linear too, and their weights sum to one, so a bias passes through
  unchanged). Each branch's E×E slice of it is therefore applied at the branch's own resolution
  and folded, with the BatchNorm, into that branch's ``linear_cK``. The two Linears in front of
  ``linear_cK`` (PC-Att's final ``proj`` and the ``proj`` of its last cross-attention) are folded
  in as well, so every branch is one C_k→E convolution on PC-Att's last residual sum; the four
  branches are resized and *summed*, then ReLU and ``linear_pred``. The whole bias sits on the
  c1 branch, which is not resized. The 4E-channel concat at stride 4 (5 GMACs for B0 at
  480×640) disappears, and each branch has its own scale when quantised.
- **One infrared channel.** The authors replicate the grey infrared image to three channels, so
  the infrared stream's first convolution and ``CNN_fuse``'s first convolution see three equal
  channels: their weights are summed over those channels and the graph takes one.
- **Attention scale.** ``softmax(q·kᵀ·d^-½)``: the ``d^-½`` is folded into the query projection's
  weights, removing a multiplication over every attention matrix (no multiply-adds, but those
  are the largest tensors of the network: memory traffic).
- **BatchNorm** of every PointConv and of ``CNN_fuse`` is folded into its convolution (the
  exporter does this too; folding here makes quantisation-aware training see the deploy graph).

The normal :class:`~mrfs_edge.model.network.MRFS` keeps the authors' modules and key names
(checkpoints load and save unchanged); this form exists only for export and quantisation.
Folding uses the BatchNorm running statistics, i.e. eval-mode behaviour, whatever the mode of
the source model, and drops the head's dropout (identity at inference).
"""
from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from mrfs_edge.model.heads import FusionHead, PointConv, SegFormerHead, resize
from mrfs_edge.model.interaction import PCAttention, ResidualCrossAttention, ResidualSelfAttention
from mrfs_edge.model.mit import EfficientSelfAttention, ReducedKeyValueAttention, map_to_tokens, tokens_to_map
from mrfs_edge.model.network import MRFS, DualMiTEncoder
from mrfs_edge.model.variants import FUSION_HEAD_WIDTH, ModelConfig

IrChannels = Literal[1, 3]
# Where the replicated infrared image sits among CNN_fuse's inputs: after 8 maps and the 3 RGB channels.
_FUSE_IR_START = 8 * FUSION_HEAD_WIDTH + 3


def unscaled_attention(q: Tensor, kv: Tensor, num_heads: int, dim: int) -> Tensor:
    """:func:`~mrfs_edge.model.mit.multi_head_attention` with its ``d^-½`` already in ``q``.

    The deploy form scales the query projection instead, which saves one multiplication over
    every N×heads×L×S attention matrix (at stride 4 the largest tensors of the network).
    """
    n = q.shape[0]
    head_dim = dim // num_heads
    q = q.reshape(n, -1, num_heads, head_dim).permute(0, 2, 1, 3)
    kv = kv.reshape(n, -1, 2, num_heads, head_dim).permute(2, 0, 3, 1, 4)
    attn = (q @ kv[0].transpose(-2, -1)).softmax(dim=-1)
    return (attn @ kv[1]).transpose(1, 2).reshape(n, -1, dim)


def _scaled_query(query: nn.Linear, num_heads: int) -> nn.Linear:
    """``query`` times ``head_dim^-½``, the attention scale, as one Linear."""
    scale = (query.out_features // num_heads) ** -0.5
    scaled = copy.deepcopy(query)
    scaled.weight.copy_((query.weight.double() * scale).to(query.weight.dtype))
    if query.bias is not None:
        scaled.bias.copy_((query.bias.double() * scale).to(query.bias.dtype))
    return scaled


class _DeployAttention(ReducedKeyValueAttention):
    def _share_reduction(self, source: ReducedKeyValueAttention) -> None:
        self.sr_ratio = source.sr_ratio
        if source.sr_ratio > 1:
            self.sr, self.norm = source.sr, source.norm


class DeploySelfAttention(_DeployAttention):
    """MiT's and PC-Att's self-attention with the attention scale folded into ``q``.

    ``residual`` (PC-Att) adds the input before the output projection: ``proj(attn + x)``.
    """

    def __init__(self, source: EfficientSelfAttention | ResidualSelfAttention) -> None:
        super().__init__()
        self.dim, self.num_heads = source.dim, source.num_heads
        self.residual = isinstance(source, ResidualSelfAttention)
        self.q = _scaled_query(source.q, source.num_heads)
        self.kv, self.proj = source.kv, source.proj
        self._share_reduction(source)

    def forward(self, x: Tensor, height: int, width: int) -> Tensor:
        kv = self.kv(self.reduce(x, height, width))
        attended = unscaled_attention(self.q(x), kv, self.num_heads, self.dim)
        return self.proj(attended + x if self.residual else attended)


class DeployCrossAttention(_DeployAttention):
    """PC-Att's cross-attention with the attention scale folded into ``q1``.

    ``project=False`` stops at the residual sum ``attn + first``: for PC-Att's last
    cross-attention, whose ``proj`` is folded into the segmentation head (its only consumer).
    """

    def __init__(self, source: ResidualCrossAttention, project: bool = True) -> None:
        super().__init__()
        self.dim, self.num_heads = source.dim, source.num_heads
        self.q1 = _scaled_query(source.q1, source.num_heads)
        self.kv2 = source.kv2
        self.proj = source.proj if project else None
        self._share_reduction(source)

    def forward(self, first: Tensor, second: Tensor, height: int, width: int) -> Tensor:
        kv = self.kv2(self.reduce(second, height, width))
        attended = unscaled_attention(self.q1(first), kv, self.num_heads, self.dim) + first
        return attended if self.proj is None else self.proj(attended)


class DeployPCAttention(nn.Module):
    """PC-Att without its two output projections: returns ``d`` before ``proj`` as a C-channel map."""

    def __init__(self, source: PCAttention) -> None:
        super().__init__()
        self.SA_x1 = DeploySelfAttention(source.SA_x1)
        self.CA_x1toX2 = DeployCrossAttention(source.CA_x1toX2)
        self.SA_x2 = DeploySelfAttention(source.SA_x2)
        self.CA_x2toX1 = DeployCrossAttention(source.CA_x2toX1, project=False)

    def forward(self, v: Tensor, t: Tensor) -> Tensor:
        height, width = v.shape[2], v.shape[3]
        a = self.SA_x1(map_to_tokens(v), height, width)
        b = self.CA_x1toX2(map_to_tokens(t), a, height, width)
        c = self.SA_x2(b, height, width)
        return tokens_to_map(self.CA_x2toX1(a, c, height, width), height, width)


class DeploySegHead(nn.Module):
    """``linear_pred(ReLU(Σ_k resize(linear_cK(d_k))))``: one folded 1×1 conv per branch, summed."""

    def __init__(self, branches: Sequence[nn.Conv2d], linear_pred: nn.Conv2d) -> None:
        super().__init__()
        self.linear_c1, self.linear_c2, self.linear_c3, self.linear_c4 = branches
        self.linear_pred = linear_pred

    def forward(self, features: Sequence[Tensor]) -> Tensor:
        c1, c2, c3, c4 = features
        size = c1.shape[2:]
        fused = (self.linear_c1(c1) + resize(self.linear_c2(c2), size) + resize(self.linear_c3(c3), size)
                 + resize(self.linear_c4(c4), size))
        return self.linear_pred(torch.relu(fused))


class DeployMRFS(nn.Module):
    """``forward(rgb, modal_x) -> (seg_logits, fused)`` like :class:`MRFS`; ``modal_x`` has
    ``ir_channels`` channels (one grey infrared channel unless a 3-channel camera was exported)."""

    def __init__(self, config: ModelConfig, ir_channels: IrChannels, backbone: DualMiTEncoder,
                 decode_head: DeploySegHead, aux_head: FusionHead) -> None:
        super().__init__()
        self.config = config
        self.ir_channels = ir_channels
        self.backbone = backbone
        self.decode_head = decode_head
        self.aux_head = aux_head

    def forward(self, rgb: Tensor, modal_x: Tensor) -> tuple[Tensor, Tensor]:
        if modal_x.shape[1] != self.ir_channels:
            raise ValueError(f"this deploy form takes {self.ir_channels} infrared channel(s), "
                             f"got {modal_x.shape[1]}")
        vision, semantic = self.backbone(rgb, modal_x)
        seg_logits = resize(self.decode_head(semantic), rgb.shape[2:])
        fused = self.aux_head(vision, rgb, modal_x)
        return seg_logits, fused


@dataclass(frozen=True)
class RewriteSavings:
    """Multiply-adds the deploy form removes at one input size, per rewrite, from layer shapes.

    The export reports the literal network's cost as the deploy graph's count plus these; the
    tests check that sum against a count on the literal graph.
    """

    segmentation_head: int      # linear_fuse, and PC-Att's two final projections
    infrared_channel: int       # the replicated infrared channels of the two first convolutions

    @property
    def total(self) -> int:
        return self.segmentation_head + self.infrared_channel


def rewrite_savings(config: ModelConfig, height: int, width: int, ir_channels: IrChannels = 1,
                    batch: int = 1) -> RewriteSavings:
    """What :func:`to_deploy_form` saves on a ``batch``×``height``×``width`` input."""
    dims, embed = config.encoder.embed_dims, config.decoder_embed_dim
    tokens = [batch * (height // s) * (width // s) for s in (4, 8, 16, 32)]
    head = sum(2 * n * c * c for n, c in zip(tokens, dims)) + tokens[0] * 4 * embed * embed
    infrared = 0
    if ir_channels == 1:
        infrared = 2 * 7 * 7 * dims[0] * tokens[0] + 2 * 3 * 3 * FUSION_HEAD_WIDTH * batch * height * width
    return RewriteSavings(head, infrared)


def to_deploy_form(model: MRFS, ir_channels: IrChannels = 1) -> DeployMRFS:
    """A folded copy of ``model`` for export (``model`` itself is not changed).

    ``ir_channels=1`` folds the replicated infrared channel (the graph then takes the grey image as
    is); 3 keeps three infrared input channels for colour-mapped cameras.
    """
    if ir_channels not in (1, 3):
        raise ValueError(f"ir_channels must be 1 or 3, not {ir_channels!r}")
    source = copy.deepcopy(model)
    with torch.no_grad():
        backbone = source.backbone
        head_branches = _fold_segmentation_head(source.decode_head, list(backbone.PCASCs))
        backbone.PCASCs = nn.ModuleList(DeployPCAttention(pc) for pc in backbone.PCASCs)
        for stage in range(1, 5):
            for prefix in ("", "extra_"):
                for block in getattr(backbone, f"{prefix}block{stage}"):
                    block.attn = DeploySelfAttention(block.attn)
        if ir_channels == 1:
            backbone.extra_patch_embed1.proj = _sum_input_channels(backbone.extra_patch_embed1.proj, 0, 3)
        aux = source.aux_head
        for stage in range(1, 5):
            for stream in ("rgb", "ir"):
                point: PointConv = getattr(aux, f"PointConv_{stage}_{stream}")
                point.pconv = nn.Sequential(_fold_batchnorm(point.pconv[0], point.pconv[1]), point.pconv[2])
        first = _fold_batchnorm(aux.CNN_fuse[0], aux.CNN_fuse[1])
        if ir_channels == 1:
            first = _sum_input_channels(first, _FUSE_IR_START, 3)
        aux.CNN_fuse = nn.Sequential(first, *list(aux.CNN_fuse)[2:])
    deploy = DeployMRFS(source.config, ir_channels, backbone,
                        DeploySegHead(head_branches, source.decode_head.linear_pred), aux)
    return deploy.train(model.training)


def _fold_segmentation_head(head: SegFormerHead, pc_attentions: Sequence[PCAttention]) -> list[nn.Conv2d]:
    """The four C_k→E convolutions of the deploy head (float64 products, float32 result).

    Branch k computes ``s ⊙ (F_k · L_k · P_k · A_k · d_k)``, with ``A_k``/``P_k`` PC-Att's two final
    projections, ``L_k`` = ``linear_cK``, ``F_k`` its slice of ``linear_fuse`` (concat order
    c4, c3, c2, c1) and ``s`` the BatchNorm scale; every bias term goes to the c1 branch.
    """
    conv, norm = head.linear_fuse[0], head.linear_fuse[1]
    embed = conv.out_channels
    fuse = conv.weight.detach().double().reshape(embed, 4 * embed)
    scale = norm.weight.double() / torch.sqrt(norm.running_var.double() + norm.eps)
    bias = scale * (conv.bias.double() - norm.running_mean.double()) + norm.bias.double()
    weights = []
    for k, pc in enumerate(pc_attentions):
        linear = getattr(head, f"linear_c{k + 1}").proj
        position = 3 - k                       # concat is [c4, c3, c2, c1]
        fuse_k = fuse[:, position * embed:(position + 1) * embed]
        last, final = pc.CA_x2toX1.proj, pc.proj
        matrix = fuse_k @ linear.weight.double() @ final.weight.double() @ last.weight.double()
        offset = fuse_k @ (linear.weight.double() @ (final.weight.double() @ last.bias.double()
                                                     + final.bias.double()) + linear.bias.double())
        weights.append(scale[:, None] * matrix)
        bias = bias + scale * offset
    branches = []
    for k, weight in enumerate(weights):
        branch = nn.Conv2d(weight.shape[1], embed, 1, bias=k == 0)
        branch.weight.copy_(weight.reshape(embed, -1, 1, 1))
        if k == 0:
            branch.bias.copy_(bias)
        branches.append(branch.to(conv.weight.dtype))
    return branches


def _fold_batchnorm(conv: nn.Conv2d, norm: nn.BatchNorm2d) -> nn.Conv2d:
    """``norm(conv(x))`` as one convolution (running statistics)."""
    scale = norm.weight.double() / torch.sqrt(norm.running_var.double() + norm.eps)
    bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(scale)
    folded = copy.deepcopy(conv)
    folded.weight.copy_((conv.weight.double() * scale[:, None, None, None]).to(conv.weight.dtype))
    if folded.bias is None:
        folded.bias = nn.Parameter(torch.empty_like(scale, dtype=conv.weight.dtype))
    folded.bias.copy_((scale * (bias - norm.running_mean.double()) + norm.bias.double()).to(conv.weight.dtype))
    return folded


def _sum_input_channels(conv: nn.Conv2d, start: int, count: int) -> nn.Conv2d:
    """``conv`` fed ``count`` copies of one channel at ``start``, as a convolution fed that channel once."""
    weight = conv.weight
    merged = weight[:, start:start + count].double().sum(dim=1, keepdim=True).to(weight.dtype)
    new_weight = torch.cat([weight[:, :start], merged, weight[:, start + count:]], dim=1)
    folded = nn.Conv2d(new_weight.shape[1], conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                       conv.dilation, conv.groups, conv.bias is not None, conv.padding_mode,
                       device=weight.device, dtype=weight.dtype)
    folded.weight.copy_(new_weight)
    if conv.bias is not None:
        folded.bias.copy_(conv.bias)
    return folded


__all__ = ["DeployMRFS", "IrChannels", "RewriteSavings", "rewrite_savings", "to_deploy_form"]
