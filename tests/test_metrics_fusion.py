"""Fusion-quality and agreement metrics: hand-computable cases, identities, independent
formulations, agreement with the frozen pre-change implementation on every bundled pair, and
scikit-image (dev extra; those tests skip without it)."""
from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import reference_fusion as frozen
from conftest import SHARED_DATA, needs_shared

from mrfs_edge.assets import SAMPLES
from mrfs_edge.metrics import (
    AgreementScore,
    average_gradient,
    entropy,
    fused_psnr,
    fused_ssim,
    fusion_metrics,
    fusion_mi,
    fusion_psnr,
    fusion_ssim,
    fusion_vif,
    max_abs_diff,
    mutual_information,
    pixel_agreement,
    psnr,
    qabf,
    scd,
    spatial_frequency,
    ssim,
    standard_deviation,
    to_grey,
    vifp,
)

MSRS = SHARED_DATA / "msrs_test_labelled"
# Score of a perfectly preserved edge (G = 1, A = 1) under the Xydeas-Petrovic sigmoids.
QABF_PERFECT = 0.9994 / (1 + math.exp(-15 * 0.5)) * 0.9879 / (1 + math.exp(-22 * 0.2))
BUNDLED = sorted(path.stem for path in (SAMPLES / "vi").glob("*.png"))
CALIB_PAIRS = (SAMPLES / "calib.txt").read_text().split()
# Agreement with the frozen reference: relative 1e-9 (measured: at most ~3e-12, VIF's variances
# G(x²) − μ² cancel), with an absolute floor of 1e-12 for a figure that passes near 0 (SCD).
AGREE = {"rel": 1e-9, "abs": 1e-12, "nan_ok": True}
LEVELS_CODE = 256   # 256 A + B numbers every (A, B) pair of grey levels uniquely


@pytest.fixture
def textured() -> np.ndarray:
    """A 48×48 grey image with edges in every direction and noise, on the 8-bit scale."""
    rng = np.random.default_rng(7)
    y, x = np.mgrid[0:48, 0:48]
    image = 120 + 60 * np.sin(x / 3.0) * np.cos(y / 5.0) + rng.normal(0, 10, (48, 48))
    return np.clip(np.rint(image), 0, 255)


@pytest.fixture
def other(textured: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(8)
    return np.clip(np.rint(255 - textured + rng.normal(0, 25, textured.shape)), 0, 255)


def _as_rgb(grey: np.ndarray) -> np.ndarray:
    return np.repeat(grey[:, :, None], 3, axis=2).astype(np.uint8)


# --------------------------------------------------------------------------- grey conversion

def test_to_grey_uses_rounded_bt601_luma() -> None:
    rgb = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [100, 100, 100]]], dtype=np.uint8)
    assert to_grey(rgb).tolist() == [[76.0, 150.0, 29.0, 100.0]]   # 76.245, 149.685, 29.07, 100
    grey = np.array([[1.25, 2.5]])
    assert to_grey(grey).tolist() == grey.tolist()
    with pytest.raises(ValueError):
        to_grey(np.zeros((2, 2, 4)))


# --------------------------------------------------------------------------- one-image metrics

def test_entropy_hand_cases() -> None:
    assert entropy(np.full((8, 8), 37.0)) == 0.0
    assert entropy(np.array([[0.0, 255.0], [255.0, 0.0]])) == pytest.approx(1.0)
    assert entropy(np.arange(256.0).reshape(16, 16)) == pytest.approx(8.0)


def test_standard_deviation_hand_cases() -> None:
    assert standard_deviation(np.full((5, 5), 9.0)) == 0.0
    assert standard_deviation(np.array([[0.0, 2.0], [2.0, 0.0]])) == pytest.approx(1.0)


def test_spatial_frequency_and_average_gradient_hand_cases() -> None:
    assert spatial_frequency(np.full((6, 6), 80.0)) == 0.0
    assert average_gradient(np.full((6, 6), 80.0)) == 0.0
    stripes = np.tile([0.0, 10.0], (6, 3))                 # every horizontal step is ±10
    assert spatial_frequency(stripes) == pytest.approx(10.0)
    assert spatial_frequency(stripes.T) == pytest.approx(10.0)
    ramp = np.tile(3.0 * np.arange(7), (5, 1))             # dx = 3, dy = 0
    assert average_gradient(ramp) == pytest.approx(3 / math.sqrt(2))
    assert average_gradient(ramp.T) == pytest.approx(3 / math.sqrt(2))


