"""Training and fine-tuning MRFS with the authors' objective, and quantisation-aware fine-tuning
of its INT8 deploy graph (:mod:`.qat`); needs the ``export`` extra.

The PyTorch parts (loop, loss) are imported on first use, so ``python -m mrfs_edge.train --help``
(which imports this package first) answers without loading PyTorch. ``augment`` is imported here:
it is torch-free, and its function must shadow the submodule of the same name.
"""
from __future__ import annotations

import importlib
from typing import Any

from mrfs_edge.train.augment import AugmentConfig, augment

_TORCH_HOMES = {"TrainConfig": "loop", "Trainer": "loop", "poly_lr": "loop", "MRFSLoss": "loss",
                "balanced_class_weights": "loss", "fusion_loss": "loss", "QatConfig": "qat", "QatTrainer": "qat"}
__all__ = [
    "AugmentConfig",
    "MRFSLoss",
    "QatConfig",
    "QatTrainer",
    "TrainConfig",
    "Trainer",
    "augment",
    "balanced_class_weights",
    "fusion_loss",
    "poly_lr",
]


def __getattr__(name: str) -> Any:
    if name not in _TORCH_HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_TORCH_HOMES[name]}"), name)
