"""Reading and writing checkpoints in the authors' format.

The authors save ``{"model": state_dict, "optimizer": ..., "epoch": int, "iteration": int}``;
users also hold bare state dicts, ``{"state_dict": ...}`` and DataParallel ``module.`` keys.
Nothing in a file names the variant, so it is inferred from weight shapes, and the weights are
loaded strictly: a checkpoint that leaves one parameter unused is not this network.
"""
from __future__ import annotations

import os
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mrfs_edge.core.errors import CheckpointError
from mrfs_edge.core.files import atomic_path
from mrfs_edge.model.network import MRFS
from mrfs_edge.model.variants import ModelConfig, UnsupportedVariantError, variant_from_shapes

_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_PROTOCOL_2_PLUS = b"\x80"
_REQUIRED_FOR_INFERENCE = ("backbone.patch_embed1.proj.weight", "decode_head.linear_pred.weight",
                           "decode_head.linear_c1.proj.weight")


def _check_file(path: Path) -> None:
    if not path.exists():
        raise CheckpointError(f"{path}: no such file")
    if not path.is_file():
        raise CheckpointError(f"{path}: not a file")
    with open(path, "rb") as handle:
        head = handle.read(4)
    if not head:
        raise CheckpointError(f"{path}: empty file, not a PyTorch checkpoint")
    if head == _ZIP_MAGIC:
        if not zipfile.is_zipfile(path):
            raise CheckpointError(f"{path}: truncated or corrupt PyTorch checkpoint (zip archive is incomplete)")
    elif not head.startswith(_PICKLE_PROTOCOL_2_PLUS):
        raise CheckpointError(f"{path}: not a PyTorch checkpoint (starts with {head!r}, "
                              "expected a torch.save zip archive or pickle)")


def _torch_load(path: Path, map_location: str | torch.device, trusted: bool) -> Any:
    try:
        return torch.load(path, map_location=map_location, weights_only=not trusted)
    except pickle.UnpicklingError as exc:
        if "weights_only" in str(exc) or "Unsupported global" in str(exc):
            first = str(exc).strip().splitlines()[0]
            raise CheckpointError(
                f"{path}: holds pickled Python objects beyond tensors ({first[:120]}); "
                "load it only if you trust its source, with trusted=True / --trust-checkpoint") from exc
        raise CheckpointError(f"{path}: corrupt PyTorch checkpoint ({exc})") from exc
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: truncated or corrupt PyTorch checkpoint ({message})") from exc


def _extract_state_dict(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, Mapping):
        for key in ("model", "state_dict"):
            if key in obj and isinstance(obj[key], Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(f"{path}: no state dict found (expected a dict of tensors, "
                              "or one under 'model' or 'state_dict')")
    tensors = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError(f"{path}: no tensors found in the checkpoint's state dict")
    stripped = {k[len("module."):] if k.startswith("module.") else k: v for k, v in tensors.items()}
    # Demo checkpoints ship in half precision; the network computes in float32.
    return {k: v.float() if v.is_floating_point() else v for k, v in stripped.items()}


def read_state_dict(path: str | os.PathLike[str], map_location: str | torch.device = "cpu",
                    trusted: bool = False) -> dict[str, torch.Tensor]:
    """The checkpoint's weights as a float32 state dict with ``module.`` prefixes removed."""
    path = Path(path)
    _check_file(path)
    return _extract_state_dict(_torch_load(path, map_location, trusted), path)


def _describe_mismatch(path: Path, expected: Mapping[str, torch.Tensor],
                       found: Mapping[str, torch.Tensor], config: ModelConfig | None) -> str:
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    wrong_shape = [f"{k} {tuple(found[k].shape)}≠{tuple(expected[k].shape)}"
                   for k in expected if k in found and found[k].shape != expected[k].shape]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
    if wrong_shape:
        parts.append(f"{len(wrong_shape)} with other shapes (e.g. {', '.join(wrong_shape[:2])})")
    what = f" as {config.backbone}" if config else ""
    return f"{path}: not an MRFS checkpoint{what}: {'; '.join(parts)}"


def config_from_state_dict(state: Mapping[str, torch.Tensor], path: Path | str = "<state dict>") -> ModelConfig:
    """Infer backbone, classes and decoder width, or say why the weights are not MRFS."""
    absent = [k for k in _REQUIRED_FOR_INFERENCE if k not in state]
    if absent:
        sample = ", ".join(list(state)[:3])
        raise CheckpointError(f"{path}: not an MRFS checkpoint: missing {', '.join(absent)} "
                              f"(its keys start {sample}, ...)")
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    try:
        return variant_from_shapes(shapes)
    except UnsupportedVariantError as exc:
        raise CheckpointError(f"{path}: unsupported MRFS variant: {exc}") from exc


def build_from_state_dict(state: Mapping[str, torch.Tensor], path: Path | str = "<state dict>",
                          drop_path_rate: float = 0.0) -> MRFS:
    """Instantiate the matching MRFS and load ``state`` strictly (every key used)."""
    config = config_from_state_dict(state, path)
    model = MRFS(config, drop_path_rate=drop_path_rate)
    expected = model.state_dict()
    if set(expected) != set(state) or any(expected[k].shape != state[k].shape for k in expected):
        raise CheckpointError(_describe_mismatch(Path(path), expected, state, config))
    model.load_state_dict(state, strict=True)
    return model


def load_checkpoint(path: str | os.PathLike[str], map_location: str | torch.device = "cpu",
                    trusted: bool = False) -> MRFS:
    """Load an authors'-format MRFS checkpoint into an eval-mode network.

    Reads weights only (``weights_only=True``); ``trusted=True`` allows arbitrary pickles and
    must only be used for files from a trusted source.
    """
    path = Path(path)
    model = build_from_state_dict(read_state_dict(path, map_location, trusted), path)
    return model.to(map_location).eval()


def save_checkpoint(path: str | os.PathLike[str], model: nn.Module, *,
                    optimizer: torch.optim.Optimizer | None = None, epoch: int = 0, iteration: int = 0,
                    half: bool = False, extra: Mapping[str, Any] | None = None) -> Path:
    """Write the authors' format atomically; ``half`` stores float weights as float16 (shipping)."""
    state = model.state_dict()
    if half:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    payload: dict[str, Any] = {"model": state, "optimizer": optimizer.state_dict() if optimizer else None,
                               "epoch": epoch, "iteration": iteration}
    if extra:
        payload.update(extra)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return Path(path)
