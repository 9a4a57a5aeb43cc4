"""Registered infrared/visible pairs from the folder layouts users have.

Layouts: ``vi/ ir/ label/`` (MSRS), ``visible/ infrared/ label/`` (MFNet as the MRFS authors
lay it out) and ``Visible/ Infrared/ Label/`` (FMB). Pairs are matched by file stem; an
optional split list (one name per line, with or without extension) selects and orders them.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import (
    Sequence,  # subscripted as a base class: collections.abc's is not on 3.8
)

import numpy as np

from mrfs_edge.core.errors import DatasetError, ImageError
from mrfs_edge.io.images import (
    IMAGE_EXTENSIONS,
    read_infrared,
    read_label,
    read_visible,
)

LAYOUTS: dict[str, tuple[str, str, str]] = {
    "msrs": ("vi", "ir", "label"),
    "mfnet": ("visible", "infrared", "label"),
    "fmb": ("Visible", "Infrared", "Label"),
}


@dataclass
class Pair:
    """One registered frame pair; ``infrared`` may be 16-bit, ``label`` may be absent."""

    name: str
    visible: np.ndarray
    infrared: np.ndarray
    label: np.ndarray | None = None

    @property
    def size(self) -> tuple[int, int]:
        return int(self.visible.shape[0]), int(self.visible.shape[1])


def detect_layout(root: Path) -> tuple[str, str, str]:
    for folders in LAYOUTS.values():
        if (root / folders[0]).is_dir() and (root / folders[1]).is_dir():
            return folders
    known = "; ".join(f"{a}/ {b}/ [{c}/]" for a, b, c in LAYOUTS.values())
    raise DatasetError(f"{root}: no paired layout found (expected one of: {known})")


def read_split(path: Path) -> list[str]:
    """Names from a split list: one per line, extension optional, blank lines and # ignored."""
    if not path.is_file():
        raise DatasetError(f"{path}: split list not found")
    names = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            names.append(Path(line).stem if Path(line).suffix.lower() in IMAGE_EXTENSIONS else line)
    if not names:
        raise DatasetError(f"{path}: split list is empty")
    return names


def _index(folder: Path) -> dict[str, Path]:
    return {p.stem: p for p in sorted(folder.iterdir())
            if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS}


class PairFolder(Sequence[Pair]):
    """A folder of registered pairs, indexable and iterable; images are read on access.

    ``split`` is a list file (absolute, or relative to ``root``) or a list of names.
    ``require_labels`` makes a missing label an error instead of ``None``.
    """

    def __init__(self, root: str | os.PathLike[str], split: str | os.PathLike[str] | Sequence[str] | None = None,
                 require_labels: bool = False) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise DatasetError(f"{self.root}: paired data folder not found")
        vis_dir, ir_dir, label_dir = detect_layout(self.root)
        self.visible_dir, self.infrared_dir = self.root / vis_dir, self.root / ir_dir
        self.label_dir = self.root / label_dir if (self.root / label_dir).is_dir() else None
        visible, infrared = _index(self.visible_dir), _index(self.infrared_dir)
        labels = _index(self.label_dir) if self.label_dir else {}
        if split is None:
            names = sorted(visible)
        elif isinstance(split, (str, os.PathLike)):
            split_path = Path(split)
            names = read_split(split_path if split_path.is_absolute() or split_path.exists() else self.root / split_path)
        else:
            names = list(split)
        if not names:
            raise DatasetError(f"{self.visible_dir}: no images found")
        self._entries: list[tuple[str, Path, Path, Path | None]] = []
        for name in names:
            if name not in visible:
                raise ImageError(f"{self.visible_dir / name}.*: visible image missing for pair '{name}'")
            if name not in infrared:
                raise ImageError(f"{self.infrared_dir / name}.*: infrared partner missing for {visible[name]}")
            label = labels.get(name)
            if require_labels and label is None:
                where = self.label_dir or self.root / label_dir
                raise ImageError(f"{where / name}.*: label missing for {visible[name]}")
            self._entries.append((name, visible[name], infrared[name], label))
        self.has_labels = all(entry[3] is not None for entry in self._entries)

    @property
    def names(self) -> list[str]:
        return [entry[0] for entry in self._entries]

    def paths(self, index: int) -> tuple[Path, Path, Path | None]:
        _, vis, ir, label = self._entries[index]
        return vis, ir, label

    def __len__(self) -> int:
        return len(self._entries)

    def __getitem__(self, index: int) -> Pair:  # type: ignore[override]
        name, vis_path, ir_path, label_path = self._entries[index]
        visible, infrared = read_visible(vis_path), read_infrared(ir_path)
        if visible.shape[:2] != infrared.shape[:2]:
            raise ImageError(f"{ir_path}: infrared is {infrared.shape[1]}x{infrared.shape[0]} but its visible "
                             f"partner {vis_path.name} is {visible.shape[1]}x{visible.shape[0]} (pairs must be registered)")
        label = read_label(label_path) if label_path else None
        if label is not None and label.shape != visible.shape[:2]:
            raise ImageError(f"{label_path}: label is {label.shape[1]}x{label.shape[0]} but {vis_path.name} "
                             f"is {visible.shape[1]}x{visible.shape[0]}")
        return Pair(name, visible, infrared, label)

    def __iter__(self) -> Iterator[Pair]:
        for index in range(len(self)):
            yield self[index]
