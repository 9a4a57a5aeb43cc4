"""Infrared → visible registration for cameras that are not co-axial (torch-free).

MRFS expects pixel-aligned pairs. Two cameras side by side on a vehicle are not, so the
infrared frame is warped onto the visible frame with a homography (planar scene or distant
objects) or an affine transform (small parallax, fewer points needed). The transform is
stored in a small YAML or JSON file::

    {"type": "homography", "matrix": [[...], [...], [...]], "visible_size": [640, 480]}

``matrix`` maps infrared pixel coordinates to visible pixel coordinates at ``visible_size``;
a visible stream at another resolution is handled by scaling the transform, so one file
survives a change of camera mode.
"""
from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import yaml

from mrfs_edge.core.errors import MrfsEdgeError
from mrfs_edge.core.files import write_bytes_atomic

KINDS = {"homography": (3, 3), "affine": (2, 3)}
MIN_POINTS = {"homography": 4, "affine": 3}


class RegistrationError(MrfsEdgeError):
    """A registration file or set of correspondences cannot be used."""


@dataclass
class Registration:
    """A 3×3 homography or 2×3 affine from infrared to visible pixels."""

    kind: str
    matrix: np.ndarray
    visible_size: tuple[int, int] | None = None   # (W, H) the matrix was estimated for
    rms_error_px: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise RegistrationError(f"registration type must be one of {', '.join(KINDS)}, not {self.kind!r}")
        self.matrix = np.asarray(self.matrix, dtype=np.float64)
        if self.matrix.shape != KINDS[self.kind]:
            raise RegistrationError(f"a {self.kind} matrix is {KINDS[self.kind][0]}x{KINDS[self.kind][1]}, "
                                    f"got {'x'.join(map(str, self.matrix.shape))}")
        if not np.all(np.isfinite(self.matrix)):
            raise RegistrationError("registration matrix has non-finite values")

    def homography(self, visible_size: tuple[int, int] | None = None) -> np.ndarray:
        """The 3×3 transform, rescaled to a visible frame of ``visible_size`` (W, H)."""
        matrix = self.matrix if self.kind == "homography" else np.vstack([self.matrix, [0.0, 0.0, 1.0]])
        if visible_size is None or self.visible_size is None or tuple(visible_size) == tuple(self.visible_size):
            return matrix
        sx, sy = visible_size[0] / self.visible_size[0], visible_size[1] / self.visible_size[1]
        return np.diag([sx, sy, 1.0]) @ matrix

    def warp(self, infrared: np.ndarray, visible_size: tuple[int, int]) -> np.ndarray:
        """The infrared frame resampled onto the visible pixel grid (W, H); outside is zero.

        Works on 8- or 16-bit frames. An integer translation moves pixels exactly (no blur).
        """
        matrix = self.homography(visible_size)
        size = (int(visible_size[0]), int(visible_size[1]))
        if self.kind == "affine":
            return cv2.warpAffine(infrared, matrix[:2], size, flags=cv2.INTER_LINEAR, borderValue=0)
        return cv2.warpPerspective(infrared, matrix, size, flags=cv2.INTER_LINEAR, borderValue=0)

    def to_dict(self) -> dict:
        data: dict = {"type": self.kind, "matrix": self.matrix.tolist()}
        if self.visible_size is not None:
            data["visible_size"] = [int(v) for v in self.visible_size]
        if self.rms_error_px is not None:
            data["rms_error_px"] = round(float(self.rms_error_px), 4)
        return data