# --------------------------------------------------------------------------- two-image metrics

def test_mutual_information_identities(textured: np.ndarray, other: np.ndarray) -> None:
    assert mutual_information(textured, textured) == pytest.approx(entropy(textured))
    assert mutual_information(textured, np.full_like(textured, 5.0)) == pytest.approx(0.0, abs=1e-12)
    assert mutual_information(textured, other) == pytest.approx(mutual_information(other, textured))
    assert fusion_mi(textured, textured, other) == pytest.approx(
        entropy(textured) + mutual_information(other, textured))


def test_psnr_identical_is_inf_and_known_mse() -> None:
    a = np.arange(16.0).reshape(4, 4)
    assert psnr(a, a) == float("inf")
    assert psnr(a, a + 5) == pytest.approx(10 * math.log10(255 ** 2 / 25))
    assert psnr(a / 255, (a + 5) / 255, peak=1.0) == pytest.approx(psnr(a, a + 5))
    f = a + 2                                               # MSE(A, F) = 4, MSE(B, F) = 36
    assert fusion_psnr(f, a, f - 6) == pytest.approx(10 * math.log10(255 ** 2 / 20))
    assert fusion_psnr(a, a, a) == float("inf")


def test_ssim_identities(textured: np.ndarray, other: np.ndarray) -> None:
    assert ssim(textured, textured) == pytest.approx(1.0)
    assert fusion_ssim(textured, textured, textured) == pytest.approx(2.0)
    value = ssim(textured, other)
    assert -1.0 < value < 1.0
    assert ssim(other, textured) == pytest.approx(value)
    assert ssim(textured / 255, other / 255, data_range=1.0) == pytest.approx(value)


def test_vif_identities(textured: np.ndarray, other: np.ndarray) -> None:
    assert vifp(textured, textured) == pytest.approx(1.0, rel=1e-8)
    assert fusion_vif(textured, textured, textured) == pytest.approx(2.0, rel=1e-8)
    assert 0.0 <= vifp(textured, other) < 1.0
    assert math.isnan(vifp(np.full((48, 48), 10.0), textured))     # flat reference: 0 / 0
    with pytest.raises(ValueError):
        vifp(textured[:40, :40], other[:40, :40])                     # scale 4 has no valid region


def test_scd_sum_of_sources_and_symmetry(textured: np.ndarray, other: np.ndarray) -> None:
    # F = A + B: F − B = A and F − A = B, each correlates perfectly with its source.
    assert scd(textured + other, textured, other) == pytest.approx(2.0)
    f = (textured + other) / 3
    assert scd(f, textured, other) == pytest.approx(scd(f, other, textured))
    assert math.isnan(scd(textured, textured, other))                # F − A is constant


def test_qabf_perfect_preservation_of_one_source(textured: np.ndarray) -> None:
    flat = np.zeros_like(textured)       # zero, so the zero-padded Sobel finds no edge in it
    assert qabf(textured, textured, flat) == pytest.approx(QABF_PERFECT, rel=1e-12)
    assert qabf(textured, textured, textured) == pytest.approx(QABF_PERFECT, rel=1e-12)
    assert qabf(flat, textured, flat) < 0.01                          # every edge lost
    assert math.isnan(qabf(textured, flat, flat))                     # no source edges: 0 / 0


def test_fusion_metrics_names_and_rgb_input(textured: np.ndarray, other: np.ndarray) -> None:
    fused = np.rint((textured + other) / 2)
    metrics = fusion_metrics(_as_rgb(fused), _as_rgb(textured), other.astype(np.uint8))
    assert list(metrics) == ["EN", "SD", "SF", "AG", "MI", "VIF", "Qabf", "SCD", "SSIM", "PSNR"]
    assert all(math.isfinite(value) for value in metrics.values())
    assert metrics == fusion_metrics(fused, textured, other)


# --------------------------------------------------------------------------- agreement

