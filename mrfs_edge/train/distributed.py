"""Multi-process training as the authors run it: ``torchrun --nproc_per_node=N`` (DistributedDataParallel).

``torchrun`` (and the older ``torch.distributed.launch``) describe the process through the
environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``) or a
``--local-rank`` argument; a plain ``python -m mrfs_edge.train`` has none of them and runs as
a single process without a process group. NCCL on GPUs, gloo on the CPU.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import nn

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProcessContext:
    """Where this process sits: its rank among ``world_size`` and the device it trains on."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        """Rank 0 alone logs, saves checkpoints, exports and evaluates."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return dist.is_available() and dist.is_initialized()


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def init_process(local_rank: int | None = None, device: str = "auto") -> ProcessContext:
    """Join the process group when launched by torchrun; a single-process context otherwise.

    ``device`` "auto" takes GPU ``LOCAL_RANK`` when CUDA is available, else the CPU.
    """
    use_cuda = torch.cuda.is_available() if device == "auto" else device == "cuda"
    if not launched_by_torchrun():
        return ProcessContext(device=torch.device("cuda", local_rank or 0) if use_cuda else torch.device("cpu"))
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_RANK", local_rank if local_rank is not None else 0))
    if use_cuda:
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo", rank=rank, world_size=world)
    LOG.debug(f"process {rank}/{world} (local {local}) joined the {dist.get_backend()} group")
    return ProcessContext(rank, world, local, torch.device("cuda", local) if use_cuda else torch.device("cpu"))


def wrap_model(model: nn.Module, context: ProcessContext) -> nn.Module:
    """DistributedDataParallel inside a process group (gradients averaged over ranks), else ``model``."""
    if not context.distributed:
        return model
    ids = [context.device.index] if context.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def barrier(context: ProcessContext) -> None:
    if context.distributed:
        dist.barrier()


def close_process(context: ProcessContext) -> None:
    if context.distributed:
        dist.destroy_process_group()
