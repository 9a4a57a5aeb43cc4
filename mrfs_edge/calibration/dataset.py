"""Calibration sets: a deterministic, stratified choice of pairs, fed as a plain iterator.

Neighbouring video frames are near duplicates and day and night scenes have very different
activation ranges, so pairs are taken round-robin across day/night strata and evenly spaced
within each stratum. The iterator yields feed dicts named by the model's contract, with the
runtime's own preprocessing, in the spirit of ONNX Runtime's ``CalibrationDataReader``.
"""
from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from mrfs_edge.core.contract import ModelContract
from mrfs_edge.io.pairs import PairFolder
from mrfs_edge.processing.preprocess import fit_to_model
from mrfs_edge.processing.thermal import ThermalAGC

_DAY = re.compile(r"(day|D$)", re.IGNORECASE)
_NIGHT = re.compile(r"(night|N$)", re.IGNORECASE)


def stratum(name: str) -> str:
    """'night', 'day' or 'all' from the frame name (MFNet/MSRS suffix D/N, or the words)."""
    if _NIGHT.search(name) and not name.lower().endswith("d"):
        return "night"
    if _DAY.search(name):
        return "day"
    return "all"


def select_pairs(names: list[str], count: int) -> list[int]:
    """Indices of ``count`` pairs: round-robin over strata, evenly spread within each."""
    strata: dict[str, list[int]] = {}
    for index in sorted(range(len(names)), key=lambda i: names[i]):
        strata.setdefault(stratum(names[index]), []).append(index)
    count = min(count, len(names))
    quotas = {key: 0 for key in strata}
    while sum(quotas.values()) < count:
        for key in sorted(strata):
            if sum(quotas.values()) < count and quotas[key] < len(strata[key]):
                quotas[key] += 1
    chosen: list[int] = []
    for key in sorted(strata):
        members, quota = strata[key], quotas[key]
        if quota:
            picks = np.linspace(0, len(members) - 1, quota).round().astype(int)
            chosen += [members[i] for i in dict.fromkeys(picks.tolist())]
    return sorted(chosen, key=lambda i: names[i])


def fingerprint_pairs(folder: PairFolder, indices: Sequence[int]) -> str:
    """SHA-256 over the names and bytes of the pairs at ``indices`` (visible, then infrared).

    Cache keys identify pairs by content, not by the folder's path; this needs no model
    contract, so a key can be computed before any model is read.
    """
    digest = hashlib.sha256()
    for index in indices:
        for path in folder.paths(index)[:2]:
            digest.update(path.name.encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


@dataclass
class CalibrationSet:
    """The chosen pairs of a folder, prepared for a model with ``contract``."""

    folder: PairFolder
    indices: list[int]
    contract: ModelContract
    # 16-bit thermal reaches the model through the runtime's gain control, each frame on its own.
    _thermal: ThermalAGC = field(default_factory=lambda: ThermalAGC(smoothing=0.0), init=False, repr=False)

    @classmethod
    def from_folder(cls, folder: PairFolder, count: int, contract: ModelContract) -> CalibrationSet:
        return cls(folder, select_pairs(folder.names, count), contract)

    @property
    def names(self) -> list[str]:
        return [self.folder.names[i] for i in self.indices]

    def __len__(self) -> int:
        return len(self.indices)

    def feed(self, position: int) -> dict[str, np.ndarray]:
        """The runtime's feed (the model's layout and batch) for the pair at ``position`` in the set."""
        pair = self.folder[self.indices[position]]
        feed, _ = fit_to_model(pair.visible, self._thermal(pair.infrared), self.contract)
        return feed

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        for position in range(len(self)):
            yield self.feed(position)

    def stacked(self) -> dict[str, np.ndarray]:
        """All feeds concatenated on the batch axis (ModelOpt's ``calibration_data``)."""
        feeds = list(self)
        return {name: np.concatenate([f[name] for f in feeds]) for name in self.contract.input_names}

    def fingerprint(self) -> str:
        """SHA-256 over the chosen names and file bytes: identifies the set in sidecars/caches."""
        return fingerprint_pairs(self.folder, self.indices)
