"""``report.json`` (every figure, strict JSON) and ``report.md`` (the tables a person reads).

Schema of a row (every row has every key; a figure that could not be measured is ``null`` and
``reasons`` says why, keyed by the figure's dotted path or by the path of a parent)::

    mode, label, runtime, precision, emulated, reference, backend, device, detail,
    model_file, file_size_bytes,
    latency: {"b<batch>": {batch, runs, warmup, mean_ms, p50_ms, p90_ms, p99_ms, throughput_fps,
              end_to_end_mean_ms, end_to_end_p50_ms, end_to_end_p90_ms, end_to_end_p99_ms,
              end_to_end_fps, preprocess_ms, postprocess_ms}},
    memory: {host_peak_rss_mb, device_mb},
    accuracy: {pairs, miou, pixel_accuracy, per_class_iou{class}, miou_drop, per_class_iou_delta{class},
               agreement, fused_psnr, fused_ssim, max_abs_fused},
    fusion: {EN, SD, SF, AG, MI, VIF, Qabf, SCD, SSIM, PSNR}, fusion_delta: {same keys},
    layers: {total, precision: {int8, fp16, fp32, other}, gpu, dla} (engines: TensorRT's inspector report),
    cost: {known, gmacs: {weighted|attention: {int8, fp16, fp32}}, total_gmacs, weighted_int8_fraction,
           int8_fraction, activation_mb, boundary_mb, weight_mb, unresolved_nodes,
           floor: {label, jetsons: [{jetson, floor_ms, compute_ms, memory_ms, bound}]}}
           (``metrics.jetson_floor.cost_record``: what the mode's graph computes per frame and its
           floor per Jetson, counted on the graph, not measured),
    reasons: {path: text}
"""
from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from mrfs_edge.bench.modes import MODES, REFERENCE, Mode
from mrfs_edge.core.errors import ModelFileError
from mrfs_edge.core.files import sha256_file, write_bytes_atomic
from mrfs_edge.metrics.cost import cost_of_onnx, engine_split
from mrfs_edge.metrics.jetson_floor import FLOOR_LABEL, JETSONS, UNKNOWN_COST, cost_record

SCHEMA = "mrfs_edge.bench/1"
FIGURE_GROUPS = ("model_file", "file_size_bytes", "latency", "memory", "accuracy", "fusion", "fusion_delta", "layers",
                 "cost")
