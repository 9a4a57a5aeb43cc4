"""The benchmark report as a person reads it: report.md's tables and words, the plots' axes and the grids.

The report is built from rows made like the harness makes them (``empty_row`` filled with the
figures of a run on the bundled pairs: INT8 loses 3.88 IoU points on car while mIoU drops 0.22);
the grids are drawn from the bundled pairs with class maps derived from their labels, so every
expected pixel and pair is known.
"""
from __future__ import annotations

import copy
import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from mrfs_edge.assets import EVAL_SPLIT, SAMPLES
from mrfs_edge.bench import report as bench_report
from mrfs_edge.bench.accuracy import PairOutputs
from mrfs_edge.bench.modes import MODES
from mrfs_edge.core.classes import MFNET_CLASSES, MFNET_PALETTE
from mrfs_edge.io.pairs import PairFolder

CLASSES = list(MFNET_CLASSES)
REF_IOU = dict(zip(CLASSES, (0.951, 0.453, 0.432, 0.447, 0.374, 0.255, 0.298, 0.059, 0.0)))
INT8_DELTA = dict(zip(CLASSES, (-0.0030, -0.0388, 0.0049, 0.0038, 0.0040, -0.0042, 0.0009, 0.0127, 0.0)))


def _row(mode: str, p50: float, miou: float, delta: dict[str, float], agreement: float,
         fused_psnr: float | None, reference: bool = False) -> dict:
    row = bench_report.empty_row(MODES[mode], "")
    row.update({
        "reference": reference, "backend": MODES[mode].runtime, "device": "cpu", "detail": "2 threads",
        "model_file": f"/models/{mode}", "file_size_bytes": 20_000_000,
        "latency": {"b1": {"batch": 1, "runs": 10, "warmup": 2, "mean_ms": p50, "p50_ms": p50, "p90_ms": p50,
                           "p99_ms": p50, "throughput_fps": 1000 / p50, "end_to_end_mean_ms": p50 + 10,
                           "end_to_end_p50_ms": p50 + 10, "end_to_end_p90_ms": p50 + 10,
                           "end_to_end_p99_ms": p50 + 10, "end_to_end_fps": 1000 / (p50 + 10),
                           "preprocess_ms": 2.0, "postprocess_ms": 8.0}},
        "memory": {"host_peak_rss_mb": 900.0, "device_mb": None},
        "accuracy": {"pairs": 8, "miou": miou, "pixel_accuracy": 0.944,
                     "per_class_iou": {c: REF_IOU[c] + delta[c] for c in CLASSES}, "miou_drop": 0.3631 - miou,
                     "per_class_iou_delta": delta, "agreement": agreement, "fused_psnr": fused_psnr,
                     "fused_ssim": 0.99, "max_abs_fused": 0.1},
        "fusion": {k: 1.0 for k in bench_report.FUSION_KEYS},
        "fusion_delta": {k: 0.0 for k in bench_report.FUSION_KEYS},
        "layers": None,
        "reasons": {"memory.device_mb": "runs on the CPU: no device memory",
                    "layers": "no per-layer report for this model"},
    })
    if fused_psnr is None:
        row["reasons"]["accuracy.fused_psnr"] = "fused images identical to the reference's: PSNR is infinite"
    return row


def make_report(load: float = 0.2) -> dict:
    """A report as the harness assembles it, from a run on the bundled pairs."""
    zero = dict.fromkeys(CLASSES, 0.0)
    rows = [_row("pytorch-fp32", 1114.9, 0.3631, zero, 1.0, None, reference=True),
            _row("onnxruntime-fp32", 111.0, 0.3631, zero, 1.0, 141.3),
            _row("onnxruntime-int8", 1511.8, 0.3609, INT8_DELTA, 0.99461, 39.8),
            bench_report.empty_row(MODES["tensorrt-fp16"], "TensorRT not installed")]
    return {
        "schema": bench_report.SCHEMA, "created": "2026-12-02T00:56:52+00:00",
        "environment": {"machine": {"cpu": "Xeon", "cores": 2, "os": "Linux", "load_average": [load, 1.0, 1.0],
                                    "load_average_end": [load + 1, 1.0, 1.0]},
                        "versions": {"python": "3.11"}, "commit": "abc"},
        "config": {"checkpoint": "demo.pth", "data": "samples", "split": None, "pairs": 8, "labelled": True,
                   "input_size": [480, 640], "runs": 10, "warmup": 2, "batches": [1], "threads": 2,
                   "reference": "pytorch-fp32", "reference_source": "PyTorch FP32 eager", "reference_missing": None},
        "summary": {"speedup": bench_report.speedup(rows), "targets": bench_report.target_checks(rows)},
        "rows": rows, "plots": {},
    }


