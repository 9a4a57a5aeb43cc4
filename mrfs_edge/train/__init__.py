"""Training and fine-tuning MRFS with the authors' objective (needs the ``export`` extra)."""
from mrfs_edge.train.augment import AugmentConfig, augment
from mrfs_edge.train.loop import TrainConfig, Trainer, poly_lr
from mrfs_edge.train.loss import MRFSLoss, balanced_class_weights, fusion_loss

__all__ = ["AugmentConfig", "augment", "TrainConfig", "Trainer", "poly_lr", "MRFSLoss",
           "balanced_class_weights", "fusion_loss"]
