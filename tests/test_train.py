"""Training: the MRFS objective by hand, and a tiny resumable run writing authors'-format files."""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from model_factory import B0_9, write_checkpoint  # noqa: E402

from mrfs_edge.assets import SAMPLES  # noqa: E402
from mrfs_edge.model import ModelConfig, load_checkpoint  # noqa: E402
from mrfs_edge.train import (  # noqa: E402
    MRFSLoss,
    TrainConfig,
    Trainer,
    balanced_class_weights,
    fusion_loss,
)
from mrfs_edge.train.__main__ import main as train_main  # noqa: E402

PAIRS = ["00147D", "00734N"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# --------------------------------------------------------------------------- the objective
def test_loss_hand_computed_example() -> None:
    """One-pixel images (Sobel of a single pixel is 0: its centre taps are 0) and three label pixels."""
    fused = torch.tensor([0.2, 0.5, 0.7]).reshape(1, 3, 1, 1)
    visible = torch.tensor([0.36, 0.64, 0.16]).reshape(1, 3, 1, 1)   # gamma 0.5 → (0.6, 0.8, 0.4)
    infrared = torch.tensor([0.5]).reshape(1, 1, 1, 1)                # replicated grey
    mask = torch.ones(1, 1, 1, 1)
    # contrast ×1.7 around torchvision's grey mean (0.2989 + 0.587 + 0.114)·0.5 = 0.49995
    ir_prime = 1.7 * 0.5 - 0.7 * 0.49995                              # 0.500035
    target = [0.6, 0.8, max(0.4, ir_prime)]
    intensity = (abs(0.2 - target[0]) + abs(0.5 - target[1]) + abs(0.7 - target[2])) / 3
    y_f, y_v = 0.299 * 0.2 + 0.587 * 0.5 + 0.114 * 0.7, 0.299 * 0.6 + 0.587 * 0.8 + 0.114 * 0.4
    cb = abs(((0.7 - y_f) * 0.564 + 0.5) - ((0.4 - y_v) * 0.564 + 0.5))
    cr = abs(((0.2 - y_f) * 0.713 + 0.5) - ((0.6 - y_v) * 0.713 + 0.5))
    expected_fusion = 0.5 * intensity + 0.2 * 0.0 + cb + cr
    assert expected_fusion == pytest.approx(0.5654307, abs=1e-6)
    got = fusion_loss(fused, visible, infrared.expand(-1, 3, -1, -1), mask)
    assert float(got) == pytest.approx(expected_fusion, rel=1e-6)

    logits = torch.tensor([[2.0, 0.0, 5.0], [0.0, 1.0, 5.0], [-1.0, 0.0, 5.0]]).reshape(1, 3, 1, 3)
    label = torch.tensor([[[0, 2, 255]]])
    ce = (math.log(1 + math.exp(-2) + math.exp(-3)) + math.log(2 + math.e)) / 2  # pixel 3 ignored
    total, parts = MRFSLoss()(logits, fused, label, visible, infrared, mask)
    assert parts["seg"] == pytest.approx(ce, rel=1e-6)
    assert parts["fusion"] == pytest.approx(expected_fusion, rel=1e-6)
    assert float(total) == pytest.approx(ce + 0.1 * expected_fusion, rel=1e-6)


def _sobel_np(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cross-correlation with the spec's Sobel kernels per channel, zero padding."""
    kx = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], float)
    ky = np.array([[1, 2, 1], [0, 0, 0], [-1, -2, -1]], float)
    h, w = image.shape[-2:]
    padded = np.pad(image, [(0, 0)] * (image.ndim - 2) + [(1, 1), (1, 1)])
    gx, gy = np.zeros_like(image), np.zeros_like(image)
    for i in range(3):
        for j in range(3):
            window = padded[..., i:i + h, j:j + w]
            gx += kx[i, j] * window
            gy += ky[i, j] * window
    return gx, gy


def _fusion_reference(fused, visible, infrared, mask, gradient_weight: float = 0.2) -> float:
    f = fused * mask
    v = np.sqrt(visible)
    grey_mean = (0.2989 * infrared[:, 0] + 0.587 * infrared[:, 1] + 0.114 * infrared[:, 2]).mean(axis=(1, 2))
    i = np.clip(1.7 * infrared + (1 - 1.7) * grey_mean[:, None, None, None], 0, 1)
    intensity = np.abs(f - np.maximum(v, i)).mean()
    (fx, fy), (vx, vy), (ix, iy) = _sobel_np(f), _sobel_np(v), _sobel_np(i)
    gradient = 0.5 * np.abs(fx - np.maximum(vx, ix)).mean() + 0.5 * np.abs(fy - np.maximum(vy, iy)).mean()

    def cbcr(x):
        y = 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]
        return (x[:, 2] - y) * 0.564 + 0.5, (x[:, 0] - y) * 0.713 + 0.5
    (cb_f, cr_f), (cb_v, cr_v) = cbcr(f), cbcr(v)
    colour = np.abs(cb_f - cb_v).mean() + np.abs(cr_f - cr_v).mean()
    return 0.5 * intensity + gradient_weight * gradient + colour