def test_pixel_agreement_and_max_abs_diff() -> None:
    labels = np.arange(24).reshape(4, 6) % 9
    half = labels.copy()
    half[:2] = (half[:2] + 1) % 9
    assert pixel_agreement(labels, labels) == 1.0
    assert pixel_agreement(labels, half) == 0.5
    logits = np.eye(9)[labels].transpose(2, 0, 1)                    # C×H×W whose argmax is labels
    assert pixel_agreement(logits, labels) == 1.0
    assert max_abs_diff(labels, half) == 8.0
    assert max_abs_diff(logits, logits) == 0.0


def test_fused_psnr_and_ssim_mix_uint8_and_float() -> None:
    rng = np.random.default_rng(3)
    fused_u8 = rng.integers(0, 256, (16, 20, 3), dtype=np.uint8)
    fused_float = fused_u8.transpose(2, 0, 1) / 255.0
    assert fused_psnr(fused_u8, fused_float) == float("inf")
    assert fused_ssim(fused_u8, fused_float) == pytest.approx(1.0)
    assert fused_psnr(fused_float, fused_float + 0.01) == pytest.approx(40.0)
    with pytest.raises(ValueError):
        fused_psnr(fused_float.astype(np.float32).transpose(1, 2, 0), fused_float)


def test_agreement_score_of_reference_with_itself() -> None:
    rng = np.random.default_rng(4)
    score = AgreementScore()
    for _ in range(2):
        logits = rng.normal(size=(9, 16, 16)).astype(np.float32)
        fused = rng.uniform(0, 1, (3, 16, 16)).astype(np.float32)
        score.update(logits, logits.copy(), fused, fused.copy())
    assert score.as_dict() == {"pairs": 2, "pixel_agreement": 1.0, "fused_psnr": float("inf"),
                               "fused_ssim": pytest.approx(1.0), "max_abs_logits": 0.0,
                               "max_abs_fused": 0.0}


def test_agreement_score_accumulates_over_the_set() -> None:
    labels = np.zeros((16, 16), dtype=np.int64)
    changed = labels.copy()
    changed[:4] = 1                                                  # a quarter of one map
    fused = np.full((3, 16, 16), 0.5)
    score = AgreementScore()
    score.update(labels, labels, fused, fused)
    score.update(labels, changed, fused, fused + 0.1)
    assert score.pixel_agreement == pytest.approx(7 / 8)
    assert score.fused_psnr == pytest.approx(10 * math.log10(1 / 0.005))   # MSE (0 + 0.01) / 2
    assert score.max_abs_fused == pytest.approx(0.1)
    assert score.max_abs_logits is None                              # labels only, no logits
    assert math.isnan(AgreementScore().pixel_agreement)


# --------------------------------------------------------------------------- a real MSRS pair

@needs_shared(MSRS)
def test_all_ten_on_a_real_msrs_pair() -> None:
    cv2 = pytest.importorskip("cv2")
    name = (MSRS / "list.txt").read_text().split()[0]
    visible = cv2.cvtColor(cv2.imread(str(MSRS / "vi" / f"{name}.png")), cv2.COLOR_BGR2RGB)
    infrared = cv2.imread(str(MSRS / "ir" / f"{name}.png"), cv2.IMREAD_GRAYSCALE)
    vis_grey = to_grey(visible)

    metrics = fusion_metrics(vis_grey, visible, infrared)
    assert 0 < metrics["EN"] <= 8
    assert 0 < metrics["SD"] <= 128
    assert metrics["SF"] > 0 and metrics["AG"] > 0
    # F = A: MI(A, F) = EN(F), so MI = EN + MI(B, F).
    assert metrics["MI"] == pytest.approx(metrics["EN"] + mutual_information(infrared, vis_grey))
    assert 1 < metrics["VIF"] < 2                                   # VIFp(A, A) = 1 plus VIFp(B, A)
    assert 0 < metrics["Qabf"] <= QABF_PERFECT
    assert 1 < metrics["SSIM"] <= 2                                 # SSIM(A, A) = 1 plus SSIM(B, A)
    assert 0 < metrics["PSNR"] < 60
    assert math.isnan(metrics["SCD"])                               # F − A = 0 has no variance

    blend = fusion_metrics((vis_grey + infrared) / 2, visible, infrared)
    assert all(math.isfinite(v) for v in blend.values())
    assert -2 <= blend["SCD"] <= 2 and 0 < blend["SSIM"] <= 2 and 0 < blend["Qabf"] < 1


