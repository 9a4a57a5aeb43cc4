"""Infrared/visible fusion-quality metrics, as the MSRS / PIAFusion / SeAFusion evaluations report them.

NumPy and OpenCV (both in the torch-free core install). Every metric works on grey images: float
arrays ``H×W`` on the 8-bit scale (0..255). :func:`to_grey` turns an RGB fused or visible image
into that grey (Y) image, and :func:`fusion_metrics` computes the ten figures of those papers (EN,
SD, SF, AG, MI, VIF, Qabf, SCD, SSIM, PSNR) for one fused image and its two sources.

Conventions: "A" and "B" are the two sources (visible and infrared, in either order: every
three-image metric is symmetric in them), "F" is the fused image. Filters are correlations
computed on the ``valid`` region unless a docstring says otherwise. The Gaussian and Sobel filters
run in OpenCV (float64); they replaced a per-tap NumPy loop whose values tests/reference_fusion.py
keeps, and the tests hold these to them within 1e-9 relative.
"""
from __future__ import annotations

from typing import NamedTuple

import cv2
import numpy as np

LEVELS = 256
_LUMA = np.array([0.299, 0.587, 0.114])

# Xydeas & Petrovic constants for Qabf.
_QABF_TG, _QABF_KG, _QABF_DG = 0.9994, -15.0, 0.5
_QABF_TA, _QABF_KA, _QABF_DA = 0.9879, -22.0, 0.8
_QABF_L = 1.0
_SOBEL_X = np.array([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
_SOBEL_Y = _SOBEL_X.T

# Wang et al. 2004 SSIM constants.
_SSIM_WINDOW, _SSIM_SIGMA, _SSIM_K1, _SSIM_K2 = 11, 1.5, 0.01, 0.03

# Sheikh & Bovik pixel-domain VIF constants.
_VIF_SCALES, _VIF_SIGMA_NSQ, _VIF_EPS = 4, 2.0, 1e-10


# --------------------------------------------------------------------------- helpers

def to_grey(image: np.ndarray) -> np.ndarray:
    """Grey image ``H×W`` float64 on the 8-bit scale.

    An RGB image ``H×W×3`` (channel order R, G, B; uint8 or float in 0..255) becomes
    ``Y = round(0.299 R + 0.587 G + 0.114 B)``: rounded to whole grey levels like the 8-bit grey
    conversion (MATLAB ``rgb2gray``, OpenCV ``COLOR_RGB2GRAY``) the evaluations run before
    scoring. A grey image ``H×W`` (or ``H×W×1``) is returned as float64, unchanged.
    """
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:
        return image.astype(np.float64)
    if image.ndim == 3 and image.shape[2] == 3:
        return np.rint(image.astype(np.float64) @ _LUMA)
    raise ValueError(f"expected a grey H×W or an RGB H×W×3 image, got shape {image.shape}")


def _grey(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image, dtype=np.float64)
    if image.ndim != 2:
        raise ValueError(f"expected a grey H×W image, got shape {image.shape} (use to_grey first)")
    return image


def _greys(*images: np.ndarray) -> list[np.ndarray]:
    greys = [_grey(image) for image in images]
    if len({g.shape for g in greys}) != 1:
        raise ValueError(f"images differ in shape: {[g.shape for g in greys]}")
    return greys


def _grey_levels(image: np.ndarray) -> np.ndarray:
    """Flat int64 grey levels: values rounded to the nearest integer and clipped to 0..255."""
    return np.clip(np.rint(image), 0, LEVELS - 1).astype(np.int64).ravel()


def _entropy_bits(counts: np.ndarray) -> float:
    """Shannon entropy in bits of the distribution given by histogram ``counts``."""
    p = counts[counts > 0] / counts.sum()
    return float(-np.sum(p * np.log2(p)))


def _gaussian_1d(size: int, sigma: float) -> np.ndarray:
    """Normalised 1-D Gaussian; its outer product with itself is MATLAB's ``fspecial('gaussian')``."""
    x = np.arange(size) - (size - 1) / 2
    g = np.exp(-x * x / (2 * sigma * sigma))
    return g / g.sum()


def _gaussian_filter(image: np.ndarray, g: np.ndarray, step: int = 1) -> np.ndarray:
    """Separable Gaussian correlation ``Σ_{u,v} g[u] g[v] image[i + u, j + v]`` over the valid region,
    keeping every ``step``-th row and column (``[::step, ::step]``).

    OpenCV's float64 filters compute the same sums (rows, then columns) as a per-tap loop would,
    in another order, so values agree to rounding (about 1e-15 relative). They fill a same-size
    output whose valid region (windows inside the image) does not depend on the border mode;
    that region is what is returned. With ``step`` 2 the columns are dropped between the two
    passes, so the column pass runs on half the width.
    """
    size = g.size                                    # odd: the anchor is the window's centre
    h, w = image.shape
    if size > h or size > w:
        raise ValueError(f"image {image.shape} is smaller than the {size}×{size} filter")
    r = size // 2
    image = np.ascontiguousarray(image)
    if step == 1:
        return cv2.sepFilter2D(image, cv2.CV_64F, g, g, borderType=cv2.BORDER_CONSTANT)[r:h - r, r:w - r]
    rows = cv2.filter2D(image, cv2.CV_64F, g[None, :], borderType=cv2.BORDER_CONSTANT)[:, r:w - r:step]
    return cv2.filter2D(np.ascontiguousarray(rows), cv2.CV_64F, g[:, None],
                        borderType=cv2.BORDER_CONSTANT)[r:h - r:step]


class _Local(NamedTuple):
    """An image and its Gaussian-weighted local mean ``μ`` and variance ``σ² = G(x²) − μ²`` (valid region)."""

    image: np.ndarray
    mean: np.ndarray
    variance: np.ndarray


def _local(image: np.ndarray, g: np.ndarray) -> _Local:
    """:class:`_Local` of ``image`` under the 1-D Gaussian ``g``; shared by every comparison with that image."""
    mean = _gaussian_filter(image, g)
    return _Local(image, mean, _gaussian_filter(image * image, g) - mean * mean)


def _covariance(a: _Local, b: _Local, g: np.ndarray) -> np.ndarray:
    """Local covariance ``σ_ab = G(a b) − μ_a μ_b`` of two images of one shape."""
    return _gaussian_filter(a.image * b.image, g) - a.mean * b.mean


# --------------------------------------------------------------------------- one image

def entropy(image: np.ndarray) -> float:
    """EN = ``−Σ_l p_l log2 p_l`` over the 256-bin grey-level histogram (bits, 0..8).

    ``image``: grey ``H×W`` on the 8-bit scale; values are rounded and clipped to 0..255.
    """
    return _entropy_bits(np.bincount(_grey_levels(_grey(image)), minlength=LEVELS))


def standard_deviation(image: np.ndarray) -> float:
    """SD = ``sqrt(mean((I − mean(I))²))`` (population standard deviation); ``image``: grey ``H×W``."""
    return float(np.std(_grey(image)))


def spatial_frequency(image: np.ndarray) -> float:
    """SF = ``sqrt(RF² + CF²)``.

    ``RF² = mean((I[i, j] − I[i, j−1])²)`` over ``H×(W−1)`` and ``CF² = mean((I[i, j] − I[i−1, j])²)``
    over ``(H−1)×W``; ``image``: grey ``H×W``, at least 2×2.
    """
    image = _grey(image)
    rf2 = np.mean(np.diff(image, axis=1) ** 2)
    cf2 = np.mean(np.diff(image, axis=0) ** 2)
    return float(np.sqrt(rf2 + cf2))


def average_gradient(image: np.ndarray) -> float:
    """AG = ``mean(sqrt((dx² + dy²) / 2))`` over the ``(H−1)×(W−1)`` grid ``i < H−1, j < W−1``.

    Forward differences ``dx = I[i, j+1] − I[i, j]``, ``dy = I[i+1, j] − I[i, j]``;
    ``image``: grey ``H×W``, at least 2×2.
    """
    image = _grey(image)
    dx = image[:-1, 1:] - image[:-1, :-1]
    dy = image[1:, :-1] - image[:-1, :-1]
    return float(np.mean(np.sqrt((dx * dx + dy * dy) / 2)))


# --------------------------------------------------------------------------- two images

def mutual_information(a: np.ndarray, b: np.ndarray) -> float:
    """MI(A, B) = ``Σ p(a, b) log2(p(a, b) / (p(a) p(b)))`` = ``H(A) + H(B) − H(A, B)`` in bits.

    From the 256-bin histograms and the 256×256 joint histogram of two grey ``H×W`` images on
    the 8-bit scale (values rounded and clipped to 0..255).
    """
    a, b = _greys(a, b)
    la, lb = _grey_levels(a), _grey_levels(b)
    joint = np.bincount(la * LEVELS + lb, minlength=LEVELS * LEVELS)
    return (_entropy_bits(np.bincount(la, minlength=LEVELS)) + _entropy_bits(np.bincount(lb, minlength=LEVELS))
            - _entropy_bits(joint))


def psnr(a: np.ndarray, b: np.ndarray, peak: float = 255.0) -> float:
    """PSNR = ``10 log10(peak² / mean((a − b)²))`` in dB, for two arrays of one shape.

    Returns ``float('inf')`` when the arrays are identical (MSE 0).
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    return psnr_from_mse(float(np.mean((a - b) ** 2)), peak)


def psnr_from_mse(mse: float, peak: float) -> float:
    """``10 log10(peak² / mse)``; ``float('inf')`` for ``mse == 0``."""
    return float("inf") if mse == 0 else float(10 * np.log10(peak * peak / mse))


def ssim(a: np.ndarray, b: np.ndarray, data_range: float = 255.0) -> float:
    """Mean SSIM (Wang et al. 2004) of two grey ``H×W`` images (at least 11×11).

    ``SSIM = mean over the valid region of ((2 μa μb + C1)(2 σab + C2)) / ((μa² + μb² + C1)(σa² + σb² + C2))``
    with Gaussian-weighted local statistics (11×11 window, σ = 1.5), ``C1 = (0.01 L)²``,
    ``C2 = (0.03 L)²`` and ``L = data_range`` (255 for the 8-bit scale, 1 for images in [0, 1]).
    """
    a, b = _greys(a, b)
    g = _gaussian_1d(_SSIM_WINDOW, _SSIM_SIGMA)
    return _ssim(_local(a, g), _local(b, g), g, data_range)


def _ssim(a: _Local, b: _Local, g: np.ndarray, data_range: float) -> float:
    """Mean of the SSIM map of two images whose local statistics under ``g`` are given."""
    cov = _covariance(a, b, g)
    c1, c2 = (_SSIM_K1 * data_range) ** 2, (_SSIM_K2 * data_range) ** 2
    ssim_map = (((2 * a.mean * b.mean + c1) * (2 * cov + c2))
                / ((a.mean ** 2 + b.mean ** 2 + c1) * (a.variance + b.variance + c2)))
    return float(np.mean(ssim_map))


def vifp(reference: np.ndarray, distorted: np.ndarray) -> float:
    """Multi-scale pixel-domain VIF (Sheikh & Bovik 2006) of ``distorted`` against ``reference``.

    At scales ``s = 1..4`` with Gaussian window size ``N = 2^(5−s) + 1`` and ``σ = N / 5`` (both
    images are filtered with it and decimated by 2 before scales 2..4), local statistics give the
    gain ``g = σ_rd / σ_r²`` and the distortion variance ``σ_v² = σ_d² − g σ_rd``;
    ``VIFp = Σ log10(1 + g² σ_r² / (σ_v² + σ_n²)) / Σ log10(1 + σ_r² / σ_n²)`` summed over all
    scales and positions, with ``σ_n² = 2`` and the reference algorithm's guards: negative
    variances become 0; where ``σ_r² < 1e-10``: ``g = 0, σ_v² = σ_d²``; where ``σ_d² < 1e-10``:
    ``g = 0, σ_v² = 0``; where ``g < 0``: ``σ_v² = σ_d², g = 0``; finally ``σ_v² ≥ 1e-10``.

    Inputs: grey ``H×W`` images of one shape, at least 41×41. Returns NaN when the
    reference is flat at every scale (the denominator is 0).
    """
    ref, dist = _greys(reference, distorted)
    return _vifp(_vif_pyramid(ref), _vif_pyramid(dist))


def _vif_pyramid(image: np.ndarray) -> list[tuple[np.ndarray, _Local]]:
    """Per VIF scale: its 1-D Gaussian and the local statistics of the image at that scale."""
    pyramid = []
    for scale in range(_VIF_SCALES):
        size = 2 ** (_VIF_SCALES - scale) + 1
        g = _gaussian_1d(size, size / 5)
        if scale:
            image = _gaussian_filter(image, g, step=2)
        pyramid.append((g, _local(image, g)))
    return pyramid


def _vifp(reference: list[tuple[np.ndarray, _Local]], distorted: list[tuple[np.ndarray, _Local]]) -> float:
    """VIFp from the two images' :func:`_vif_pyramid` (the guards of :func:`vifp`)."""
    num = den = 0.0
    for (g, ref), (_, dist) in zip(reference, distorted):
        cov = _covariance(ref, dist, g)
        var_r, var_d = np.maximum(ref.variance, 0), np.maximum(dist.variance, 0)
        gain = cov / (var_r + _VIF_EPS)
        var_v = np.maximum(var_d - gain * cov, _VIF_EPS)
        # The guards zero the gain where the reference or the distorted image is flat or the gain
        # is negative, and the reference variance where the reference is flat: those positions
        # add log10(1 + 0) = 0, so the sums below equal those of the masked assignments.
        flat_ref = var_r < _VIF_EPS
        informative = ~flat_ref & (var_d >= _VIF_EPS) & (gain >= 0)
        num += float(np.sum(np.where(informative,
                                     np.log10(1 + gain * gain * var_r / (var_v + _VIF_SIGMA_NSQ)), 0.0)))
        den += float(np.sum(np.where(flat_ref, 0.0, np.log10(1 + var_r / _VIF_SIGMA_NSQ))))
    return num / den if den else float("nan")


# --------------------------------------------------------------------------- fused vs two sources

def fusion_mi(fused: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """MI(F; A, B) = ``MI(A, F) + MI(B, F)`` in bits (see :func:`mutual_information`)."""
    return mutual_information(a, fused) + mutual_information(b, fused)


def fusion_vif(fused: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """VIF = ``VIFp(A → F) + VIFp(B → F)``, each source as the reference (see :func:`vifp`)."""
    fused, a, b = _greys(fused, a, b)
    pyramid = _vif_pyramid(fused)                    # filtered and decimated once for both sources
    return _vifp(_vif_pyramid(a), pyramid) + _vifp(_vif_pyramid(b), pyramid)


def fusion_ssim(fused: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """SSIM = ``SSIM(A, F) + SSIM(B, F)`` on the 8-bit scale (see :func:`ssim`); at most 2."""
    fused, a, b = _greys(fused, a, b)
    g = _gaussian_1d(_SSIM_WINDOW, _SSIM_SIGMA)
    local_f = _local(fused, g)                       # filtered once for both sources
    return _ssim(_local(a, g), local_f, g, 255.0) + _ssim(_local(b, g), local_f, g, 255.0)


def fusion_psnr(fused: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """PSNR = ``10 log10(255² / MSE)`` with ``MSE = (MSE(A, F) + MSE(B, F)) / 2``, grey ``H×W`` inputs.

    Returns ``float('inf')`` when F equals both sources.
    """
    fused, a, b = _greys(fused, a, b)
    mse = (np.mean((a - fused) ** 2) + np.mean((b - fused) ** 2)) / 2
    return psnr_from_mse(float(mse), 255.0)


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    """``Σ (x − x̄)(y − ȳ) / sqrt(Σ (x − x̄)² Σ (y − ȳ)²)``; NaN when either is constant."""
    x, y = x - x.mean(), y - y.mean()
    denominator = np.sqrt(np.sum(x * x) * np.sum(y * y))
    return float(np.sum(x * y) / denominator) if denominator else float("nan")


def scd(fused: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """SCD (Aslantas & Bendes 2015) = ``corr(F − B, A) + corr(F − A, B)`` with Pearson's correlation.

    Inputs: grey ``H×W`` images of one shape. NaN when a source or a difference is constant.
    """
    fused, a, b = _greys(fused, a, b)
    return _pearson(fused - b, a) + _pearson(fused - a, b)


def _edge_strength_orientation(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sobel edge strength ``g = sqrt(sx² + sy²)`` and orientation ``α = atan(sy / sx)`` (π/2 where
    ``sx = 0``), with the image zero-padded by one pixel so that the maps are ``H×W``."""
    # BORDER_CONSTANT pads with zeros: the one-pixel zero frame of the definition.
    image = np.ascontiguousarray(image)
    sx = cv2.filter2D(image, cv2.CV_64F, _SOBEL_X, borderType=cv2.BORDER_CONSTANT)
    sy = cv2.filter2D(image, cv2.CV_64F, _SOBEL_Y, borderType=cv2.BORDER_CONSTANT)
    # α = π/2 wherever sx = 0, whatever the sign of sy: there the quotient is +inf, arctan(inf) = π/2.
    alpha = np.arctan(np.divide(sy, sx, out=np.full_like(sx, np.inf), where=sx != 0))
    return np.sqrt(sx * sx + sy * sy), alpha


def _edge_preservation(g_source: np.ndarray, alpha_source: np.ndarray,
                       g_fused: np.ndarray, alpha_fused: np.ndarray) -> np.ndarray:
    """Per-pixel ``Q^{SF} = Q_g · Q_α`` of Xydeas & Petrovic.

    ``G = min(g_S, g_F) / max(g_S, g_F)`` (1 where both are 0), ``A = 1 − |α_S − α_F| / (π/2)``,
    ``Q_g = Tg / (1 + exp(kg (G − Dg)))``, ``Q_α = Ta / (1 + exp(ka (A − Da)))``.
    """
    larger = np.maximum(g_source, g_fused)
    ratio = np.divide(np.minimum(g_source, g_fused), larger, out=np.ones_like(larger), where=larger > 0)
    angle = 1 - np.abs(alpha_source - alpha_fused) / (np.pi / 2)
    q_g = _QABF_TG / (1 + np.exp(_QABF_KG * (ratio - _QABF_DG)))
    q_a = _QABF_TA / (1 + np.exp(_QABF_KA * (angle - _QABF_DA)))
    return q_g * q_a


def qabf(fused: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """Qabf (Xydeas & Petrovic 2000): edge information of A and B preserved in F, in [0, 1).

    ``Qabf = Σ (Q^{AF} w_A + Q^{BF} w_B) / Σ (w_A + w_B)`` with weights ``w = g^L`` (L = 1), Sobel
    edge strengths ``g`` and the per-pixel preservation ``Q^{SF}`` of the Xydeas-Petrovic sigmoids
    (Tg = 0.9994, kg = −15, Dg = 0.5, Ta = 0.9879, ka = −22, Da = 0.8). A perfectly preserved edge
    scores ``Tg / (1 + e^{kg (1 − Dg)}) · Ta / (1 + e^{ka (1 − Da)}) ≈ 0.9749``, the maximum.

    Sobel convention: ``sx`` correlates with ``[−1 0 1; −2 0 2; −1 0 1]`` (positive where the image
    brightens to the right), ``sy`` with its transpose (brightens downwards), zero-padded. The
    MATLAB ``Qabf.m`` of the fusion toolboxes takes ``sx = conv2(I, [−1 0 1; …])``, of the opposite
    sign, which changes α where exactly one of the two images has ``sx = 0``: its figures differ
    from these by about 0.03 to 0.2 % on the bundled pairs.

    Inputs: grey ``H×W`` images of one shape. NaN when neither source has any edge.
    """
    fused, a, b = _greys(fused, a, b)
    g_f, alpha_f = _edge_strength_orientation(fused)
    g_a, alpha_a = _edge_strength_orientation(a)
    g_b, alpha_b = _edge_strength_orientation(b)
    w_a, w_b = g_a ** _QABF_L, g_b ** _QABF_L
    total = float(np.sum(w_a + w_b))
    if not total:
        return float("nan")
    preserved = (_edge_preservation(g_a, alpha_a, g_f, alpha_f) * w_a
                 + _edge_preservation(g_b, alpha_b, g_f, alpha_f) * w_b)
    return float(np.sum(preserved)) / total


# --------------------------------------------------------------------------- all ten

def fusion_metrics(fused: np.ndarray, visible: np.ndarray, infrared: np.ndarray) -> dict[str, float]:
    """The ten figures of the MSRS evaluations, keyed as their tables print them.

    ``EN`` entropy of F (bits, :func:`entropy`); ``SD`` standard deviation of F; ``SF`` spatial
    frequency of F; ``AG`` average gradient of F; ``MI`` = MI(A, F) + MI(B, F) in bits
    (:func:`fusion_mi`); ``VIF`` = VIFp(A → F) + VIFp(B → F) (:func:`fusion_vif`, each term about
    0..1); ``Qabf`` edge preservation in [0, 0.975] (:func:`qabf`); ``SCD`` sum of the
    correlations of differences in [−2, 2] (:func:`scd`); ``SSIM`` = SSIM(A, F) + SSIM(B, F),
    the fusion literature's sum of two Wang et al. mean SSIMs, so at most 2, not one SSIM
    (:func:`fusion_ssim`); ``PSNR`` in dB from the mean of the two sources' MSEs
    (:func:`fusion_psnr`).

    ``fused`` and ``visible``: RGB ``H×W×3`` (uint8 or float on the 8-bit scale) or grey ``H×W``;
    ``infrared``: grey ``H×W``. RGB images are turned to grey with :func:`to_grey`; EN, SD, SF
    and AG describe the fused image alone, the others compare it with both sources.
    """
    f, vi, ir = to_grey(fused), to_grey(visible), to_grey(infrared)
    return {
        "EN": entropy(f),
        "SD": standard_deviation(f),
        "SF": spatial_frequency(f),
        "AG": average_gradient(f),
        "MI": fusion_mi(f, vi, ir),
        "VIF": fusion_vif(f, vi, ir),
        "Qabf": qabf(f, vi, ir),
        "SCD": scd(f, vi, ir),
        "SSIM": fusion_ssim(f, vi, ir),
        "PSNR": fusion_psnr(f, vi, ir),
    }
