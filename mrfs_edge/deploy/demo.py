"""The bundled demo checkpoint as ONNX, exported once per size into the cache folder (the FP32 step, keyed).

Commands run with no ``--model`` use it; the export itself needs PyTorch the first time only.
"""
from __future__ import annotations

import logging
from pathlib import Path

from mrfs_edge.assets import DEMO_CHECKPOINT, DEMO_INPUT_SIZE, cache_dir
from mrfs_edge.core.errors import MissingExtraError, ModelFileError
from mrfs_edge.core.export_options import ExportOptions
from mrfs_edge.core.files import sha256_file
from mrfs_edge.deploy.keys import why_rebuild
from mrfs_edge.deploy.steps import Fp32Onnx

LOG = logging.getLogger(__name__)


def default_onnx(height: int = DEMO_INPUT_SIZE[0], width: int = DEMO_INPUT_SIZE[1]) -> Path:
    """The demo checkpoint exported to ONNX at ``height`` × ``width``, reused while its key matches.

    Exporting needs PyTorch (the ``export`` extra) the first time only; afterwards the
    torch-free runtime uses the cached file.
    """
    path = cache_dir() / f"mrfs_b0_demo_{sha256_file(DEMO_CHECKPOINT)[:12]}_{height}x{width}.onnx"
    step = Fp32Onnx(DEMO_CHECKPOINT, ExportOptions(height=height, width=width))
    if why_rebuild(path, step.key()) is not None:
        LOG.info("no --model given: exporting the bundled demo model once to %s", path)
    try:
        return step.run(path)
    except MissingExtraError as exc:
        raise ModelFileError(f"{path}: demo ONNX not cached yet and exporting it needs PyTorch "
                             "(pip install -e '.[export]'), or pass --model") from exc