# --------------------------------------------------------------------------- frozen reference agreement

def _bundled_pair(name: str) -> tuple[np.ndarray, np.ndarray]:
    """Bundled visible (RGB uint8 H×W×3) and infrared (grey uint8 H×W) images of one pair."""
    visible = cv2.cvtColor(cv2.imread(str(SAMPLES / "vi" / f"{name}.png")), cv2.COLOR_BGR2RGB)
    return visible, cv2.imread(str(SAMPLES / "ir" / f"{name}.png"), cv2.IMREAD_GRAYSCALE)


def _assert_agrees_with_frozen(fused: np.ndarray, visible: np.ndarray, infrared: np.ndarray) -> None:
    fast, slow = fusion_metrics(fused, visible, infrared), frozen.fusion_metrics(fused, visible, infrared)
    assert list(fast) == list(slow)
    for name, value in fast.items():
        assert value == pytest.approx(slow[name], **AGREE), name


@pytest.mark.parametrize("name", BUNDLED)
def test_every_metric_agrees_with_the_frozen_reference_on_a_bundled_pair(name: str) -> None:
    """All ten figures, relative 1e-9, against tests/reference_fusion.py (the per-tap implementation
    before OpenCV filtering) for two fused stand-ins: the RGB average of the sources (through
    :func:`to_grey`) and the grey pixel-wise maximum (the classic max rule); plus VIFp and SSIM
    on the 8-bit and the [0, 1] scale for the sources alone (the agreement metrics' SSIM path)."""
    visible, infrared = _bundled_pair(name)
    average = np.rint((visible.astype(np.float64) + infrared[:, :, None]) / 2).astype(np.uint8)
    maximum = np.maximum(to_grey(visible), infrared)
    _assert_agrees_with_frozen(average, visible, infrared)
    _assert_agrees_with_frozen(maximum, visible, infrared)
    grey = to_grey(visible)
    assert vifp(infrared, grey) == pytest.approx(frozen.vifp(infrared, grey), **AGREE)
    assert ssim(grey / 255, infrared / 255, data_range=1.0) == pytest.approx(
        frozen.ssim(grey / 255, infrared / 255, data_range=1.0), **AGREE)


@pytest.mark.parametrize("name", CALIB_PAIRS)
def test_every_metric_agrees_with_the_frozen_reference_on_the_demo_models_fusion(name: str, demo_onnx) -> None:
    """The same agreement on a real fused image: the bundled demo model's (exported to ONNX, run by
    ONNX Runtime) for the four calibration pairs. Skips where PyTorch cannot export the model."""
    from mrfs_edge.backends.onnxruntime_runner import OnnxRuntimeRunner
    from mrfs_edge.processing.frame import FrameProcessor

    visible, infrared = _bundled_pair(name)
    with OnnxRuntimeRunner(demo_onnx) as runner:
        fused_rgb = FrameProcessor(runner).process(visible, infrared).fused
    _assert_agrees_with_frozen(fused_rgb, visible, infrared)


# --------------------------------------------------------------------------- scikit-image (dev extra)

def _skimage_metrics():
    return pytest.importorskip("skimage.metrics", reason="scikit-image (the dev extra) is not installed")


@pytest.mark.parametrize("name", BUNDLED[:3])
def test_ssim_matches_scikit_image(name: str) -> None:
    """Pinned against ``skimage.metrics.structural_similarity`` with Wang et al.'s settings, the ones
    :func:`ssim` uses: Gaussian weights σ = 1.5 (skimage's truncate 3.5 gives the same 11×11 window),
    population covariances (``use_sample_covariance=False``) and ``data_range`` L. skimage averages
    its map after cropping 5 pixels from each side, i.e. over the valid region, as :func:`ssim` does."""
    metrics = _skimage_metrics()
    visible, infrared = _bundled_pair(name)
    grey, ir = to_grey(visible), infrared.astype(np.float64)
    fused = np.rint((grey + ir) / 2)
    settings = {"gaussian_weights": True, "sigma": 1.5, "use_sample_covariance": False}
    for a, b in ((grey, ir), (fused, grey), (fused, ir)):
        assert ssim(a, b) == pytest.approx(
            metrics.structural_similarity(a, b, data_range=255, **settings), rel=1e-9)
        assert ssim(a / 255, b / 255, data_range=1.0) == pytest.approx(
            metrics.structural_similarity(a / 255, b / 255, data_range=1.0, **settings), rel=1e-9)
    assert fusion_ssim(fused, grey, ir) == pytest.approx(
        metrics.structural_similarity(fused, grey, data_range=255, **settings)
        + metrics.structural_similarity(fused, ir, data_range=255, **settings), rel=1e-9)


