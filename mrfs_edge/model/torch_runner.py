"""The PyTorch network behind the :class:`Runner` interface: the reference every backend is compared to.

Benchmarks and parity checks measure ONNX Runtime and TensorRT against eager PyTorch on the same
feeds; wrapping the checkpoint as a runner lets one loop time and score every backend, with the
same contract (names, shapes, preprocessing) as the ONNX file exported from that checkpoint.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from mrfs_edge.backends.base import Runner


class TorchRunner(Runner):
    """Eager PyTorch inference of an MRFS checkpoint on ``device`` (float feeds, logits out).

    The contract is the one :func:`~mrfs_edge.export.export_onnx` would give an export at
    ``height×width`` with default options, so feeds built for that ONNX model run here unchanged.
    Eager PyTorch accepts any batch size, whatever the contract's static batch says.
    ``threads`` > 0 sets ``torch.set_num_threads`` on activation; that setting is process-wide.
    ``device`` "cuda" runs the reference on the GPU (outputs come back to the host each call, so
    the time includes the copies, as an application's would).
    """

    backend = "pytorch"

    def __init__(self, checkpoint: str | os.PathLike[str], height: int = 480, width: int = 640,
                 threads: int = 0, device: str = "cpu") -> None:
        from mrfs_edge.core.export_options import ExportOptions
        from mrfs_edge.core.files import sha256_file
        from mrfs_edge.model import load_checkpoint
        from mrfs_edge.model.contract import build_contract

        self.path = Path(checkpoint)
        self.threads = threads
        self.model = load_checkpoint(self.path)
        contract = build_contract(self.model, ExportOptions(height=height, width=width), sha256_file(self.path))
        super().__init__(contract, f"pytorch:{self.path.name}")
        self.device = device
        self._infer_fn = None

    def _activate(self) -> None:
        import torch

        from mrfs_edge.model.inference import torch_infer_fn

        if self.threads:
            torch.set_num_threads(self.threads)
        self.model.to(self.device)
        self._infer_fn = torch_infer_fn(self.model, self.device)

    def _infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        assert self._infer_fn is not None
        seg, fused = self._infer_fn(np.ascontiguousarray(feed["visible"]), np.ascontiguousarray(feed["infrared"]))
        return {self.contract.seg_name: seg, "fused": fused}

    def _deactivate(self) -> None:
        self._infer_fn = None
