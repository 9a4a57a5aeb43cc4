"""Thermal gain control and infrared→visible registration (files, estimation, CLI)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from mrfs_edge.assets import SAMPLES
from mrfs_edge.io.images import read_infrared, read_visible
from mrfs_edge.processing.preprocess import to_network_inputs
from mrfs_edge.processing.registration import (
    Registration,
    RegistrationError,
    estimate_registration,
    load_registration,
)
from mrfs_edge.processing.thermal import ThermalAGC
from mrfs_edge.tools.run import register_main

REPO = Path(__file__).resolve().parents[1]


def full_range_infrared() -> np.ndarray:
    """A bundled infrared frame whose values span 0..255 (so a 0–100 % stretch maps back exactly)."""
    ir = read_infrared(SAMPLES / "ir" / "00147D.png").copy()
    ir[0, 0], ir[0, 1] = 0, 255
    return ir


def test_eight_bit_frames_pass_through_untouched():
    ir = full_range_infrared()
    assert ThermalAGC()(ir) is ir


def test_sixteen_bit_from_eight_bit_gives_the_same_network_input():
    ir8 = full_range_infrared()
    ir16 = ir8.astype(np.uint16) * 37 + 1200            # a radiometric sensor's offset and gain
    agc = ThermalAGC(low_percentile=0.0, high_percentile=100.0)
    restored = agc(ir16)
    assert restored.dtype == np.uint8
    visible = read_visible(SAMPLES / "vi" / "00147D.png")
    _, expected, _ = to_network_inputs(visible, ir8)
    _, got, _ = to_network_inputs(visible, restored)
    assert np.abs(got - expected).max() <= 1.0 / 255 + 1e-6


def test_stretch_limits_are_smoothed_over_time():
    agc = ThermalAGC(0.0, 100.0, smoothing=0.75)
    frame = np.linspace(1000, 2000, 100, dtype=np.uint16).reshape(10, 10)
    agc(frame)
    assert agc.limits == pytest.approx((1000, 2000))
    agc(frame + 400)                                      # the scene warms up by 400 counts
    assert agc.limits == pytest.approx((1100, 2100))      # 0.75 · old + 0.25 · new
    agc.reset()
    assert agc.limits is None


@pytest.mark.parametrize("kwargs", [{"low_percentile": 50, "high_percentile": 10}, {"smoothing": 1.0}])
def test_bad_agc_settings_are_refused(kwargs):
    with pytest.raises(ValueError):
        ThermalAGC(**kwargs)


def shift_file(path: Path, kind: str, dx: int, dy: int) -> Path:
    matrix = [[1, 0, dx], [0, 1, dy]] + ([[0, 0, 1]] if kind == "homography" else [])
    data = {"type": kind, "matrix": matrix, "visible_size": [640, 480]}
    path.write_text(yaml.safe_dump(data) if path.suffix == ".yaml" else json.dumps(data))
    return path


@pytest.mark.parametrize("kind, name", [("homography", "reg.yaml"), ("affine", "reg.json")])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_a_known_shift_moves_the_infrared_frame_by_exactly_that_shift(tmp_path, kind, name, dtype):
    registration = load_registration(shift_file(tmp_path / name, kind, 7, -3))
    ir = read_infrared(SAMPLES / "ir" / "00147D.png").astype(dtype)
    warped = registration.warp(ir, (640, 480))
    assert warped.dtype == dtype and warped.shape == (480, 640)
    assert np.array_equal(warped[:477, 7:], ir[3:, :633])   # out[y, x] = in[y + 3, x − 7]
    assert not warped[:, :7].any() and not warped[477:].any()


def test_registration_rescales_to_another_visible_resolution(tmp_path):
    registration = load_registration(shift_file(tmp_path / "reg.yaml", "homography", 10, 20))
    matrix = registration.homography((1280, 960))
    assert matrix @ [0, 0, 1] == pytest.approx([20, 40, 1])


@pytest.mark.parametrize("text, needle", [
    (None, "no such registration file"),
    ("matrix: [[1, 0], [0, 1]]\ntype: homography\n", "3x3"),
    ("type: rotation\nmatrix: [[1, 0, 0], [0, 1, 0]]\n", "must be one of"),
    ("[unclosed", "not valid YAML/JSON"),
])
def test_bad_registration_files_are_one_line_errors_naming_the_file(tmp_path, text, needle):
    path = tmp_path / "reg.yaml"
    if text is not None:
        path.write_text(text)
    with pytest.raises(RegistrationError) as exc:
        load_registration(path)
    assert str(path) in str(exc.value) and needle in str(exc.value) and "\n" not in str(exc.value)


def test_estimation_recovers_known_transforms():
    truth = np.array([[1.9, 0.05, 30.0], [-0.02, 2.1, 12.0], [1e-5, 2e-5, 1.0]])
    ir = np.array([[10, 10], [150, 12], [155, 110], [8, 115], [80, 60], [40, 90]], float)
    vis = Registration("homography", truth).homography()
    projected = (np.c_[ir, np.ones(len(ir))] @ vis.T)
    projected = projected[:, :2] / projected[:, 2:]
    estimate = estimate_registration(ir, projected, "homography", (640, 480))
    assert estimate.matrix / estimate.matrix[2, 2] == pytest.approx(truth, rel=1e-4, abs=1e-6)
    assert estimate.rms_error_px < 1e-3
    affine = estimate_registration(ir[:3], ir[:3] * 2 + [5, -4], "affine")
    assert affine.matrix == pytest.approx(np.array([[2, 0, 5], [0, 2, -4]]), abs=1e-6)


@pytest.mark.parametrize("ir, vis, kind, needle", [
    ([[0, 0], [1, 1], [2, 0]], [[0, 0], [1, 1], [2, 0]], "homography", "at least 4"),
    ([[0, 0], [1, 1], [2, 2], [3, 3]], [[0, 0], [1, 1], [2, 2], [3, 3]], "homography", "lie on one line"),
    ([[0, 0], [1, 1], [2, 0]], [[0, 0], [1, 1]], "affine", "3 infrared points but 2"),
])
def test_estimation_rejects_unusable_points(ir, vis, kind, needle):
    with pytest.raises(RegistrationError) as exc:
        estimate_registration(ir, vis, kind)
    assert needle in str(exc.value)


def test_register_cli_writes_a_file_the_runtime_reads(tmp_path, capsys):
    points = tmp_path / "points.txt"
    points.write_text("# ir : visible\n100,10:107,7\n10,100:17,97\n")
    out = tmp_path / "ir_to_vis.yaml"
    code = register_main(["--kind", "affine", "--visible-size", "640x480", "--output", str(out),
                          "--points", "10,10:17,7", "--points-file", str(points)])
    assert code == 0 and "RMS error 0.00 px" in capsys.readouterr().out
    registration = load_registration(out)
    assert registration.kind == "affine" and registration.visible_size == (640, 480)
    assert registration.matrix == pytest.approx(np.array([[1, 0, 7], [0, 1, -3]]), abs=1e-6)
    assert not list(tmp_path.glob(".*partial"))


def test_register_script_reports_bad_points_in_one_line(tmp_path):
    result = subprocess.run([sys.executable, str(REPO / "runtime" / "register.py"), "--visible-size", "640x480",
                             "--output", str(tmp_path / "r.json"), "--points", "1,2;3,4"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and result.stderr.startswith("error: point pair '1,2;3,4'")
