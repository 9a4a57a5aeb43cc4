"""The shipped demo checkpoint: loadable, small, and its model card's figures are what it measures."""
from __future__ import annotations

import pytest
from conftest import SHARED_DATA, needs_shared

from mrfs_edge.assets import DEMO_CHECKPOINT, DEMO_MODEL_CARD

torch = pytest.importorskip("torch")


def test_demo_checkpoint_is_an_authors_format_b0_under_25_mb():
    from mrfs_edge.model import load_checkpoint

    assert DEMO_CHECKPOINT.stat().st_size <= 25 * 1024 * 1024
    raw = torch.load(DEMO_CHECKPOINT, map_location="cpu", weights_only=True)
    assert set(raw) >= {"model"} and all(t.dtype == torch.float16 for t in raw["model"].values() if t.is_floating_point())
    model = load_checkpoint(DEMO_CHECKPOINT)
    assert (model.config.encoder.name, model.config.num_classes, model.config.decoder_embed_dim) == ("mit_b0", 9, 256)
    assert all(p.dtype == torch.float32 for p in model.parameters())


@needs_shared(SHARED_DATA / "mfnet_subset")
def test_model_card_figures_are_what_the_shipped_weights_measure():
    from mrfs_edge.io.pairs import PairFolder
    from mrfs_edge.tools.model_card import card_results, evaluate_checkpoint

    recorded = card_results(DEMO_MODEL_CARD)["MFNet held-out (in_msrs_test, raw thermal)"]
    folder = PairFolder(SHARED_DATA / "mfnet_subset", "in_msrs_test.txt", require_labels=True)
    score = evaluate_checkpoint(DEMO_CHECKPOINT, folder)
    assert recorded["pairs"] == len(folder) == 30
    assert score.miou == pytest.approx(recorded["miou"], abs=1e-3)
    assert score.accuracy == pytest.approx(recorded["pixel_accuracy"], abs=1e-3)
