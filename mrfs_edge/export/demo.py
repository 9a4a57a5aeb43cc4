"""The bundled demo checkpoint as ONNX, exported once per size and cached by checkpoint hash.

Commands run with no ``--model`` use it; the export itself needs PyTorch the first time only.
"""
from __future__ import annotations

from pathlib import Path

from mrfs_edge.assets import DEMO_CHECKPOINT, DEMO_INPUT_SIZE, cache_dir
from mrfs_edge.core.errors import ModelFileError
from mrfs_edge.core.export_options import ExportOptions
from mrfs_edge.core.files import sha256_file
from mrfs_edge.core.log import announce


def default_onnx(height: int = DEMO_INPUT_SIZE[0], width: int = DEMO_INPUT_SIZE[1]) -> Path:
    """The demo checkpoint exported to ONNX, cached by checkpoint hash and size.

    Exporting needs PyTorch (the ``export`` extra) the first time only; afterwards the
    torch-free runtime uses the cached file.
    """
    digest = sha256_file(DEMO_CHECKPOINT)[:12]
    path = cache_dir() / f"mrfs_b0_demo_{digest}_{height}x{width}.onnx"
    if path.exists():
        announce(f"no --model given: using the cached demo model {path}")
        return path
    try:
        from mrfs_edge.export import export_onnx
    except ImportError as exc:
        raise ModelFileError(f"{path}: demo ONNX not cached yet and exporting it needs PyTorch "
                             "(pip install -e '.[export]'), or pass --model") from exc
    announce(f"no --model given: exporting the bundled demo model once to {path}")
    export_onnx(DEMO_CHECKPOINT, path, ExportOptions(height=height, width=width), log=announce)
    return path
