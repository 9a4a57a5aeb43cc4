"""Deterministic, official-format MRFS checkpoints for tests (random but seeded weights).

Every tensor of the state dict gets a seeded value chosen so activations stay O(1) through the
network (weights ~ N(0, 1/fan_in), norm scales near 1, positive running variances), and every
floating value is exactly representable in float16, so a half-precision copy of the file gives
bit-identical outputs. Used by test_model, test_export and test_train.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from conftest import SPECS

MANIFEST = SPECS / "official_checkpoint_keys.json"

B0_9 = ("mit_b0", 9, 256)
B2_15 = ("mit_b2", 15, 512)
B4_9 = ("mit_b4", 9, 512)
B5_5 = ("mit_b5", 5, 768)


def load_manifest() -> dict:
    return json.loads(MANIFEST.read_text())


def _fill(key: str, reference: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    shape = reference.shape
    if not reference.is_floating_point():          # num_batches_tracked
        return torch.zeros(shape, dtype=reference.dtype)
    leaf = key.rsplit(".", 1)[-1]
    if leaf == "running_var":
        value = 0.5 + torch.rand(shape, generator=generator)
    elif leaf == "running_mean":
        value = 0.1 * torch.randn(shape, generator=generator)
    elif reference.ndim == 1 and leaf == "weight":   # LayerNorm / BatchNorm scale
        value = 1.0 + 0.2 * torch.randn(shape, generator=generator)
    elif reference.ndim == 1:                          # biases
        value = 0.1 * torch.randn(shape, generator=generator)
    else:                                              # Linear / Conv weights
        fan_in = math.prod(shape[1:])
        value = torch.randn(shape, generator=generator) / math.sqrt(fan_in)
    return value.half().float()


def seeded_state_dict(backbone: str = "mit_b0", num_classes: int = 9, decoder_embed_dim: int = 256,
                      seed: int = 0, balanced: bool = True) -> dict[str, torch.Tensor]:
    """The authors' key set for this configuration, filled deterministically from ``seed``.

    ``balanced`` shifts the class biases so that every class has mean logit 0 on a bundled
    frame: random weights otherwise give one class an O(1) lead everywhere and a constant argmax.
    """
    from mrfs_edge.model import MRFS, ModelConfig

    config = ModelConfig(backbone, num_classes, decoder_embed_dim)
    with torch.device("meta"):
        template = MRFS(config).state_dict()
    generator = torch.Generator().manual_seed(seed)
    state = {key: _fill(key, tensor, generator) for key, tensor in template.items()}
    if balanced:
        model = MRFS(config)
        model.load_state_dict(state)
        with torch.inference_mode():
            logits, _ = model.eval()(*_probe_frame())
        bias = state["decode_head.linear_pred.bias"] - logits.mean(dim=(0, 2, 3))
        state["decode_head.linear_pred.bias"] = bias.half().float()
    return state


def _probe_frame(height: int = 128, width: int = 160) -> tuple[torch.Tensor, torch.Tensor]:
    import cv2
    import numpy as np

    from mrfs_edge.assets import SAMPLES

    bgr = cv2.imread(str(SAMPLES / "vi" / "00147D.png"))
    grey = cv2.imread(str(SAMPLES / "ir" / "00147D.png"), cv2.IMREAD_GRAYSCALE)
    rgb = cv2.resize(bgr, (width, height), interpolation=cv2.INTER_AREA)[:, :, ::-1].transpose(2, 0, 1)
    ir = cv2.resize(grey, (width, height), interpolation=cv2.INTER_AREA)[None]
    return (torch.from_numpy(np.ascontiguousarray(rgb)[None].astype(np.float32) / 255.0),
            torch.from_numpy(ir[None].astype(np.float32) / 255.0))


def write_checkpoint(path: Path, config: tuple[str, int, int] = B0_9, seed: int = 0,
                     form: str = "model") -> Path:
    """Write a seeded checkpoint in one of the accepted forms.

    ``model``: the authors' ``{"model", "optimizer", "epoch", "iteration"}``; ``state_dict``;
    ``bare``; ``module``: DataParallel-prefixed keys under ``model``; ``half``: float16 weights.
    """
    state = seeded_state_dict(*config, seed=seed)
    if form == "model":
        payload = {"model": state, "optimizer": None, "epoch": 3, "iteration": 1200}
    elif form == "state_dict":
        payload = {"state_dict": state}
    elif form == "bare":
        payload = state
    elif form == "module":
        payload = {"model": {f"module.{k}": v for k, v in state.items()}, "epoch": 1}
    elif form == "half":
        payload = {"model": {k: v.half() if v.is_floating_point() else v for k, v in state.items()},
                   "optimizer": None, "epoch": 0, "iteration": 0}
    else:
        raise ValueError(form)
    path = Path(path)
    torch.save(payload, path)
    return path
