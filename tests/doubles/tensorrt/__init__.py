"""A TensorRT Python API double whose surface is one release's, read from the API specs.

``import tensorrt`` with ``tests/doubles`` on ``sys.path`` gives the release named by env
``MRFS_FAKE_TRT_RELEASE`` (default 10.3.0), described by ``<specs>/<release>.json`` (specs: env
``MRFS_TRT_API_SPECS``, else ``<repo>/../shared/specs/tensorrt-api``). A class, method, property or
enum member that release lacks raises AttributeError; one it has but this double does not model
raises NotImplementedError naming it, so nothing passes against API TensorRT does not have.
:func:`_load` builds a fresh module for any release (``tests/fake_tensorrt.py`` uses it).
Behaviour lives in :mod:`._model`; it needs only numpy and onnxruntime.
"""
from __future__ import annotations

import os
import sys
import types
from pathlib import Path
from typing import Any, Dict

from . import _model

_RELEASES = ("8.5.2", "8.6.1", "10.3.0", "10.13.0", "10.16", "11.0", "11.1")
_FULL_VERSION = {"8.5.2": "8.5.2.2", "8.6.1": "8.6.1.6", "10.3.0": "10.3.0.30", "10.13.0": "10.13.0.35",
                "10.16": "10.16.0.72", "11.0": "11.0.0.14", "11.1": "11.1.0.8"}


def _specs_dir() -> Path:
    env = os.environ.get("MRFS_TRT_API_SPECS")
    if env:
        return Path(env)
    repo = Path(__file__).resolve().parents[3]
    return repo.parent / "shared" / "specs" / "tensorrt-api"


def _load(release: str, **knobs: Any) -> types.ModuleType:
    """A new ``tensorrt`` module imitating ``release``; ``knobs`` tune the modelled GPU (see _model.KNOBS)."""
    if release not in _RELEASES:
        raise ValueError(f"MRFS_FAKE_TRT_RELEASE must be one of {_RELEASES}, not {release!r}")
    return _model.build_module(_specs_dir() / f"{release}.json", _FULL_VERSION[release], knobs)


_module = _load(os.environ.get("MRFS_FAKE_TRT_RELEASE", "10.3.0"))
_public: Dict[str, Any] = {k: v for k, v in vars(_module).items() if not k.startswith("__") or k == "__version__"}
globals().update(_public)
__all__ = [k for k in _public if not k.startswith("_")]
_self = sys.modules[__name__]
