"""Paired-folder readers, split lists, the authors' preprocessing, padding and one-line errors."""
from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import SHARED_DATA, needs_shared

from mrfs_edge.assets import SAMPLES
from mrfs_edge.core.errors import DatasetError, ImageError, MrfsEdgeError
from mrfs_edge.io.images import read_infrared, read_label, read_visible
from mrfs_edge.io.pairs import LAYOUTS, PairFolder, read_split
from mrfs_edge.processing.preprocess import (
    Padding,
    fit_to_input,
    fit_to_model,
    pad_chw,
    padding_for,
    to_network_inputs,
)

NAMES = ["00147D", "00508D", "00734N"]


def make_layout(root: Path, layout: str, names=NAMES, labels: bool = True) -> Path:
    """A small paired folder in ``layout`` built from the bundled samples (bytes copied)."""
    vis, ir, label = LAYOUTS[layout]
    for folder, source in ((vis, "vi"), (ir, "ir")) + (((label, "label"),) if labels else ()):
        (root / folder).mkdir(parents=True, exist_ok=True)
        for name in names:
            shutil.copyfile(SAMPLES / source / f"{name}.png", root / folder / f"{name}.png")
    return root


def authors_inputs(vis_path: Path, ir_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The authors' evaluation: imread colour, BGR→RGB, grey IR, both ÷255, CHW float."""
    rgb = cv2.imread(str(vis_path), cv2.IMREAD_COLOR)[:, :, ::-1]
    ir = cv2.imread(str(ir_path), cv2.IMREAD_GRAYSCALE)
    return (rgb.transpose(2, 0, 1).astype(np.float64) / 255.0, ir[None].astype(np.float64) / 255.0)


def one_line_error(exc_type, call, *names: str) -> str:
    with pytest.raises(exc_type) as info:
        call()
    message = str(info.value)
    assert isinstance(info.value, MrfsEdgeError)
    assert "\n" not in message, message
    for name in names:
        assert name in message, f"{name!r} not in {message!r}"
    return message


# --------------------------------------------------------------------------- layouts
@pytest.mark.parametrize("layout", ["msrs", "mfnet", "fmb"])
def test_every_layout_reads_the_same_pairs(tmp_path, layout: str) -> None:
    root = make_layout(tmp_path / layout, layout)
    folder = PairFolder(root)
    assert folder.names == sorted(NAMES) and len(folder) == 3 and folder.has_labels
    vis_dir, ir_dir, label_dir = (root / d for d in LAYOUTS[layout])
    for pair in folder:
        vis_path, ir_path, label_path = (d / f"{pair.name}.png" for d in (vis_dir, ir_dir, label_dir))
        assert folder.paths(folder.names.index(pair.name)) == (vis_path, ir_path, label_path)
        assert pair.visible.dtype == np.uint8 and pair.visible.shape == (480, 640, 3)
        np.testing.assert_array_equal(pair.visible, cv2.imread(str(vis_path))[:, :, ::-1])
        assert pair.infrared.dtype == np.uint8 and pair.infrared.shape == (480, 640)
        np.testing.assert_array_equal(pair.infrared, cv2.imread(str(ir_path), cv2.IMREAD_GRAYSCALE))
        np.testing.assert_array_equal(pair.label, cv2.imread(str(label_path), cv2.IMREAD_UNCHANGED))
        assert pair.label.max() <= 8 and pair.size == (480, 640)


def test_labels_are_optional_unless_required(tmp_path) -> None:
    root = make_layout(tmp_path / "nolabels", "msrs", labels=False)
    folder = PairFolder(root)
    assert not folder.has_labels and folder[0].label is None
    one_line_error(ImageError, lambda: PairFolder(root, require_labels=True),
                   str(root / "label" / NAMES[0]), "label missing")


def test_bundled_samples_and_their_split_lists() -> None:
    evaluation = PairFolder(SAMPLES, SAMPLES / "eval.txt", require_labels=True)
    calibration = PairFolder(SAMPLES, "calib.txt")  # relative to the folder
    assert evaluation.names == SAMPLES.joinpath("eval.txt").read_text().split()
    assert len(evaluation) == 8 and len(calibration) == 4
    assert not set(evaluation.names) & set(calibration.names)


# --------------------------------------------------------------------------- split lists
def test_split_list_order_extensions_comments(tmp_path) -> None:
    root = make_layout(tmp_path / "d", "mfnet")
    (root / "test.txt").write_text("# held out\n00734N.png\n\n  00147D  \n")
    assert read_split(root / "test.txt") == ["00734N", "00147D"]
    assert PairFolder(root, "test.txt").names == ["00734N", "00147D"]           # relative to root
    assert PairFolder(root, root / "test.txt").names == ["00734N", "00147D"]    # absolute
    assert PairFolder(root, ["00508D"]).names == ["00508D"]                      # a list of names


def test_split_list_errors(tmp_path) -> None:
    root = make_layout(tmp_path / "d", "msrs")
    one_line_error(DatasetError, lambda: PairFolder(root, "missing.txt"), "missing.txt", "not found")
    (root / "empty.txt").write_text("# nothing\n\n")
    one_line_error(DatasetError, lambda: PairFolder(root, "empty.txt"), "empty.txt", "empty")
    (root / "bad.txt").write_text("00147D\n09999N\n")
    one_line_error(ImageError, lambda: PairFolder(root, "bad.txt"),
                   str(root / "vi" / "09999N"), "visible image missing")


# --------------------------------------------------------------------------- errors
def test_folder_errors(tmp_path) -> None:
    one_line_error(DatasetError, lambda: PairFolder(tmp_path / "absent"), str(tmp_path / "absent"), "not found")
    (tmp_path / "images").mkdir()
    message = one_line_error(DatasetError, lambda: PairFolder(tmp_path), str(tmp_path), "no paired layout")
    assert "vi/ ir/" in message and "visible/ infrared/" in message and "Visible/ Infrared/" in message


def test_missing_infrared_partner(tmp_path) -> None:
    root = make_layout(tmp_path / "d", "fmb")
    (root / "Infrared" / "00508D.png").unlink()
    one_line_error(ImageError, lambda: PairFolder(root), str(root / "Infrared" / "00508D"),
                   str(root / "Visible" / "00508D.png"), "infrared partner missing")


def test_size_mismatch_names_the_infrared_file(tmp_path) -> None:
    root = make_layout(tmp_path / "d", "msrs")
    ir_path = root / "ir" / "00508D.png"
    cv2.imwrite(str(ir_path), cv2.resize(cv2.imread(str(ir_path), cv2.IMREAD_GRAYSCALE), (320, 240)))
    folder = PairFolder(root)  # sizes are checked when a pair is read
    one_line_error(ImageError, lambda: folder[folder.names.index("00508D")], str(ir_path), "320x240", "640x480")
    label_path = root / "label" / "00147D.png"
    cv2.imwrite(str(label_path), np.zeros((480, 600), np.uint8))
    one_line_error(ImageError, lambda: folder[0], str(label_path), "600x480")


def test_corrupt_truncated_and_wrong_images(tmp_path) -> None:
    root = make_layout(tmp_path / "d", "mfnet")
    vis_path = root / "visible" / "00147D.png"
    vis_path.write_bytes(b"\x89PNG not really an image")
    folder = PairFolder(root)
    one_line_error(ImageError, lambda: folder[0], str(vis_path), "unreadable or corrupt")
    ir_path = root / "infrared" / "00508D.png"
    data = ir_path.read_bytes()
    ir_path.write_bytes(data[: len(data) // 2])
    one_line_error(ImageError, lambda: folder[1], str(ir_path), "unreadable or corrupt")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    one_line_error(ImageError, lambda: read_visible(empty), str(empty))
    one_line_error(ImageError, lambda: read_infrared(tmp_path / "none.png"),
                   str(tmp_path / "none.png"), "no such image")
    one_line_error(ImageError, lambda: read_label(tmp_path), str(tmp_path), "not a file")
    colour_label = tmp_path / "colour_label.png"
    cv2.imwrite(str(colour_label), np.zeros((4, 4, 3), np.uint8))
    one_line_error(ImageError, lambda: read_label(colour_label), str(colour_label), "single-channel")


# --------------------------------------------------------------------------- the authors' preprocessing
@pytest.mark.parametrize("name", ["00147D", "00734N"])
def test_network_inputs_equal_the_authors_preprocessing(name: str) -> None:
    vis_path, ir_path = SAMPLES / "vi" / f"{name}.png", SAMPLES / "ir" / f"{name}.png"
    visible, infrared, padding = to_network_inputs(read_visible(vis_path), read_infrared(ir_path))
    ref_vis, ref_ir = authors_inputs(vis_path, ir_path)
    assert padding == Padding()
    assert visible.dtype == infrared.dtype == np.float32
    assert visible.shape == (1, 3, 480, 640) and infrared.shape == (1, 1, 480, 640)
    np.testing.assert_allclose(visible[0], ref_vis, rtol=0, atol=1e-7)
    np.testing.assert_allclose(infrared[0], ref_ir, rtol=0, atol=1e-7)
    # RGB order, not OpenCV's BGR: the red plane is the file's third channel.
    bgr = cv2.imread(str(vis_path))
    np.testing.assert_array_equal(np.rint(visible[0, 0] * 255).astype(np.uint8), bgr[:, :, 2])


def test_colour_infrared_file_is_read_as_the_authors_grey(tmp_path) -> None:
    """A 3-channel thermal file gives exactly cv2.imread(..., IMREAD_GRAYSCALE), PNG and JPEG."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    for suffix in (".png", ".jpg"):
        path = tmp_path / f"colour_ir{suffix}"
        cv2.imwrite(str(path), image)
        np.testing.assert_array_equal(read_infrared(path), cv2.imread(str(path), cv2.IMREAD_GRAYSCALE))


def test_sixteen_bit_infrared_is_kept_and_refused_by_preprocessing(tmp_path) -> None:
    path = tmp_path / "ir16.png"
    cv2.imwrite(str(path), np.arange(48 * 64, dtype=np.uint16).reshape(48, 64) * 20)
    ir16 = read_infrared(path)
    assert ir16.dtype == np.uint16 and int(ir16.max()) == (48 * 64 - 1) * 20
    with pytest.raises(ValueError, match="8-bit"):
        to_network_inputs(np.zeros((48, 64, 3), np.uint8), ir16)


@pytest.mark.parametrize("size, expected", [
    ((480, 640), Padding(0, 0, 0, 0)),
    ((240, 320), Padding(8, 8, 0, 0)),
    ((241, 330), Padding(7, 8, 11, 11)),     # odd extra goes after (bottom)
    ((1, 63), Padding(15, 16, 0, 1)),
])
def test_padding_to_a_multiple_of_32(size, expected) -> None:
    padding = padding_for(*size)
    assert padding == expected
    assert (size[0] + padding.top + padding.bottom) % 32 == 0 and (size[1] + padding.left + padding.right) % 32 == 0


def test_padding_to_a_target_and_too_large_frames() -> None:
    assert padding_for(470, 600, target=(480, 640)) == Padding(5, 5, 20, 20)
    with pytest.raises(ValueError, match="larger than the network input"):
        padding_for(500, 640, target=(480, 640))


def test_pad_and_crop_round_trip() -> None:
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (241, 330, 3), dtype=np.uint8)
    ir = rng.integers(0, 256, (241, 330), dtype=np.uint8)
    visible, infrared, padding = to_network_inputs(rgb, ir)
    assert visible.shape == (1, 3, 256, 352) and infrared.shape == (1, 1, 256, 352)
    # Zeros around, the frame in the middle at the padding offset.
    inner = visible[0, :, 7:7 + 241, 11:11 + 330]
    np.testing.assert_array_equal(inner, rgb.transpose(2, 0, 1).astype(np.float32) / 255.0)
    assert visible.sum() == pytest.approx(inner.sum())
    assert infrared.sum() == pytest.approx(infrared[0, 0, 7:248, 11:341].sum())
    np.testing.assert_array_equal(padding.crop(visible)[0], inner)
    np.testing.assert_array_equal(padding.crop(infrared)[0, 0], ir.astype(np.float32) / 255.0)
    labels = pad_chw(ir.astype(np.int64)[None], padding)[0]
    np.testing.assert_array_equal(padding.crop(labels), ir)


def test_fit_to_input_pads_small_frames_and_resizes_large_ones() -> None:
    rng = np.random.default_rng(2)
    small = rng.integers(0, 256, (240, 300, 3), dtype=np.uint8)
    vis, ir, fit = fit_to_input(small, small[:, :, 0].copy(), 256, 320)
    assert vis.shape == (1, 3, 256, 320) and not fit.resized
    np.testing.assert_array_equal(fit.restore(vis[0]), small.transpose(2, 0, 1) / np.float32(255.0))
    large = rng.integers(0, 256, (600, 800, 3), dtype=np.uint8)
    vis, ir, fit = fit_to_input(large, large[:, :, 1].copy(), 256, 320)
    assert vis.shape == (1, 3, 256, 320) and fit.resized and fit.padding == Padding()
    assert fit.restore(np.zeros((256, 320), np.uint8), nearest=True).shape == (600, 800)


def test_model_feed_follows_the_contracts_layout() -> None:
    from mrfs_edge.core.contract import ModelContract

    rng = np.random.default_rng(3)
    visible = rng.integers(0, 256, (256, 320, 3), dtype=np.uint8)
    infrared = rng.integers(0, 256, (256, 320), dtype=np.uint8)
    base = dict(backbone="mit_b0", num_classes=9, decoder_embed_dim=256, height=256, width=320)
    feed, _ = fit_to_model(visible, infrared, ModelContract(**base, ir_channels=3))
    assert feed["infrared"].shape == (1, 3, 256, 320)
    assert all(np.array_equal(feed["infrared"][0, c], infrared / np.float32(255.0)) for c in range(3))
    feed, _ = fit_to_model(visible, infrared, ModelContract(**base, uint8_io=True, batch=2))
    assert feed["visible"].dtype == np.uint8 and feed["visible"].shape == (2, 256, 320, 3)
    np.testing.assert_array_equal(feed["visible"][1], visible)
    np.testing.assert_array_equal(feed["infrared"][0, ..., 0], infrared)


# --------------------------------------------------------------------------- ../shared data
@needs_shared(SHARED_DATA / "mfnet_subset")
def test_mfnet_subset_loads_with_its_lists(mfnet_dir) -> None:
    everything = PairFolder(mfnet_dir, "all.txt", require_labels=True)
    assert len(everything) == 200 and everything.has_labels
    assert len(PairFolder(mfnet_dir, "in_msrs_test.txt")) == 30
    assert len(PairFolder(mfnet_dir, "in_msrs_train.txt")) == 156
    for index in (0, 99, 199):
        pair = everything[index]
        assert pair.visible.shape == (480, 640, 3) and pair.infrared.shape == (480, 640)
        assert pair.infrared.dtype == np.uint8 and pair.label.shape == (480, 640)
    # The README's "images containing each class" row, from the label files alone.
    present = np.zeros(9, int)
    for index in range(len(everything)):
        label = read_label(everything.paths(index)[2])
        assert label.max() <= 8
        present[np.unique(label)] += 1
    assert present.tolist() == [200, 115, 159, 66, 80, 71, 7, 75, 14]


@needs_shared(SHARED_DATA / "msrs_test_labelled")
def test_msrs_test_labelled_loads() -> None:
    folder = PairFolder(SHARED_DATA / "msrs_test_labelled", "list.txt", require_labels=True)
    assert len(folder) == 30
    present = np.zeros(9, int)
    for pair in folder:
        assert pair.visible.shape == (480, 640, 3) and pair.infrared.shape == (480, 640)
        present[np.unique(pair.label)] += 1
    assert present.tolist() == [30, 17, 22, 10, 13, 10, 1, 11, 2]  # README's per-class frame counts


@needs_shared(SHARED_DATA / "msrs_test_calib")
def test_msrs_test_calib_loads_without_labels() -> None:
    folder = PairFolder(SHARED_DATA / "msrs_test_calib", "list.txt")
    assert len(folder) == 64 and not folder.has_labels
    assert folder[0].visible.shape == (480, 640, 3)
