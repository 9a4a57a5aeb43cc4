"""Embedded defaults: the bundled demo checkpoint and sample pairs (torch-free).

Every command falls back to these when the user gives no checkpoint or data, and says so in
one line on stderr, so a fresh clone runs end to end with no arguments.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

ASSETS = Path(__file__).resolve().parent
DEMO_CHECKPOINT = ASSETS / "mrfs_b0_mfnet_demo.pth"
DEMO_MODEL_CARD = ASSETS / "MODEL_CARD.md"
SAMPLES = ASSETS / "samples"
EVAL_SPLIT = SAMPLES / "eval.txt"
CALIB_SPLIT = SAMPLES / "calib.txt"
DEMO_INPUT_SIZE = (480, 640)


def cache_dir() -> Path:
    """Where derived artefacts of the defaults (e.g. the demo ONNX) are cached."""
    root = os.environ.get("MRFS_EDGE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "mrfs_edge")
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def announce(message: str) -> None:
    print(f"[mrfs-edge] {message}", file=sys.stderr)


def checkpoint_or_default(path: str | os.PathLike[str] | None) -> Path:
    if path:
        return Path(path)
    announce(f"no --checkpoint given: using the bundled demo model {DEMO_CHECKPOINT.name} (MRFS-B0, MFNet classes)")
    return DEMO_CHECKPOINT


def data_or_default(path: str | os.PathLike[str] | None, split: Path = EVAL_SPLIT,
                    what: str = "data") -> tuple[Path, Path | None]:
    """``(folder, split list or None)``: the user's folder, or the bundled samples and a split."""
    if path:
        return Path(path), None
    announce(f"no {what} given: using the {len(split.read_text().split())} bundled sample pairs "
             f"({SAMPLES.relative_to(ASSETS.parent.parent)}/{split.name})")
    return SAMPLES, split


def default_onnx(height: int = DEMO_INPUT_SIZE[0], width: int = DEMO_INPUT_SIZE[1]) -> Path:
    """The demo checkpoint exported to ONNX, cached by checkpoint hash and size.

    Exporting needs PyTorch (the ``export`` extra) the first time only; afterwards the
    torch-free runtime uses the cached file.
    """
    from ..errors import ModelFileError
    from ..utils.files import sha256_file

    digest = sha256_file(DEMO_CHECKPOINT)[:12]
    path = cache_dir() / f"mrfs_b0_demo_{digest}_{height}x{width}.onnx"
    if path.exists():
        announce(f"no --model given: using the cached demo model {path}")
        return path
    try:
        from ..export import ExportOptions, export_onnx
    except ImportError as exc:
        raise ModelFileError(f"{path}: demo ONNX not cached yet and exporting it needs PyTorch "
                             "(pip install -e '.[export]'), or pass --model") from exc
    announce(f"no --model given: exporting the bundled demo model once to {path}")
    export_onnx(DEMO_CHECKPOINT, path, ExportOptions(height=height, width=width), log=announce)
    return path