def test_fusion_loss_matches_numpy_reference_with_padding_mask() -> None:
    rng = np.random.default_rng(0)
    fused = rng.random((2, 3, 6, 7))
    visible = rng.random((2, 3, 6, 7))
    infrared = np.repeat(rng.random((2, 1, 6, 7)), 3, axis=1)
    mask = np.ones((2, 1, 6, 7))
    mask[0, :, :, 5:] = 0      # padded columns of the first crop
    visible[0, :, :, 5:] = 0
    infrared[0, :, :, 5:] = 0
    expected = _fusion_reference(fused, visible, infrared, mask)
    t = {k: torch.from_numpy(v) for k, v in dict(f=fused, v=visible, i=infrared, m=mask).items()}
    got = fusion_loss(t["f"], t["v"], t["i"], t["m"])
    assert float(got) == pytest.approx(expected, rel=1e-10)
    # The gradient term has teeth: on 6×7 images it changes the loss.
    assert abs(expected - _fusion_reference(fused, visible, infrared, mask, gradient_weight=0.0)) > 1e-2


def test_cross_entropy_ignores_255_and_class_weights() -> None:
    logits = torch.randn(1, 4, 3, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    label = torch.tensor([[[0, 1, 2, 3, 255], [3, 3, 255, 1, 0], [2, 2, 2, 255, 255]]])
    log_p = torch.log_softmax(logits, dim=1)
    valid = label != 255
    nll = -log_p.gather(1, label.clamp(max=3)[:, None])[:, 0][valid]
    assert float(MRFSLoss().segmentation(logits, label)) == pytest.approx(float(nll.mean()), rel=1e-12)
    weights = balanced_class_weights([900, 50, 30, 20], c=1.02)
    expected = [1 / math.log(1.02 + p) for p in (0.9, 0.05, 0.03, 0.02)]
    np.testing.assert_allclose(weights.numpy(), expected, rtol=1e-6)


# --------------------------------------------------------------------------- a tiny run
@pytest.fixture(scope="module")
def two_pairs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("train_data")
    for folder in ("vi", "ir", "label"):
        (root / folder).mkdir()
        for name in PAIRS:
            shutil.copyfile(SAMPLES / folder / f"{name}.png", root / folder / f"{name}.png")
    return root


def _config(data: Path, out: Path, iterations: int) -> TrainConfig:
    return TrainConfig(data=str(data), out_dir=str(out), iterations=iterations, batch_size=2, crop=(64, 96),
                       scales=(0.25, 0.5), warmup=2, save_every=2, log_every=1, drop_path=0.0, threads=1, seed=3)


def test_short_run_writes_authors_format_and_resumes(two_pairs, tmp_path) -> None:
    out = tmp_path / "run"
    trainer = Trainer(_config(two_pairs, out, iterations=2))
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.run()
    assert trainer.iteration == 2
    last = out / "last.pth"
    payload = torch.load(last, map_location="cpu", weights_only=True)
    assert {"model", "optimizer", "epoch", "iteration"} <= set(payload) and payload["iteration"] == 2
    model = load_checkpoint(last)  # strict, variant inferred from the weights
    assert model.config == ModelConfig("mit_b0", 9, 256)
    after = model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in trainer.model.state_dict().items())
    assert any(not torch.equal(before[k], after[k]) for k in before if before[k].is_floating_point())
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [entry["iteration"] for entry in log] == [1, 2]
    assert all(math.isfinite(entry["loss"]) and entry["loss"] > 0 for entry in log)

    resumed = Trainer(_config(two_pairs, out, iterations=3), resume=True)
    assert resumed.iteration == 2
    assert all(torch.equal(resumed.model.state_dict()[k], after[k]) for k in after)
    steps = {int(state["step"]) for state in resumed.optimizer.state_dict()["state"].values()}
    assert steps == {2}
    resumed.run()
    assert resumed.iteration == 3
    assert torch.load(last, map_location="cpu", weights_only=True)["iteration"] == 3
    assert [json.loads(line)["iteration"] for line in (out / "log.jsonl").read_text().splitlines()] == [1, 2, 3]


def test_cli_fine_tunes_and_ships_a_half_checkpoint(two_pairs, tmp_path) -> None:
    init = write_checkpoint(tmp_path / "init.pth", B0_9, seed=4)
    ship = tmp_path / "shipped.pth"
    code = train_main(["--data", str(two_pairs), "--out-dir", str(tmp_path / "ft"), "--init", str(init),
                       "--iterations", "1", "--batch-size", "1", "--crop", "64", "64", "--scales", "0.25",
                       "--warmup", "1", "--threads", "1", "--drop-path", "0", "--ship", str(ship)])
    assert code == 0
    payload = torch.load(ship, map_location="cpu", weights_only=True)
    assert payload["iteration"] == 1
    assert payload["model"]["backbone.patch_embed1.proj.weight"].dtype == torch.float16
    assert load_checkpoint(ship).config == ModelConfig("mit_b0", 9, 256)


def test_cli_bad_data_is_one_line_exit_2(tmp_path, capsys) -> None:
    assert train_main(["--data", str(tmp_path / "absent"), "--out-dir", str(tmp_path / "o"), "--iterations", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and str(tmp_path / "absent") in err[0]
