"""PyTorch inference on numpy inputs, the reference every other backend is compared to."""
from __future__ import annotations

import numpy as np
import torch

from mrfs_edge.model.network import MRFS


def torch_infer_fn(model: MRFS, device: str | torch.device = "cpu"):
    """``infer(visible, infrared) -> (seg_logits, fused)`` numpy function for ``model`` in eval mode."""
    def infer(visible: np.ndarray, infrared: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with torch.inference_mode():
            seg, fused = model(torch.from_numpy(visible).to(device), torch.from_numpy(infrared).to(device))
        return seg.float().cpu().numpy(), fused.float().cpu().numpy()
    return infer