@pytest.mark.parametrize("name", BUNDLED[:3])
def test_psnr_entropy_and_mi_match_scikit_image(name: str) -> None:
    """PSNR pinned against ``skimage.metrics.peak_signal_noise_ratio`` (data_range 255) and the fusion
    PSNR against skimage's ``mean_squared_error`` of each source; EN against
    ``skimage.measure.shannon_entropy(base=2)`` (entropy of the value counts, which for whole grey
    levels is the 256-bin histogram's); MI through the identity ``H(A) + H(B) − H(A, B)`` with
    skimage's entropy of the joint code ``256 A + B`` (a different histogram path from bincount)."""
    metrics = _skimage_metrics()
    measure = pytest.importorskip("skimage.measure", reason="scikit-image (the dev extra) is not installed")
    visible, infrared = _bundled_pair(name)
    grey, ir = to_grey(visible), infrared.astype(np.float64)
    fused = np.rint((grey + ir) / 2)
    assert psnr(grey, ir) == pytest.approx(metrics.peak_signal_noise_ratio(grey, ir, data_range=255), rel=1e-12)
    mse = (metrics.mean_squared_error(grey, fused) + metrics.mean_squared_error(ir, fused)) / 2
    assert fusion_psnr(fused, grey, ir) == pytest.approx(10 * math.log10(255 ** 2 / mse), rel=1e-12)
    for image in (grey, ir, fused):
        assert entropy(image) == pytest.approx(measure.shannon_entropy(image, base=2), rel=1e-12)
    joint = measure.shannon_entropy(LEVELS_CODE * grey + ir, base=2)
    expected_mi = measure.shannon_entropy(grey, base=2) + measure.shannon_entropy(ir, base=2) - joint
    assert mutual_information(grey, ir) == pytest.approx(expected_mi, rel=1e-12)


# --------------------------------------------------------------------------- independent formulations

def test_spatial_frequency_and_average_gradient_closed_forms() -> None:
    """Hand-derived on 2×2 and 3×3 arrays (values in the comments).

    ``[[0, 3], [4, 0]]``: row steps 3, −4 → RF² = 25/2; column steps 4, −3 → CF² = 25/2; SF = 5.
    AG has one grid point (0, 0): dx = 3, dy = 4, AG = sqrt(25/2).
    ``[[1, 2, 4], [3, 7, 7], [0, 0, 9]]``: row steps 1, 2, 4, 0, 0, 9 → RF² = 102/6 = 17;
    column steps 2, 5, 3, −3, −7, 2 → CF² = 100/6; SF = sqrt(17 + 50/3). AG over (0,0), (0,1),
    (1,0), (1,1): (dx, dy) = (1, 2), (2, 5), (4, −3), (0, −7) → mean of sqrt(5/2), sqrt(29/2),
    sqrt(25/2), sqrt(49/2).
    """
    two = np.array([[0.0, 3.0], [4.0, 0.0]])
    assert spatial_frequency(two) == pytest.approx(5.0, rel=1e-15)
    assert average_gradient(two) == pytest.approx(math.sqrt(12.5), rel=1e-15)
    three = np.array([[1.0, 2.0, 4.0], [3.0, 7.0, 7.0], [0.0, 0.0, 9.0]])
    assert spatial_frequency(three) == pytest.approx(math.sqrt(17 + 50 / 3), rel=1e-15)
    assert average_gradient(three) == pytest.approx(
        (math.sqrt(2.5) + math.sqrt(14.5) + math.sqrt(12.5) + math.sqrt(24.5)) / 4, rel=1e-15)


