"""The MRFS network in PyTorch and its checkpoint loader (needs the ``export`` extra)."""
from ..errors import CheckpointError
from .checkpoint import build_from_state_dict, load_checkpoint, read_state_dict, save_checkpoint
from .network import MRFS
from .variants import VARIANTS, ModelConfig, variant_from_shapes

__all__ = ["MRFS", "ModelConfig", "VARIANTS", "CheckpointError", "load_checkpoint",
           "read_state_dict", "save_checkpoint", "variant_from_shapes", "build_from_state_dict"]