def _section(text: str, title: str) -> str:
    start = text.index(f"## {title}")
    end = text.find("\n## ", start + 1)
    return text[start:end if end >= 0 else None]


def _table(section: str) -> tuple[list[str], list[list[str]]]:
    lines = [line for line in section.splitlines() if line.startswith("|")]
    cells = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]
    return cells[0], cells[2:]


# --------------------------------------------------------------------------- report.md

def test_summary_table_names_the_worst_class_drop():
    header, body = _table(_section(bench_report.markdown(make_report()), "Summary"))
    rows = {cells[0]: dict(zip(header, cells)) for cells in body}
    column = next(name for name in header if "worst class" in name)
    assert rows[MODES["onnxruntime-int8"].label][column] == "car -3.88"
    assert rows[MODES["onnxruntime-fp32"].label][column] == "none"
    assert bench_report.worst_class_drop(make_report()["rows"][2]) == ("car", pytest.approx(-0.0388))


def test_every_metric_name_of_the_tables_is_explained_in_one_line():
    text = bench_report.markdown(make_report())
    glossary = _section(text, "What the figures mean").splitlines()
    terms = {term for line in glossary if line.startswith("- **")
             for term in line[4:line.index("**", 4)].split(", ")}
    fusion_header, _ = _table(_section(text, "Fusion quality"))
    summary_header, _ = _table(_section(text, "Summary"))
    explained_elsewhere = {"mode", "backend · device", "file MB", "fps"}
    assert set(fusion_header[1:]) <= terms
    assert set(summary_header) - explained_elsewhere <= terms
    assert "SSIM" not in fusion_header and "PSNR" not in fusion_header      # the names say what they compute
    line = next(line for line in glossary if line.startswith("- **SSIM(F,VI)+SSIM(F,IR)**"))
    assert "at most 2" in line


def test_not_measured_says_what_in_words_not_field_names():
    section = _section(bench_report.markdown(make_report()), "Not measured")
    assert not re.search(r"\b[a-z_]+\.[a-z_]+\b", section), section       # no dotted field paths
    assert "file_size_bytes" not in section and "fusion_delta" not in section
    assert "device (GPU) memory" in section
    assert "fused PSNR vs the reference" in section
    assert f"**{MODES['tensorrt-fp16'].label}**: nothing measured" in section


def test_describe_path_in_words():
    assert bench_report.describe_path("latency.b4") == "latency at batch 4"
    assert bench_report.describe_path("accuracy.per_class_iou.car") == "IoU of car"
    assert bench_report.describe_path("fusion.SSIM") == "fusion SSIM(F,VI)+SSIM(F,IR)"


@pytest.mark.parametrize("load, warned", [(3.2, True), (0.2, False)])
def test_the_speedup_line_carries_the_busy_warning(load, warned):
    report = make_report(load)
    text = bench_report.markdown(report)
    line = next(line for line in text.splitlines() if "ONNX Runtime FP32 vs PyTorch eager" in line)
    assert ("busy machine" in line) is warned
    headline = bench_report.console_summary(report).splitlines()[0]
    assert "× faster" in headline and ("busy machine" in headline) is warned
    # tools/benchmark.py prints report.md from the speed-up line on: the warning is in that part too.
    assert ("busy machine" in text[text.index("**ONNX Runtime"):]) is warned


def test_a_slower_mode_is_not_called_faster():
    report = make_report()
    report["summary"]["speedup"].update(value=0.64, met=False)
    line = bench_report.speedup_line(report)
    assert "1.56× slower" in line and "faster" not in line


# --------------------------------------------------------------------------- plots: accuracy axes

def test_latency_plot_axis_shows_a_small_drop_to_scale(tmp_path: Path):
    pytest.importorskip("matplotlib")
    from mrfs_edge.bench import plots

    axis = plots.accuracy_axis(make_report()["rows"], labelled=True)
    assert axis.values["onnxruntime-int8"] == pytest.approx(-0.22)
    low, high = axis.limits
    assert low <= -1.0 and high >= 1.0 and low == -high          # ±1 point at least: 0.2 is a fifth of it
    large = copy.deepcopy(make_report()["rows"])
    large[2]["accuracy"]["miou_drop"] = 0.05
    assert plots.accuracy_axis(large, labelled=True).limits[0] <= -5.0
    assert plots.latency_vs_accuracy(make_report()["rows"], tmp_path / "l.png", True).stat().st_size > 0


def test_latency_plot_without_labels_starts_disagreement_at_zero():
    pytest.importorskip("matplotlib")
    from mrfs_edge.bench import plots

    axis = plots.accuracy_axis(make_report()["rows"], labelled=False)
    assert axis.limits[0] == 0.0 and axis.limits[1] >= 1.0
    assert axis.values["onnxruntime-int8"] == pytest.approx(100 * (1 - 0.99461))