def load_registration(path: str | os.PathLike[str]) -> Registration:
    """Read a registration file (YAML or JSON: JSON is valid YAML); errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise RegistrationError(f"{path}: no such registration file")
    try:
        data = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise RegistrationError(f"{path}: not valid YAML/JSON ({str(exc).splitlines()[0]})") from exc
    if not isinstance(data, dict) or "matrix" not in data:
        raise RegistrationError(f"{path}: expected a mapping with 'type', 'matrix' and 'visible_size'")
    size = data.get("visible_size")
    if size is not None and (len(size) != 2 or min(size) <= 0):
        raise RegistrationError(f"{path}: visible_size must be [width, height], got {size}")
    try:
        return Registration(str(data.get("type", "homography")), data["matrix"],
                            (int(size[0]), int(size[1])) if size else None, data.get("rms_error_px"))
    except (RegistrationError, ValueError, TypeError) as exc:
        raise RegistrationError(f"{path}: {exc}") from exc


def save_registration(path: str | os.PathLike[str], registration: Registration) -> Path:
    """Write atomically, as YAML for ``.yaml``/``.yml`` and JSON otherwise."""
    path = Path(path)
    data = registration.to_dict()
    if path.suffix.lower() in (".yaml", ".yml"):
        text = yaml.safe_dump(data, default_flow_style=None, sort_keys=False)
    else:
        text = json.dumps(data, indent=2) + "\n"
    return write_bytes_atomic(path, text.encode())


def estimate_registration(points_ir: Sequence[Sequence[float]], points_vis: Sequence[Sequence[float]],
                          kind: str = "homography", visible_size: tuple[int, int] | None = None,
                          ransac_px: float = 3.0) -> Registration:
    """Fit infrared→visible from point correspondences (RANSAC once there are spare points)."""
    if kind not in KINDS:
        raise RegistrationError(f"registration type must be one of {', '.join(KINDS)}, not {kind!r}")
    src = np.asarray(points_ir, dtype=np.float64).reshape(-1, 2)
    dst = np.asarray(points_vis, dtype=np.float64).reshape(-1, 2)
    if len(src) != len(dst):
        raise RegistrationError(f"{len(src)} infrared points but {len(dst)} visible points")
    if len(src) < MIN_POINTS[kind]:
        raise RegistrationError(f"a {kind} needs at least {MIN_POINTS[kind]} point pairs, got {len(src)}")
    if _collinear(src) or _collinear(dst):
        raise RegistrationError(f"cannot fit a {kind}: the {len(src)} points lie on one line; spread them over the frame")
    if kind == "homography":
        method = cv2.RANSAC if len(src) > MIN_POINTS[kind] else 0
        matrix, _ = cv2.findHomography(src, dst, method, ransac_px)
    else:
        matrix, _ = cv2.estimateAffine2D(src, dst, ransacReprojThreshold=ransac_px)
    if matrix is None:
        raise RegistrationError(f"cannot fit a {kind} to these {len(src)} points (degenerate points?)")
    registration = Registration(kind, matrix, visible_size)
    projected = cv2.perspectiveTransform(src[None], registration.homography())[0]
    registration.rms_error_px = float(np.sqrt(np.mean(np.sum((projected - dst) ** 2, axis=1))))
    return registration


def _collinear(points: np.ndarray) -> bool:
    """True when the points span no area (OpenCV may still return a meaningless matrix)."""
    spread = np.linalg.svd(points - points.mean(axis=0), compute_uv=False)
    return bool(spread[-1] <= 1e-6 * max(spread[0], 1.0))


def parse_correspondence(text: str) -> tuple[tuple[float, float], tuple[float, float]]:
    """``"x,y:x,y"`` (infrared point, then visible point) → two (x, y) tuples."""
    try:
        ir, vis = text.split(":")
        (ix, iy), (vx, vy) = (tuple(float(v) for v in part.split(",")) for part in (ir, vis))
    except ValueError as exc:
        raise RegistrationError(f"point pair {text!r}: expected 'x,y:x,y' (infrared point : visible point)") from exc
    return (ix, iy), (vx, vy)


def read_correspondences(path: str | os.PathLike[str]) -> list[tuple[tuple[float, float], tuple[float, float]]]:
    """One ``x,y:x,y`` pair per line; blank lines and ``#`` comments ignored."""
    path = Path(path)
    if not path.is_file():
        raise RegistrationError(f"{path}: no such points file")
    pairs = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if line:
            try:
                pairs.append(parse_correspondence(line))
            except RegistrationError as exc:
                raise RegistrationError(f"{path}:{number}: {exc}") from exc
    return pairs
