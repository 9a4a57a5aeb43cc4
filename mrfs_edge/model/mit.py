"""Mix Transformer (SegFormer) building blocks, as each MRFS stream uses them.

Every eps and bias here is the authors': patch-embedding and reduction LayerNorms use
PyTorch's default 1e-5, block and stage LayerNorms 1e-6 (see the architecture spec).
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

BLOCK_LN_EPS = 1e-6


def tokens_to_map(tokens: Tensor, height: int, width: int) -> Tensor:
    """``N×(H·W)×C`` tokens to an ``N×C×H×W`` map."""
    n, _, c = tokens.shape
    return tokens.transpose(1, 2).reshape(n, c, height, width)


def map_to_tokens(feature_map: Tensor) -> Tensor:
    """``N×C×H×W`` map to ``N×(H·W)×C`` tokens."""
    return feature_map.flatten(2).transpose(1, 2)


class DropPath(nn.Module):
    """Stochastic depth for training from scratch; identity at inference (no weights)."""

    def __init__(self, rate: float = 0.0) -> None:
        super().__init__()
        self.rate = rate

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep


class OverlapPatchEmbed(nn.Module):
    """Strided convolution to tokens, then LayerNorm (eps 1e-5)."""

    def __init__(self, in_channels: int, embed_dim: int, kernel: int, stride: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, embed_dim, kernel, stride, padding=kernel // 2)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x: Tensor) -> tuple[Tensor, int, int]:
        x = self.proj(x)
        height, width = x.shape[2], x.shape[3]
        return self.norm(map_to_tokens(x)), height, width


class ReducedKeyValueAttention(nn.Module):
    """Base of every attention whose keys/values come from a spatially reduced token map.

    Shared by the encoder attention and the four PC-Att attentions. Subclasses declare their
    projections first and then call :meth:`_init_reduction`, so parameters keep the authors'
    order; with ratio 1 no ``sr``/``norm`` weights exist (the authors' stage-4 key set).
    """

    sr_ratio: int

    def _init_reduction(self, dim: int, ratio: int) -> None:
        self.sr_ratio = ratio
        if ratio > 1:
            self.sr = nn.Conv2d(dim, dim, kernel_size=ratio, stride=ratio)
            self.norm = nn.LayerNorm(dim)

    def reduce(self, tokens: Tensor, height: int, width: int) -> Tensor:
        """Strided conv + LayerNorm (eps 1e-5) over the token map; identity at ratio 1."""
        if self.sr_ratio == 1:
            return tokens
        return self.norm(map_to_tokens(self.sr(tokens_to_map(tokens, height, width))))


def multi_head_attention(q: Tensor, kv: Tensor, num_heads: int, dim: int) -> Tensor:
    """softmax(q·kᵀ·d^-½)·v with the authors' head layout.

    ``q`` is ``N×L×C``; ``kv`` is ``N×S×2C`` laid out as ``(2, heads, C/heads)`` so the first C
    channels are keys and the last C values. ``dim`` (= C) is passed as a Python int so the
    exported graph has constant head sizes and scale: only batch and token counts stay dynamic,
    which keeps the attention reshapes valid under dynamic shapes.
    """
    n = q.shape[0]
    head_dim = dim // num_heads
    q = q.reshape(n, -1, num_heads, head_dim).permute(0, 2, 1, 3)
    kv = kv.reshape(n, -1, 2, num_heads, head_dim).permute(2, 0, 3, 1, 4)
    k, v = kv[0], kv[1]
    attn = (q @ k.transpose(-2, -1)) * (head_dim ** -0.5)
    attn = attn.softmax(dim=-1)
    return (attn @ v).transpose(1, 2).reshape(n, -1, dim)


class EfficientSelfAttention(ReducedKeyValueAttention):
    """MiT attention: biased q/kv projections, keys/values from the reduced map."""

    def __init__(self, dim: int, num_heads: int, sr_ratio: int) -> None:
        super().__init__()
        self.dim, self.num_heads = dim, num_heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, dim * 2)
        self.proj = nn.Linear(dim, dim)
        self._init_reduction(dim, sr_ratio)

    def forward(self, x: Tensor, height: int, width: int) -> Tensor:
        kv = self.kv(self.reduce(x, height, width))
        return self.proj(multi_head_attention(self.q(x), kv, self.num_heads, self.dim))


class DepthwiseConv(nn.Module):
    """3×3 depthwise convolution applied to tokens on their map (MixFFN's positional cue)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, 1, 1, groups=dim)

    def forward(self, x: Tensor, height: int, width: int) -> Tensor:
        return map_to_tokens(self.dwconv(tokens_to_map(x, height, width)))


class MixFFN(nn.Module):
    """Linear → depthwise 3×3 → exact GELU → Linear."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.dwconv = DepthwiseConv(hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor, height: int, width: int) -> Tensor:
        return self.fc2(F.gelu(self.dwconv(self.fc1(x), height, width)))


class TransformerBlock(nn.Module):
    """Pre-norm block: ``x + Attn(LN1 x)``, then ``x + MixFFN(LN2 x)``."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: int, sr_ratio: int,
                 drop_path: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=BLOCK_LN_EPS)
        self.attn = EfficientSelfAttention(dim, num_heads, sr_ratio)
        self.norm2 = nn.LayerNorm(dim, eps=BLOCK_LN_EPS)
        self.mlp = MixFFN(dim, dim * mlp_ratio)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: Tensor, height: int, width: int) -> Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), height, width))
        return x + self.drop_path(self.mlp(self.norm2(x), height, width))


def init_weights(module: nn.Module) -> None:
    """SegFormer's initialisation, used when training from scratch."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Conv2d):
        fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels // module.groups
        nn.init.normal_(module.weight, 0.0, (2.0 / fan_out) ** 0.5)
        if module.bias is not None:
            nn.init.zeros_(module.bias)