# What the deployment promises on the demo model (the acceptance figures).
TARGETS = (
    ("onnxruntime-int8", "agreement", 0.99, "INT8 Q/DQ pixel agreement ≥ 99%"),
    ("onnxruntime-int8", "fused_psnr", 35.0, "INT8 Q/DQ fused PSNR ≥ 35 dB"),
    ("onnxruntime-fp16", "agreement", 0.999, "FP16 pixel agreement ≥ 99.9%"),
    ("onnxruntime-fp16", "fused_psnr", 45.0, "FP16 fused PSNR ≥ 45 dB"),
)
SPEEDUP_MODE, SPEEDUP_TARGET = "onnxruntime-fp32", 2.5
BUSY_LOAD = 1.0     # 1-minute load average at the start above which latencies are flagged as unreliable
FUSION_KEYS = ("EN", "SD", "SF", "AG", "MI", "VIF", "Qabf", "SCD", "SSIM", "PSNR")
# The fusion table's two figures whose names say something else to a reader: both compare F with its sources.
FUSION_HEADERS = {"SSIM": "SSIM(F,VI)+SSIM(F,IR)", "PSNR": "PSNR(F; VI,IR) dB"}
# One line per figure name of report.md, in the order the tables show them.
GLOSSARY = (
    ("p50 ms, fps", "median model-only time per call at the smallest batch; fps = batch / mean time."),
    ("end-to-end p50 ms", "pre-processing + model + post-processing of the runtime pipeline for one frame."),
    ("peak MB", "resident memory added while the mode was loaded and timed (device memory on a GPU)."),
    ("mIoU %", ("mean over all classes (unlabeled included, as MFNet/MRFS evaluate) of intersection over union "
               "with the ground-truth labels.")),
    ("mIoU drop", "reference mIoU − this mode's mIoU, in points: positive means worse than the reference."),
    ("worst class Δ IoU", ("the class whose IoU changed most for the worse from the reference, with the change in "
                          "IoU points (a mean can hide one class losing several points).")),
    ("agreement %", ("share of pixels whose predicted class equals the reference's prediction (not the ground "
                    "truth's): 100 = same segmentation.")),
    ("fused PSNR vs ref dB", ("PSNR of this mode's fused image against the reference's fused image (peak 1, MSE "
                             "over every pixel and channel of all pairs); above ~40 dB the difference is invisible, "
                             "above ~100 dB it is float rounding. Not the fusion table's PSNR.")),
    ("fused SSIM vs ref", ("mean SSIM of this mode's fused image against the reference's (per channel, averaged "
                          "over pairs): 1 = identical.")),
    ("EN, SD, SF, AG", ("entropy (bits), standard deviation, spatial frequency and average gradient of the fused "
                       "image F alone: information and detail, higher is richer.")),
    ("MI, VIF", ("mutual information (bits) and visual information fidelity of F with each source, summed over "
                "visible and infrared.")),
    ("Qabf", "how much of the sources' edge strength and orientation F keeps (0..1)."),
    ("SCD", "sum of the correlations between F minus one source and the other source (−2..2)."),
    ("SSIM(F,VI)+SSIM(F,IR)", ("the fusion literature's \"SSIM\": the sum of F's SSIM with each source, so at "
                              "most 2; it measures fusion, not similarity to the reference.")),
    ("PSNR(F; VI,IR) dB", ("the fusion literature's \"PSNR\": 10·log10(255² / mean of MSE(F,VI) and MSE(F,IR)), "
                          "how close F is to its two (different) sources, so typically 10–20 dB; not the fused "
                          "PSNR vs the reference.")),
    ("Δ", "in the per-class and fusion tables: this mode − the reference."),
    ("GMACs INT8, GMACs FP16, GMACs FP32", ("multiply-adds per frame, in billions, by the precision the mode runs "
                                           "them in (Conv, Gemm and MatMul: weighted layers and attention "
                                           "products), counted on its graph.")),
    ("weighted INT8 %", "share of the multiply-adds of layers with weights that run in INT8."),
    ("activation MB", ("bytes of activations per frame if every tensor of the graph as written is stored once "
                       "and read once per consumer, at its stored precision (views and Q/DQ store nothing).")),
    ("boundary MB", ("the same when everything but the matrix ops is fused into them: each Conv/Gemm/MatMul reads "
                     "its inputs and writes its output once; with the weights, the floor's memory term.")),
    ("floor ms", ("max(multiply-adds / the GPU's dense peak per precision, (boundary + weight bytes) / DRAM "
                  "bandwidth) on that Jetson, from NVIDIA's published figures: the time below which no engine "
                  "runs this graph. A floor, not a measurement.")),
)
PLOT_CAPTIONS = {
    "latency_vs_miou": "Latency against the mIoU change from the reference (at least ±1 point shown, so small "
                       "drops look small)",
    "per_class_iou": "IoU per class, and each mode's change from the reference in IoU points",
    "grid": "The mode that disagrees most with the reference: where its classes differ (magenta)",
}
# Words for a row's figure paths in "Not measured" (a path not here is shown as its last part).
PATH_WORDS = {
    "device": "device", "detail": "backend details", "model_file": "model file", "file_size_bytes": "file size",
    "latency": "latency", "memory": "memory", "memory.host_peak_rss_mb": "host memory",
    "memory.device_mb": "device (GPU) memory", "accuracy": "accuracy", "accuracy.pairs": "pair count",
    "accuracy.miou": "mIoU", "accuracy.pixel_accuracy": "pixel accuracy", "accuracy.per_class_iou": "per-class IoU",
    "accuracy.miou_drop": "mIoU drop", "accuracy.per_class_iou_delta": "per-class IoU change",
    "accuracy.agreement": "agreement with the reference", "accuracy.fused_psnr": "fused PSNR vs the reference",
    "accuracy.fused_ssim": "fused SSIM vs the reference",
    "accuracy.max_abs_fused": "largest fused-pixel difference from the reference",
    "fusion": "fusion metrics", "fusion_delta": "fusion change from the reference",
    "layers": "engine layer precisions (TensorRT's inspector)",
    "cost": "cost per frame (GMACs, bytes, floor)",
}


