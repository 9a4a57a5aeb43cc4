"""The deployable graph around MRFS: the I/O contract lives here, not in the network.

The wrapper takes the single infrared channel as it is: the deploy form
(:mod:`mrfs_edge.model.deploy_form`) has the replication folded into its weights, and for the
literal network the wrapper replicates it inside the graph (as the authors' loader does on the
host). It optionally takes uint8 NHWC camera frames and returns uint8 fused frames, and
optionally takes the ArgMax on the device so only an int32 label map is copied back. ``decompose_layernorm`` swaps LayerNorm for primitive ops for TensorRT 8.5 parsers.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from mrfs_edge.model.deploy_form import DeployMRFS
from mrfs_edge.model.network import MRFS


class PrimitiveLayerNorm(nn.Module):
    """LayerNorm over the last axis from ReduceMean/Sub/Mul/Add/Sqrt/Div (no opset-17 op).

    ``(x − μ) / sqrt(mean((x − μ)²) + eps) · γ + β``: the same arithmetic as ``nn.LayerNorm``;
    the squared deviation uses Mul (not Pow) so TensorRT can fuse it, and the whole chain is
    pinned to FP32 by the engine builder because ``(x − μ)²`` overflows in FP16.
    """

    def __init__(self, norm: nn.LayerNorm) -> None:
        super().__init__()
        self.weight, self.bias, self.eps = norm.weight, norm.bias, norm.eps

    def forward(self, x: Tensor) -> Tensor:
        centred = x - x.mean(dim=-1, keepdim=True)
        variance = (centred * centred).mean(dim=-1, keepdim=True)
        return centred / torch.sqrt(variance + self.eps) * self.weight + self.bias


def decompose_layernorm(module: nn.Module) -> nn.Module:
    """Replace every ``nn.LayerNorm`` child in place by :class:`PrimitiveLayerNorm`."""
    for name, child in module.named_children():
        if isinstance(child, nn.LayerNorm):
            setattr(module, name, PrimitiveLayerNorm(child))
        else:
            decompose_layernorm(child)
    return module


class DeployWrapper(nn.Module):
    """``(visible, infrared) -> (seg_logits | seg_labels, fused)`` under the export contract."""

    def __init__(self, model: MRFS | DeployMRFS, seg_output: str = "logits", uint8_io: bool = False,
                 ir_channels: int = 1) -> None:
        super().__init__()
        if isinstance(model, DeployMRFS) and model.ir_channels != ir_channels:
            raise ValueError(f"the deploy form takes {model.ir_channels} infrared channel(s), "
                             f"the contract {ir_channels}")
        self.model = model
        self.seg_output = seg_output
        self.uint8_io = uint8_io
        self.replicate_infrared = ir_channels == 1 and not isinstance(model, DeployMRFS)

    def forward(self, visible: Tensor, infrared: Tensor) -> tuple[Tensor, Tensor]:
        if self.uint8_io:
            visible = visible.permute(0, 3, 1, 2).float() * (1.0 / 255.0)
            infrared = infrared.permute(0, 3, 1, 2).float() * (1.0 / 255.0)
        if self.replicate_infrared:
            infrared = torch.cat([infrared, infrared, infrared], dim=1)
        seg, fused = self.model(visible, infrared)
        if self.seg_output == "labels":
            seg = seg.argmax(dim=1).to(torch.int32)
        if self.uint8_io:
            fused = torch.round(fused * 255.0).clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
        return seg, fused
