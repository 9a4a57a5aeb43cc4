"""One runner interface for every backend, in the spirit of Polygraphy's runners.

A runner is built from a model file, activated once (sessions, device buffers), then called
with a feed dict of numpy arrays named as in the :class:`~mrfs_edge.core.contract.ModelContract`;
it returns the outputs by name. Evaluation, calibration checks, the runtime pipeline and the
benchmarks all talk to this interface only.
"""
from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Mapping

import numpy as np

from mrfs_edge.core.contract import ModelContract


class Runner(ABC):
    """Base runner: subclasses implement ``_activate``, ``_infer`` and ``_deactivate``."""

    backend: str = "abstract"

    def __init__(self, contract: ModelContract, name: str) -> None:
        self.contract = contract
        self.name = name
        self.device = "cpu"
        self.is_active = False
        self.last_inference_time: float | None = None

    def __enter__(self) -> "Runner":
        self.activate()
        return self

    def __exit__(self, *exc: object) -> None:
        self.deactivate()

    def activate(self) -> None:
        if not self.is_active:
            self._activate()
            self.is_active = True

    def deactivate(self) -> None:
        if self.is_active:
            self._deactivate()
            self.is_active = False

    def infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run once; ``last_inference_time`` is the model-only wall time in seconds."""
        if not self.is_active:
            self.activate()
        missing = [n for n in self.contract.input_names if n not in feed]
        if missing:
            raise KeyError(f"{self.name}: feed lacks inputs {missing}")
        start = time.perf_counter()
        outputs = self._infer(feed)
        self.last_inference_time = time.perf_counter() - start
        return outputs

    @abstractmethod
    def _activate(self) -> None: ...

    @abstractmethod
    def _infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def _deactivate(self) -> None:
        """Release sessions or device memory; nothing by default."""
