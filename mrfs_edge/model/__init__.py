"""The MRFS network in PyTorch and its checkpoint loader (needs the ``export`` extra)."""
from mrfs_edge.core.errors import CheckpointError
from mrfs_edge.model.checkpoint import build_from_state_dict, load_checkpoint, read_state_dict, save_checkpoint
from mrfs_edge.model.network import MRFS
from mrfs_edge.model.variants import VARIANTS, ModelConfig, variant_from_shapes

__all__ = ["MRFS", "ModelConfig", "VARIANTS", "CheckpointError", "load_checkpoint",
           "read_state_dict", "save_checkpoint", "variant_from_shapes", "build_from_state_dict"]