def test_scd_closed_form_and_numpy_corrcoef(textured: np.ndarray, other: np.ndarray) -> None:
    """Hand case: A = 100 + [[1, −1], [0, 0]], B = 100 + [[0, 0], [1, −1]] (zero-mean deviations of
    equal variance, uncorrelated), F = 2A + B: F − B = 2A correlates 1 with A, F − A = A + B
    correlates σ_B / sqrt(σ_A² + σ_B²) = 1/√2 with B, so SCD = 1 + 1/√2. Then against numpy's
    ``corrcoef`` (an independent Pearson) on textured images."""
    a = 100 + np.array([[1.0, -1.0], [0.0, 0.0]])
    b = 100 + np.array([[0.0, 0.0], [1.0, -1.0]])
    assert scd(2 * a + b, a, b) == pytest.approx(1 + 1 / math.sqrt(2), rel=1e-12)
    fused = np.rint(0.6 * textured + 0.4 * other)
    expected = (np.corrcoef((fused - other).ravel(), textured.ravel())[0, 1]
                + np.corrcoef((fused - textured).ravel(), other.ravel())[0, 1])
    assert scd(fused, textured, other) == pytest.approx(expected, rel=1e-12)


def _qabf_by_the_paper(fused: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """Qabf written out per pixel from Xydeas & Petrovic (Electronics Letters 36(4), 2000), with the
    textbook Sobel as differences of weighted column / row sums (zero outside the image): ``sx`` =
    right column − left column, ``sy`` = lower row − upper row, weights 1, 2, 1. Plain loops and
    ``math``; shares no code with :func:`qabf`.

    (The MATLAB ``Qabf.m`` of the fusion toolboxes computes ``sx`` with ``conv2``, i.e. of the
    opposite sign; that changes α where exactly one of two images has ``sx = 0``, and its Qabf by
    0.03 to 0.2 % on the bundled pairs, so it is not a reference for these digits.)
    """
    rows, cols = fused.shape

    def at(image: np.ndarray, y: int, x: int) -> float:
        return float(image[y, x]) if 0 <= y < rows and 0 <= x < cols else 0.0

    def edge(image: np.ndarray, i: int, j: int) -> tuple[float, float]:
        sx = sum(w * (at(image, i + d, j + 1) - at(image, i + d, j - 1)) for d, w in ((-1, 1), (0, 2), (1, 1)))
        sy = sum(w * (at(image, i + 1, j + d) - at(image, i - 1, j + d)) for d, w in ((-1, 1), (0, 2), (1, 1)))
        return math.sqrt(sx * sx + sy * sy), (math.pi / 2 if sx == 0 else math.atan(sy / sx))

    def preserved(g_s: float, a_s: float, g_f: float, a_f: float) -> float:
        if g_s == g_f:
            strength = 1.0                           # equal strengths (both 0 included): fully kept
        else:
            strength = min(g_s, g_f) / max(g_s, g_f)
        orientation = 1 - abs(a_s - a_f) / (math.pi / 2)
        q_g = 0.9994 / (1 + math.exp(-15 * (strength - 0.5)))
        q_a = 0.9879 / (1 + math.exp(-22 * (orientation - 0.8)))
        return q_g * q_a

    numerator = denominator = 0.0
    for i in range(rows):
        for j in range(cols):
            g_f, a_f = edge(fused, i, j)
            g_a, a_a = edge(a, i, j)
            g_b, a_b = edge(b, i, j)
            numerator += preserved(g_a, a_a, g_f, a_f) * g_a + preserved(g_b, a_b, g_f, a_f) * g_b
            denominator += g_a + g_b
    return numerator / denominator


def test_qabf_matches_a_per_pixel_transcription_of_the_paper(textured: np.ndarray, other: np.ndarray) -> None:
    """Pinned against :func:`_qabf_by_the_paper` on 16×16 crops of the textured images (and one with
    a flat source), and on a 24×24 crop of bundled pair 00147D whose flat patches give many
    ``sx = 0`` pixels (there the toolbox's opposite ``sx`` sign would move Qabf by ~10 %)."""
    a, b = textured[10:26, 5:21], other[10:26, 5:21]
    for fused in (np.rint((a + b) / 2), np.maximum(a, b), np.rint(0.8 * a + 0.2 * b + 7)):
        assert qabf(fused, a, b) == pytest.approx(_qabf_by_the_paper(fused, a, b), rel=1e-12)
    flat = np.full_like(a, 40.0)
    assert qabf(a, flat, b) == pytest.approx(_qabf_by_the_paper(a, flat, b), rel=1e-12)
    visible, infrared = _bundled_pair("00147D")
    a, b = to_grey(visible)[336:360, 504:528], infrared[336:360, 504:528].astype(np.float64)
    fused = np.rint((a + b) / 2)
    assert qabf(fused, a, b) == pytest.approx(_qabf_by_the_paper(fused, a, b), rel=1e-12)


def _vifp_mscale(ref: np.ndarray, dist: np.ndarray) -> float:
    """Sheikh & Bovik's ``vifp_mscale.m`` (the pixel-domain VIF of the LIVE release that the fusion
    evaluations call) transcribed line by line: ``fspecial('gaussian', N, N/5)`` built as one 2-D
    kernel, ``filter2(win, x, 'valid')`` as ``scipy.signal.correlate2d(x, win, 'valid')``, and the
    masked assignments in the script's order. Shares no code with :func:`vifp`."""
    signal = pytest.importorskip("scipy.signal", reason="SciPy (with the dev extra's scikit-image) is not installed")
    sigma_nsq, num, den = 2.0, 0.0, 0.0
    for scale in range(1, 5):
        n = 2 ** (4 - scale + 1) + 1
        half = (n - 1) / 2
        y, x = np.mgrid[-half:half + 1, -half:half + 1]
        win = np.exp(-(x * x + y * y) / (2 * (n / 5) ** 2))
        win /= win.sum()

        def filt(image: np.ndarray, win: np.ndarray = win) -> np.ndarray:
            return signal.correlate2d(image, win, mode="valid")

        if scale > 1:
            ref, dist = filt(ref)[::2, ::2], filt(dist)[::2, ::2]
        mu1, mu2 = filt(ref), filt(dist)
        sigma1_sq = filt(ref * ref) - mu1 * mu1
        sigma2_sq = filt(dist * dist) - mu2 * mu2
        sigma12 = filt(ref * dist) - mu1 * mu2
        sigma1_sq[sigma1_sq < 0] = 0
        sigma2_sq[sigma2_sq < 0] = 0
        g = sigma12 / (sigma1_sq + 1e-10)
        sv_sq = sigma2_sq - g * sigma12
        low = sigma1_sq < 1e-10
        g[low] = 0
        sv_sq[low] = sigma2_sq[low]
        sigma1_sq[low] = 0
        low = sigma2_sq < 1e-10
        g[low] = 0
        sv_sq[low] = 0
        low = g < 0
        sv_sq[low] = sigma2_sq[low]
        g[low] = 0
        sv_sq[sv_sq <= 1e-10] = 1e-10
        num += np.sum(np.log10(1 + g ** 2 * sigma1_sq / (sv_sq + sigma_nsq)))
        den += np.sum(np.log10(1 + sigma1_sq / sigma_nsq))
    return float(num / den)


@pytest.mark.parametrize("name", BUNDLED[:2])
def test_vifp_matches_the_matlab_reference_transcribed_on_scipy(name: str) -> None:
    """Pinned against :func:`_vifp_mscale` on a 160×200 crop of bundled pairs (each source against
    their average, and infrared against visible), relative 1e-8: its 2-D kernel rounds differently
    from the separable one, and ``σ² = G(x²) − μ²`` amplifies that on near-flat thermal regions
    (measured up to 1.1e-9 relative; the other figures agree to ~1e-13)."""
    visible, infrared = _bundled_pair(name)
    grey, ir = to_grey(visible)[200:360, 300:500], infrared[200:360, 300:500].astype(np.float64)
    fused = np.rint((grey + ir) / 2)
    for ref, dist in ((grey, fused), (ir, fused), (ir, grey)):
        assert vifp(ref, dist) == pytest.approx(_vifp_mscale(ref, dist), rel=1e-8)
    assert fusion_vif(fused, grey, ir) == pytest.approx(_vifp_mscale(grey, fused) + _vifp_mscale(ir, fused), rel=1e-8)
