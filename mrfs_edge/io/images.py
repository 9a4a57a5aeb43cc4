"""Image reading with errors that name the file (OpenCV alone returns ``None``)."""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from mrfs_edge.core.errors import ImageError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def _read_bytes(path: Path) -> np.ndarray:
    if not path.exists():
        raise ImageError(f"{path}: no such image")
    if not path.is_file():
        raise ImageError(f"{path}: not a file")
    return np.fromfile(str(path), dtype=np.uint8)


def _decode(path: Path, data: np.ndarray, flags: int) -> np.ndarray:
    image = cv2.imdecode(data, flags) if data.size else None
    if image is None:
        raise ImageError(f"{path}: unreadable or corrupt image ({data.size} bytes)")
    return image


def _read(path: Path, flags: int) -> np.ndarray:
    return _decode(path, _read_bytes(path), flags)


def read_visible(path: str | os.PathLike[str]) -> np.ndarray:
    """Visible frame as RGB ``H×W×3`` uint8 (OpenCV reads BGR; the network wants RGB)."""
    image = _read(Path(path), cv2.IMREAD_COLOR)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_infrared(path: str | os.PathLike[str]) -> np.ndarray:
    """Infrared frame as ``H×W`` grey, keeping 16-bit depth when the file has it.

    A 3-channel thermal file (colour-mapped or replicated) is reduced to grey, as the
    authors' loader reads infrared with ``IMREAD_GRAYSCALE``.
    """
    path = Path(path)
    data = _read_bytes(path)
    image = _decode(path, data, cv2.IMREAD_UNCHANGED)
    if image.ndim == 3:
        # Decode again the authors' way: the decoder's own grey conversion differs from
        # cvtColor (±1 for PNG; JPEG decodes luma directly).
        depth = cv2.IMREAD_ANYDEPTH if image.dtype == np.uint16 else 0
        image = _decode(path, data, cv2.IMREAD_GRAYSCALE | depth)
    if image.dtype not in (np.uint8, np.uint16):
        raise ImageError(f"{path}: infrared image has unsupported pixel type {image.dtype}")
    return image


def read_label(path: str | os.PathLike[str]) -> np.ndarray:
    """Class-index label ``H×W`` uint8, values used as they are (no shift, no ignore value)."""
    image = _read(Path(path), cv2.IMREAD_UNCHANGED)
    if image.ndim == 3:
        raise ImageError(f"{path}: label must be a single-channel class-index image, got {image.shape[2]} channels")
    return image.astype(np.uint8, copy=False)


def write_image(path: str | os.PathLike[str], image: np.ndarray, rgb: bool = True) -> None:
    """Write an image atomically (temporary name, then rename); RGB input is converted to BGR."""
    from mrfs_edge.core.files import write_bytes_atomic

    path = Path(path)
    if rgb and image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, encoded = cv2.imencode(path.suffix or ".png", image)
    if not ok:
        raise ImageError(f"{path}: could not encode image")
    write_bytes_atomic(path, encoded.tobytes())
