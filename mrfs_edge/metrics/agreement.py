"""How closely two runs of the same network agree (numpy only).

Used to compare a reference (e.g. PyTorch or an FP32 engine) with a test backend (e.g. an INT8
engine) on the same inputs: the fraction of equal class labels, PSNR and SSIM between the two
fused images, and the largest absolute differences of logits and fused values.

Segmentation outputs are ``C×H×W`` logits (compared through their argmax) or ``H×W`` labels.
Fused images are ``3×H×W`` float in [0, 1] (the network's output) or ``H×W×3`` uint8 (a uint8
engine or a saved PNG); both are brought to ``3×H×W`` float in [0, 1] before comparing, so the
two kinds can be mixed. PSNR of identical images is ``float('inf')``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mrfs_edge.metrics.fusion import psnr_from_mse, ssim


def _labels(seg: np.ndarray) -> np.ndarray:
    """``H×W`` labels from ``C×H×W`` logits (argmax over C) or from ``H×W`` labels."""
    seg = np.asarray(seg)
    if seg.ndim == 3:
        return seg.argmax(axis=0)
    if seg.ndim == 2:
        return seg
    raise ValueError(f"expected C×H×W logits or H×W labels, got shape {seg.shape}")


def _unit_chw(fused: np.ndarray) -> np.ndarray:
    """``3×H×W`` float64 in [0, 1] from ``H×W×3`` uint8 (÷255) or ``3×H×W`` float (unchanged, not clipped)."""
    fused = np.asarray(fused)
    if fused.dtype == np.uint8 and fused.ndim == 3 and fused.shape[2] == 3:
        return fused.transpose(2, 0, 1) / 255.0
    if np.issubdtype(fused.dtype, np.floating) and fused.ndim == 3 and fused.shape[0] == 3:
        return fused.astype(np.float64)
    raise ValueError(f"expected a 3×H×W float or H×W×3 uint8 fused image, got {fused.dtype} {fused.shape}")


def _same_shape(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")


def pixel_agreement(labels_a: np.ndarray, labels_b: np.ndarray) -> float:
    """Fraction of pixels with the same label: ``mean(a == b)``.

    Inputs: ``H×W`` label maps or ``C×H×W`` logits (compared through their argmax over C).
    """
    a, b = _labels(labels_a), _labels(labels_b)
    _same_shape(a, b)
    return float(np.mean(a == b))


def max_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    """``max |a − b|`` over all elements of two arrays of one shape (0.0 for empty arrays)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    _same_shape(a, b)
    return float(np.max(np.abs(a - b), initial=0.0))


def fused_psnr(ref: np.ndarray, test: np.ndarray, peak: float = 1.0) -> float:
    """``10 log10(peak² / MSE)`` in dB between two fused images, MSE over all channels and pixels.

    Both images are first brought to ``3×H×W`` float in [0, 1] (see the module docstring), so
    ``peak`` is the peak of that scale, 1.0. Returns ``float('inf')`` for identical images.
    """
    a, b = _unit_chw(ref), _unit_chw(test)
    _same_shape(a, b)
    return psnr_from_mse(float(np.mean((a - b) ** 2)), peak)


def fused_ssim(ref: np.ndarray, test: np.ndarray) -> float:
    """Mean over the three channels of the SSIM (:func:`~mrfs_edge.metrics.fusion.ssim`, L = 1)
    of two fused images, both brought to ``3×H×W`` float in [0, 1] first; at least 11×11."""
    a, b = _unit_chw(ref), _unit_chw(test)
    _same_shape(a, b)
    return float(np.mean([ssim(ca, cb, data_range=1.0) for ca, cb in zip(a, b)]))


@dataclass
class AgreementScore:
    """Accumulates the agreement of a test backend with a reference over a set of pairs.

    ``pixel_agreement`` = total equal labels / total pixels; ``fused_psnr`` comes from the MSE
    over every fused value of the whole set (``inf`` if all are identical); ``fused_ssim`` is the
    mean of the per-pair :func:`fused_ssim`; ``max_abs_logits`` and ``max_abs_fused`` are the
    largest ``|ref − test|`` seen (fused on the [0, 1] scale; logits ``None`` unless both
    sides gave logits). All figures are NaN before the first :meth:`update`.
    """

    pairs: int = 0
    equal_pixels: int = 0
    total_pixels: int = 0
    squared_error: float = 0.0
    fused_values: int = 0
    ssim_sum: float = 0.0
    max_abs_logits: float | None = None
    max_abs_fused: float = 0.0

    def update(self, ref_seg: np.ndarray, test_seg: np.ndarray,
               ref_fused: np.ndarray, test_fused: np.ndarray) -> None:
        """Add one pair: segmentation outputs (``C×H×W`` logits or ``H×W`` labels) and fused images."""
        labels_ref, labels_test = _labels(ref_seg), _labels(test_seg)
        _same_shape(labels_ref, labels_test)
        fused_ref, fused_test = _unit_chw(ref_fused), _unit_chw(test_fused)
        _same_shape(fused_ref, fused_test)
        self.pairs += 1
        self.equal_pixels += int(np.count_nonzero(labels_ref == labels_test))
        self.total_pixels += labels_ref.size
        self.squared_error += float(np.sum((fused_ref - fused_test) ** 2))
        self.fused_values += fused_ref.size
        self.ssim_sum += fused_ssim(fused_ref, fused_test)
        self.max_abs_fused = max(self.max_abs_fused, max_abs_diff(fused_ref, fused_test))
        if np.ndim(ref_seg) == 3 and np.ndim(test_seg) == 3:
            self.max_abs_logits = max(self.max_abs_logits or 0.0, max_abs_diff(ref_seg, test_seg))

    @property
    def pixel_agreement(self) -> float:
        return self.equal_pixels / self.total_pixels if self.total_pixels else float("nan")

    @property
    def fused_psnr(self) -> float:
        if not self.fused_values:
            return float("nan")
        return psnr_from_mse(self.squared_error / self.fused_values, 1.0)

    @property
    def fused_ssim(self) -> float:
        return self.ssim_sum / self.pairs if self.pairs else float("nan")

    def as_dict(self) -> dict[str, float | int | None]:
        """Summary; ``fused_psnr`` may be ``inf`` (``json.dumps`` writes it as ``Infinity``)."""
        return {"pairs": self.pairs, "pixel_agreement": self.pixel_agreement,
                "fused_psnr": self.fused_psnr, "fused_ssim": self.fused_ssim,
                "max_abs_logits": self.max_abs_logits, "max_abs_fused": self.max_abs_fused}
