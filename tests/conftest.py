"""Shared test fixtures: paths to ../shared data and small deterministic checkpoints."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MRFS_SHARED", REPO.parent / "shared"))
SHARED_DATA = SHARED / "data"
SPECS = SHARED / "specs"


def needs_shared(path: Path) -> pytest.MarkDecorator:
    return pytest.mark.skipif(not path.exists(), reason=f"{path} not present (../shared not mounted)")


@pytest.fixture(scope="session")
def mfnet_dir() -> Path:
    path = SHARED_DATA / "mfnet_subset"
    if not path.exists():
        pytest.skip(f"{path} not present")
    return path