def empty_row(mode: Mode, reason: str, backend: str | None = None) -> dict[str, Any]:
    """A row whose figures are all ``null`` for one reason (mode not runnable here, or it failed)."""
    return {"mode": mode.name, "label": mode.label, "runtime": mode.runtime, "precision": mode.precision,
            "emulated": mode.emulated, "reference": False, "backend": backend or mode.runtime,
            "device": None, "detail": None, **dict.fromkeys(FIGURE_GROUPS),
            "reasons": {key: reason for key in ("device", "detail", *FIGURE_GROUPS)}}


def mode_cost(mode: Mode, model_file: Path) -> tuple[dict[str, Any] | None, str | None]:
    """What ``mode`` computes per frame and its floor per Jetson (``cost_record``), or None and why.

    An ONNX Runtime row runs its graph as typed; an engine row counts the ONNX it was built from
    (its sidecar's ``onnx_file`` beside it, same hash) at the engine's precision (an FP16 or
    ``best`` engine runs the graph's FP32 layers in FP16).
    """
    if mode.runtime == "pytorch":
        return None, "PyTorch runs the network, not a graph: its cost is the FP32 ONNX row's"
    source, precision = model_file, None
    if mode.runtime == "tensorrt":
        from mrfs_edge.backends.sidecar import read_sidecar

        try:
            sidecar = read_sidecar(model_file)
        except ModelFileError as exc:
            return None, str(exc)
        source, precision = model_file.parent / sidecar.onnx_file, sidecar.precision
        if not source.is_file() or sha256_file(source) != sidecar.onnx_sha256:
            return None, f"the ONNX the engine was built from ({sidecar.onnx_file}) is not beside it"
    split = cost_of_onnx(source)
    if split is None:
        return None, UNKNOWN_COST
    return cost_record(engine_split(split, precision) if precision else split), None


def null_paths(value: Any, path: str = "") -> Iterator[str]:
    """Dotted paths of the ``None`` leaves of a row (``reasons`` excluded)."""
    if value is None:
        yield path
    elif isinstance(value, Mapping):
        for key, item in value.items():
            if not (path == "" and key == "reasons"):
                yield from null_paths(item, f"{path}.{key}" if path else str(key))


def reason_for(row: Mapping[str, Any], path: str) -> str | None:
    """The reason recorded for ``path`` or for the nearest parent path."""
    parts = path.split(".")
    for end in range(len(parts), 0, -1):
        reason = row["reasons"].get(".".join(parts[:end]))
        if reason:
            return reason
    return None


def make_finite(value: Any, reasons: dict[str, str], path: str = "") -> Any:
    """Replace NaN/inf by ``None`` (with a reason) so the file is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        reasons.setdefault(path, f"not a finite number ({value})")
        return None
    if isinstance(value, Mapping):
        return {k: make_finite(v, reasons, f"{path}.{k}" if path else str(k)) for k, v in value.items()}
    return value


def first_latency(row: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The row's latency at the smallest batch size measured."""
    latency = row.get("latency") or {}
    measured = [v for v in latency.values() if v and v.get("p50_ms") is not None]
    return min(measured, key=lambda v: v["batch"]) if measured else None


