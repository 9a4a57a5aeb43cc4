"""The two MRFS cross-modal modules that sit after every encoder stage.

IGM-Att exchanges information between the visible and infrared maps ("vision" features for
fusion and the next stage); PC-Att condenses both into one "semantic" map for segmentation.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from mrfs_edge.model.mit import ReducedKeyValueAttention, map_to_tokens, multi_head_attention, tokens_to_map


class ChannelGate(nn.Module):
    """``ca``: avg- and max-pooled ``[v; t]`` through one shared MLP, summed, sigmoid."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(2 * dim, dim // 2), nn.ReLU(), nn.Linear(dim // 2, 2 * dim))

    def forward(self, both: Tensor) -> Tensor:
        n, c2 = both.shape[:2]
        pooled = self.mlp(both.mean(dim=(2, 3))) + self.mlp(both.amax(dim=(2, 3)))
        return torch.sigmoid(pooled).reshape(n, c2, 1, 1)


class SpatialGate(nn.Module):
    """``sa``: mean/max over channels of each stream, 1×1 convs 4→16→2, sigmoid."""

    def __init__(self) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Conv2d(4, 16, 1), nn.ReLU(), nn.Conv2d(16, 2, 1))

    def forward(self, v: Tensor, t: Tensor) -> Tensor:
        stats = torch.cat([v.mean(1, keepdim=True), v.amax(1, keepdim=True),
                           t.mean(1, keepdim=True), t.amax(1, keepdim=True)], dim=1)
        return torch.sigmoid(self.mlp(stats))


class MixAttention(nn.Module):
    """Per-stream masks ``m = ca · sa`` (channel times spatial attention)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.ca_gate = ChannelGate(dim)
        self.sa_gate = SpatialGate()

    def forward(self, v: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        dim = v.shape[1]
        ca = self.ca_gate(torch.cat([v, t], dim=1))
        sa = self.sa_gate(v, t)
        return ca[:, :dim] * sa[:, 0:1], ca[:, dim:] * sa[:, 1:2]


class IGMAttention(nn.Module):
    """Interactive gated mixed attention: ``v' = v + (1−g)·m_t·t``, ``t' = t + g·m_v·v``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.MA = MixAttention(dim)
        self.gate = nn.Sequential(nn.Linear(2 * dim, dim // 2), nn.ReLU(), nn.Linear(dim // 2, dim))

    def forward(self, v: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        height, width = v.shape[2], v.shape[3]
        tokens = torch.cat([map_to_tokens(v), map_to_tokens(t)], dim=2)
        g = tokens_to_map(torch.sigmoid(self.gate(tokens)), height, width)
        m_v, m_t = self.MA(v, t)
        return v + (1 - g) * m_t * t, t + g * m_v * v


class ResidualSelfAttention(ReducedKeyValueAttention):
    """PC-Att self-attention: bias-free q/kv, residual before the projection: ``proj(attn + x)``."""

    def __init__(self, dim: int, num_heads: int, sr_ratio: int) -> None:
        super().__init__()
        self.dim, self.num_heads = dim, num_heads
        self.q = nn.Linear(dim, dim, bias=False)
        self.kv = nn.Linear(dim, dim * 2, bias=False)
        self.proj = nn.Linear(dim, dim)
        self._init_reduction(dim, sr_ratio)

    def forward(self, x: Tensor, height: int, width: int) -> Tensor:
        kv = self.kv(self.reduce(x, height, width))
        return self.proj(multi_head_attention(self.q(x), kv, self.num_heads, self.dim) + x)


class ResidualCrossAttention(ReducedKeyValueAttention):
    """PC-Att cross-attention: queries from ``first``, keys/values from reduced ``second``."""

    def __init__(self, dim: int, num_heads: int, sr_ratio: int) -> None:
        super().__init__()
        self.dim, self.num_heads = dim, num_heads
        self.q1 = nn.Linear(dim, dim, bias=False)
        self.kv2 = nn.Linear(dim, dim * 2, bias=False)
        self.proj = nn.Linear(dim, dim)
        self._init_reduction(dim, sr_ratio)

    def forward(self, first: Tensor, second: Tensor, height: int, width: int) -> Tensor:
        kv = self.kv2(self.reduce(second, height, width))
        return self.proj(multi_head_attention(self.q1(first), kv, self.num_heads, self.dim) + first)


class PCAttention(nn.Module):
    """Progressive cycle attention: ``a=SA(v')``, ``b=CA(t',a)``, ``c=SA(b)``, ``d=CA(a,c)``, ``proj(d)``."""

    def __init__(self, dim: int, num_heads: int, sr_ratio: int) -> None:
        super().__init__()
        self.SA_x1 = ResidualSelfAttention(dim, num_heads, sr_ratio)
        self.CA_x1toX2 = ResidualCrossAttention(dim, num_heads, sr_ratio)
        self.SA_x2 = ResidualSelfAttention(dim, num_heads, sr_ratio)
        self.CA_x2toX1 = ResidualCrossAttention(dim, num_heads, sr_ratio)
        self.proj = nn.Linear(dim, dim)

    def forward(self, v: Tensor, t: Tensor) -> Tensor:
        height, width = v.shape[2], v.shape[3]
        a = self.SA_x1(map_to_tokens(v), height, width)
        b = self.CA_x1toX2(map_to_tokens(t), a, height, width)
        c = self.SA_x2(b, height, width)
        d = self.CA_x2toX1(a, c, height, width)
        return tokens_to_map(self.proj(d), height, width)