# --------------------------------------------------------------------------- plots: grids

def test_report_palette_reads_on_dark_backgrounds():
    pytest.importorskip("matplotlib")
    from mrfs_edge.bench.plots import DISAGREEMENT_COLOUR, report_palette

    def luminance(rgb):
        return 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]

    assert min(luminance(c) for c in MFNET_PALETTE[1:]) < 60          # the runtime's palette does not
    for count in (9, 15, 5):
        colours = report_palette(count)[1:]
        assert len(set(colours)) == count - 1 and DISAGREEMENT_COLOUR not in colours
        assert min(luminance(c) for c in colours) >= 90


def test_disagreement_map_marks_exactly_the_differing_pixels():
    pytest.importorskip("matplotlib")
    from mrfs_edge.bench.plots import DISAGREEMENT_COLOUR, disagreement_overlay

    pair = PairFolder(SAMPLES, EVAL_SPLIT)[0]
    reference = pair.label.copy()
    labels = reference.copy()
    rng = np.random.default_rng(0)
    rows, cols = rng.integers(0, labels.shape[0], 500), rng.integers(0, labels.shape[1], 500)
    labels[rows, cols] = (labels[rows, cols] + 1) % len(CLASSES)
    labels[100:110, 200:230] = (labels[100:110, 200:230] + 3) % len(CLASSES)
    image = disagreement_overlay(pair.visible, labels, reference)
    marked = np.all(image == DISAGREEMENT_COLOUR, axis=2)
    np.testing.assert_array_equal(marked, labels != reference)
    assert image.shape == pair.visible.shape and image.dtype == np.uint8


def test_rows_are_the_worst_pairs_with_a_day_and_a_night_one():
    pytest.importorskip("matplotlib")
    from mrfs_edge.bench.plots import choose_rows, time_of_day

    names = PairFolder(SAMPLES, EVAL_SPLIT).names
    assert {time_of_day(n) for n in names} == {"day", "night"}
    # The day pairs disagree most: the three worst are all day, so a night pair must come in.
    disagreement = [0.05 if time_of_day(n) == "day" else 0.001 for n in names]
    disagreement[names.index("01502D")] = 0.2
    chosen = choose_rows(names, disagreement, 3)
    assert len(chosen) == 3 and chosen[0] == names.index("01502D")
    assert {time_of_day(names[i]) for i in chosen} == {"day", "night"}
    night = [i for i, n in enumerate(names) if time_of_day(n) == "night"]
    disagreement[night[2]] = 0.004          # the night pair that disagrees most is the one shown
    assert night[2] in choose_rows(names, disagreement, 3)
    assert sorted(choose_rows(names, [0.0] * len(names), 1)) == [0, 3]   # one row asked, both times shown


def test_a_grid_per_mode_from_the_worst_pairs_with_ground_truth(tmp_path: Path):
    pytest.importorskip("matplotlib")
    from mrfs_edge.bench import plots

    folder = PairFolder(SAMPLES, EVAL_SPLIT)
    names = folder.names
    fused = [np.clip(pair.visible.transpose(2, 0, 1) / 255.0, 0, 1).astype(np.float32) for pair in folder]
    reference = [PairOutputs(pair.label.copy(), f) for pair, f in zip(folder, fused)]
    worse = []
    for index, (pair, f) in enumerate(zip(folder, fused)):
        labels = pair.label.copy()
        if names[index] == "00546D":                   # the pair this mode gets most wrong
            labels[:240] = 1
        elif names[index] == "01139N":
            labels[:20] = 2
        worse.append(PairOutputs(labels, f))
    outputs = {"pytorch-fp32": reference, "onnxruntime-int8": worse, "onnxruntime-fp16": reference}
    drawn = plots.mode_grids(folder, outputs, "pytorch-fp32", CLASSES, tmp_path, count=2,
                             titles={m: MODES[m].label for m in outputs})
    assert set(drawn) == {"grid_onnxruntime-int8", "grid_onnxruntime-fp16"}   # the reference is in every grid
    rows = plots.grid_rows(folder, worse, reference, 2)
    assert [r.pair.name for r in rows] == ["00546D", "01139N"]
    assert rows[0].disagreement == pytest.approx(np.mean(worse[2].labels != reference[2].labels))
    image = cv2.imread(str(drawn["grid_onnxruntime-int8"][0]))
    columns = 7                               # visible, infrared, fused, ground truth, reference, mode, differs
    assert image.shape[1] / columns >= 300 and image.shape[0] / 2 >= 230      # readable tiles, not thumbnails