def speedup(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """ONNX Runtime FP32 over PyTorch eager: ratio of p50 model-only times at batch 1, same run and threads."""
    by_mode = {row["mode"]: row for row in rows}
    result: dict[str, Any] = {"of": SPEEDUP_MODE, "over": REFERENCE, "basis": "p50 model-only time, batch 1",
                              "target": SPEEDUP_TARGET, "value": None, "met": None, "reason": None}
    a, b = by_mode.get(REFERENCE), by_mode.get(SPEEDUP_MODE)
    la = (a.get("latency") or {}).get("b1") if a else None
    lb = (b.get("latency") or {}).get("b1") if b else None
    if not la or not lb or la.get("p50_ms") is None or lb.get("p50_ms") is None:
        result["reason"] = f"needs batch-1 latency of both {REFERENCE} and {SPEEDUP_MODE}"
        return result
    result["value"] = la["p50_ms"] / lb["p50_ms"]
    result["met"] = result["value"] >= SPEEDUP_TARGET
    return result


def target_checks(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    by_mode = {row["mode"]: row for row in rows}
    checks = []
    for mode, key, floor, text in TARGETS:
        accuracy = (by_mode.get(mode) or {}).get("accuracy") or {}
        value = accuracy.get(key)
        checks.append({"mode": mode, "figure": key, "target": floor, "what": text, "value": value,
                       "met": None if value is None else value >= floor})
    return checks


def write_json(path: Path, report: Mapping[str, Any]) -> Path:
    return write_bytes_atomic(path, (json.dumps(report, indent=2, allow_nan=False) + "\n").encode())


# --------------------------------------------------------------------------- markdown

def _num(value: Any, digits: int = 1, scale: float = 1.0, suffix: str = "") -> str:
    if value is None:
        return "–"
    text = f"{value * scale:.{digits}f}"
    return (text[1:] if text.startswith("-") and float(text) == 0 else text) + suffix


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines + [""]


def _peak_mb(row: Mapping[str, Any]) -> float | None:
    """The table's memory figure: device memory for a row run on a GPU, else host memory."""
    memory = row["memory"] or {}
    device = memory.get("device_mb")
    return device if device is not None else memory.get("host_peak_rss_mb")


def _mode_cell(row: Mapping[str, Any]) -> str:
    return f"{row['label']}" + (" (reference)" if row["reference"] else "") + (" *" if row["emulated"] else "")


def markdown(report: Mapping[str, Any]) -> str:
    """The report as Markdown: summary, latency, accuracy, fusion, and what was not measured."""
    rows, config, env = report["rows"], report["config"], report["environment"]
    machine = env["machine"]
    lines = ["# MRFS benchmark", "",
             f"{report['created']} · {machine['cpu']} ({machine['cores']} cores) · {machine['os']}",
             f"· commit {env['commit'] or 'unknown'} · load average at start {machine['load_average']}", "",
             (f"Model `{config['checkpoint']}` at {config['input_size'][0]}×{config['input_size'][1]}; "
             f"{config['pairs']} pairs from `{config['data']}`"
             f"{'' if config['labelled'] else ' (no labels: ground-truth metrics skipped)'}; "
             f"{config['warmup']} warm-up + {config['runs']} timed runs per batch size; "
             f"{config['threads']} CPU threads for PyTorch and ONNX Runtime."),
             "Versions: " + ", ".join(f"{k} {v}" for k, v in env["versions"].items()), ""]
    lines += [speedup_line(report), ""]
    busy = busy_note(machine)
    if busy:
        lines += [f"> **Busy machine**: {busy}", ""]
    lines += ["## Summary", ""]
    lines += _table(
        ["mode", "backend · device", "file MB", "p50 ms", "fps", "end-to-end p50 ms", "peak MB", "mIoU %",
         "mIoU drop", "worst class Δ IoU", "agreement %", "fused PSNR vs ref dB", "fused SSIM vs ref"],
        [[_mode_cell(r), f"{r['backend']} · {r['device'] or '–'}", _num(r["file_size_bytes"], 1, 1e-6),
          _num((first_latency(r) or {}).get("p50_ms")), _num((first_latency(r) or {}).get("throughput_fps"), 2),
          _num((first_latency(r) or {}).get("end_to_end_p50_ms")),
          _num(_peak_mb(r), 0),
          _num((r["accuracy"] or {}).get("miou"), 2, 100), _num((r["accuracy"] or {}).get("miou_drop"), 2, 100),
          _worst_class_cell(r),
          _num((r["accuracy"] or {}).get("agreement"), 3, 100), _num((r["accuracy"] or {}).get("fused_psnr"), 1),
          _num((r["accuracy"] or {}).get("fused_ssim"), 4)] for r in rows])
    lines += ["\\* emulated: the target precision's numerics reproduced on ONNX Runtime, not measured on TensorRT.",
              "Latency at the smallest batch; p50 of model-only time, fps from its mean; end-to-end = pre + model + post of the runtime "
              "pipeline, one frame after another. Peak MB = resident memory added while loading and timing the mode "
              "(host; device memory for GPU rows). " + _reference_line(config)
              + " What each figure means: see *What the figures mean* below.", ""]
    lines += _largest_drops(rows)
    checks = report["summary"]["targets"]
    lines += ["## Targets", ""]
    lines += _table(["target", "value", "met"],
                    [[c["what"], _num(c["value"], 3 if c["figure"] == "agreement" else 1,
                                      100 if c["figure"] == "agreement" else 1),
                      "–" if c["met"] is None else ("yes" if c["met"] else "**no**")] for c in checks])
    lines += ["## Latency", ""]
    latency_rows = []
    for r in rows:
        for key, lat in (r["latency"] or {}).items():
            if lat is None:
                latency_rows.append([_mode_cell(r), key[1:]] + ["–"] * 9)
                continue
            latency_rows.append([_mode_cell(r), str(lat["batch"]), _num(lat["mean_ms"]), _num(lat["p50_ms"]),
                                 _num(lat["p90_ms"]), _num(lat["p99_ms"]), _num(lat["throughput_fps"], 2),
                                 _num(lat["preprocess_ms"]), _num(lat["postprocess_ms"]),
                                 _num(lat["end_to_end_p50_ms"]), _num(lat["end_to_end_fps"], 2)])
    lines += _table(["mode", "batch", "mean ms", "p50 ms", "p90 ms", "p99 ms", "model fps", "pre ms", "post ms",
                     "end-to-end p50 ms", "end-to-end fps"], latency_rows)
    lines += _per_class_section(rows)
    lines += _layers_section(rows)
    lines += cost_section(rows)
    lines += ["## Fusion quality (mean over pairs; Δ vs reference in brackets)", ""]
    lines += _table(["mode", *(FUSION_HEADERS.get(k, k) for k in FUSION_KEYS)],
                    [[_mode_cell(r)] + [f"{_num((r['fusion'] or {}).get(k), 3)} "
                                        f"({_num((r['fusion_delta'] or {}).get(k), 3)})" for k in FUSION_KEYS]
                     for r in rows])
    lines += ["## What the figures mean", ""] + [f"- **{name}**: {text}" for name, text in GLOSSARY] + [""]
    lines += _not_measured(rows)
    plots = report.get("plots") or {}
    if plots:
        lines += ["## Plots", ""]
        for name, (path, reason) in plots.items():
            lines += [f"{plot_caption(name)}:", "", f"![{name}]({path})", ""] if path else \
                [f"- {plot_caption(name)}: not drawn ({reason})", ""]
    return "\n".join(lines)


def _layers_section(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Where an engine's layers really run (what TensorRT chose, not what the build asked for)."""
    engines = [r for r in rows if r.get("layers")]
    if not engines:
        return []
    lines = ["## Engine layers (TensorRT's inspector)", ""]
    body = []
    for r in engines:
        layers = r["layers"]
        precision = layers.get("precision") or {}
        body.append([_mode_cell(r), str(layers.get("total", "–"))] +
                    [str(precision.get(k, 0)) for k in ("int8", "fp16", "fp32", "other")] +
                    [str(layers.get("gpu", 0)), str(layers.get("dla", 0))])
    return lines + _table(["mode", "layers", "INT8", "FP16", "FP32", "other", "on GPU", "on DLA"], body)


def cost_section(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Per mode: multiply-adds by precision, bytes per frame and the floor per Jetson (not measured)."""
    counted = [r for r in rows if (r.get("cost") or {}).get("known")]
    if not counted:
        return []
    body = []
    for r in counted:
        cost = r["cost"]
        gmacs = {p: sum(cost["gmacs"][kind][p] for kind in cost["gmacs"]) for p in ("int8", "fp16", "fp32")}
        floors = {f["jetson"]: f for f in cost["floor"]["jetsons"]}
        body.append([_mode_cell(r)] + [_num(gmacs[p], 2) for p in ("int8", "fp16", "fp32")] +
                    [_num(cost["weighted_int8_fraction"], 1, 100), _num(cost["activation_mb"], 0),
                     _num(cost["boundary_mb"], 0)] +
                    [f"{_num(floors[j.name]['floor_ms'])} ({floors[j.name]['bound']})" if j.name in floors else "–"
                     for j in JETSONS])
    header = ["mode", "GMACs INT8", "GMACs FP16", "GMACs FP32", "weighted INT8 %", "activation MB", "boundary MB",
              *(f"{j.name} floor ms" for j in JETSONS)]
    lines = [f"## Cost per frame and {FLOOR_LABEL}", ""] + _table(header, body)
    return lines + [
        "Counted on each mode's graph (an engine: the ONNX it was built from, at its precision). The floor per "
        "Jetson is max(compute, memory): compute = 2 × multiply-adds / the GPU's dense peak for each precision, "
        "memory = (boundary + weight bytes) / DRAM bandwidth; (compute) or (memory) says which term binds. GPU "
        "only (no DLA), dense peaks (NVIDIA's INT8 TOPS are sparse: halved), highest data-sheet power mode. "
        "Sources: " + "; ".join(f"{j.name}: {j.citation}" for j in JETSONS) + ".", ""]


def _reference_line(config: Mapping[str, Any]) -> str:
    """Against what agreement, PSNR/SSIM and the drops are measured (reports before it was chosen: PyTorch)."""
    missing = config.get("reference_missing")
    if missing:
        return f"Agreement, PSNR/SSIM and drops: not measured ({missing})."
    return f"Agreement, PSNR/SSIM and drops are against the reference: {config.get('reference_source') or REFERENCE}."


def _per_class_section(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    scored = [r for r in rows if (r["accuracy"] or {}).get("per_class_iou")]
    if not scored:
        return []
    classes = list(scored[0]["accuracy"]["per_class_iou"])
    lines = ["## Per-class IoU % (Δ vs reference in points)", ""]
    body = []
    for r in scored:
        acc = r["accuracy"]
        deltas = acc["per_class_iou_delta"] or {}     # none without a reference
        body.append([_mode_cell(r)] + [f"{_num(acc['per_class_iou'][c], 1, 100)} ({_num(deltas.get(c), 2, 100)})"
                                       for c in classes] + [_num(acc["pixel_accuracy"], 2, 100)])
    return lines + _table(["mode", *classes, "pixel acc %"], body)


def plot_caption(name: str) -> str:
    """What a plot shows, in a sentence fragment (``grid_<mode>``: that mode's disagreement grid)."""
    if name.startswith("grid_"):
        mode = name[len("grid_"):]
        label = MODES[mode].label if mode in MODES else mode
        return (f"{label}: the pairs it disagrees with the reference on most (and a day and a night pair); "
                "magenta = a pixel whose class differs from the reference's")
    return PLOT_CAPTIONS.get(name, name)


def busy_note(machine: Mapping[str, Any]) -> str | None:
    """Why this run's latencies are unreliable, when the machine was busy at the start; else None."""
    load = machine.get("load_average")
    if not load or load[0] < BUSY_LOAD:
        return None
    end = (machine.get("load_average_end") or ["?"])[0]
    return (f"load average {load[0]} at the start ({end} at the end) on {machine.get('cores', '?')} cores. Other "
            "processes compete for the cores, so latencies and speed-ups are inflated and noisy (eager PyTorch's "
            "thread pool suffers most from oversubscription); quote figures from an idle machine.")


def speedup_line(report: Mapping[str, Any]) -> str:
    """The headline speed-up, with the busy-machine warning in the same line wherever it is printed."""
    sp, threads = report["summary"]["speedup"], report["config"]["threads"]
    machine = report["environment"]["machine"]
    if sp["value"] is None:
        return f"ONNX Runtime FP32 vs PyTorch eager speed-up: not measured ({sp['reason']})."
    ratio = f"{sp['value']:.2f}× faster" if sp["value"] >= 1 else f"{1 / sp['value']:.2f}× slower ({sp['value']:.2f}×)"
    line = (f"**ONNX Runtime FP32 vs PyTorch eager: {ratio}** ({sp['basis']}, both in this "
            f"run, {threads} threads; target ≥ {sp['target']}×: {'met' if sp['met'] else 'NOT met'}).")
    if busy_note(machine):
        load = machine["load_average"][0]
        line += (f" **Warning: measured on a busy machine** (load average {load} on {machine.get('cores', '?')} "
                 "cores): this speed-up is unreliable.")
    return line


def console_summary(report: Mapping[str, Any]) -> str:
    """What the benchmark command prints: the speed-up (with any busy warning), summary table and targets."""
    text = markdown(report)
    start = text.index("**ONNX Runtime") if "**ONNX Runtime" in text else text.index("## Summary")
    return text[start:text.index("## Latency")].rstrip()


def worst_class_drop(row: Mapping[str, Any]) -> tuple[str, float] | None:
    """The class whose IoU fell most from the reference and the change (negative), or None if none fell."""
    deltas = (row.get("accuracy") or {}).get("per_class_iou_delta") or {}
    measured = [(name, value) for name, value in deltas.items() if value is not None]
    if not measured:
        return None
    name, value = min(measured, key=lambda item: item[1])
    return (name, value) if value < 0 else None


def _worst_class_cell(row: Mapping[str, Any]) -> str:
    if row.get("reference") or not (row.get("accuracy") or {}).get("per_class_iou_delta"):
        return "–"
    worst = worst_class_drop(row)
    return "none" if worst is None else f"{worst[0]} {_num(worst[1], 2, 100)}"


def _largest_drops(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """One line per mode that loses IoU on a class: the loss a mean hides."""
    lines = []
    for row in rows:
        worst = None if row.get("reference") else worst_class_drop(row)
        if worst is not None:
            drop = (row["accuracy"] or {}).get("miou_drop")
            lines.append(f"- **{row['label']}**: largest per-class drop **{worst[0]} {_num(worst[1], 2, 100)} IoU "
                         f"points**" + (f" (mIoU drop {_num(drop, 2, 100)} points)" if drop is not None else ""))
    return (lines + [""]) if lines else []


def describe_path(path: str) -> str:
    """A row's figure path in words: ``latency.b4`` → "latency at batch 4", ``fusion.SSIM`` → "fusion SSIM"."""
    if path in PATH_WORDS:
        return PATH_WORDS[path]
    parts = path.split(".")
    if parts[0] == "latency" and len(parts) == 2 and parts[1][1:].isdigit():
        return f"latency at batch {parts[1][1:]}"
    if parts[:2] == ["accuracy", "per_class_iou"] and len(parts) == 3:
        return f"IoU of {parts[2]}"
    if parts[:2] == ["accuracy", "per_class_iou_delta"] and len(parts) == 3:
        return f"IoU change of {parts[2]}"
    if parts[0] in ("fusion", "fusion_delta") and len(parts) == 2:
        return f"{'fusion' if parts[0] == 'fusion' else 'change from the reference of fusion'} " \
               f"{FUSION_HEADERS.get(parts[1], parts[1])}"
    if parts[0] == "latency":
        return f"latency at batch {parts[1][1:]}: {parts[-1].replace('_', ' ')}"
    return parts[-1].replace("_", " ")


def _not_measured(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """What is missing, in words, grouped by why: a whole row as "nothing measured", else the figures' names."""
    grouped: dict[str, dict[str, list[str]]] = {}
    for row in rows:
        paths = list(null_paths(row))
        if set(FIGURE_GROUPS) <= set(paths):
            reason = reason_for(row, FIGURE_GROUPS[0]) or "no reason recorded"
            grouped.setdefault(reason, {})[row["label"]] = ["nothing measured"]
            continue
        for path in paths:
            reason = reason_for(row, path) or "no reason recorded"
            words = grouped.setdefault(reason, {}).setdefault(row["label"], [])
            if describe_path(path) not in words:
                words.append(describe_path(path))
    if not grouped:
        return []
    lines = ["## Not measured", ""]
    for reason, modes in grouped.items():
        lines.append(f"- {reason}: " + "; ".join(f"**{label}**: {', '.join(words)}" for label, words in modes.items()))
    return lines + [""]


def write_markdown(path: Path, report: Mapping[str, Any]) -> Path:
    return write_bytes_atomic(path, markdown(report).encode())


__all__ = ["SCHEMA", "busy_note", "console_summary", "cost_section", "describe_path", "empty_row", "first_latency",
           "make_finite", "markdown", "mode_cost", "null_paths", "reason_for", "speedup", "speedup_line",
           "target_checks", "worst_class_drop", "write_json", "write_markdown"]
