"""FP32 ONNX → calibrated, mixed-precision Q/DQ ONNX with a measured accuracy summary.

Runs entirely on the CPU through ONNX Runtime, so a laptop without TensorRT produces the same
INT8 artefacts (Q/DQ model, range table, summary) that the target turns into an engine; the
summary's figures come from running the Q/DQ model on held-out pairs.

Phases, each timed and its peak memory recorded (summary ``phases``): ``ranges`` (streamed
activation statistics, :mod:`.ranges`; the first convolutions shifted onto the frames' 8-bit
grid, :mod:`.input_grid`; the fusion head's concat branches balanced for one scale, :mod:`.branches`), ``qdq`` (Q/DQ placed where TensorRT fuses it, :func:`.qdq.build_qdq`),
``sensitivity`` (the fully quantised graph scored on calibration pairs, and per block when it
misses the budget), ``selection`` (the mixed-precision choice, only then), ``qdq_model`` (the
graph written and checked against TensorRT's rules), ``held_out`` (the written graph against
FP32 on labelled held-out pairs).
"""
from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import onnx

from mrfs_edge.backends.onnxruntime_runner import read_onnx_contract
from mrfs_edge.calibration.branches import balance_concat_branches, concat_convs, concat_inputs
from mrfs_edge.calibration.dataset import CalibrationSet
from mrfs_edge.calibration.input_grid import grid_inputs, shift_onto_grid
from mrfs_edge.calibration.options import Budget, Quantizer
from mrfs_edge.calibration.phases import PhaseLog
from mrfs_edge.calibration.qdq import (
    build_qdq,
    modelopt_available,
    qdq_tensors,
    quantize_modelopt,
    quantized_nodes,
    save_with_metadata,
    strip_qdq,
    trt_rule_violations,
    weighted_nodes,
)
from mrfs_edge.calibration.ranges import RangeMethod, collect_ranges
from mrfs_edge.calibration.sensitivity import (
    MixedPrecisionResult,
    QuantEvaluator,
    group_sensitivity,
    scoring_session,
    select_mixed_precision,
)
from mrfs_edge.core.contract import ModelContract
from mrfs_edge.core.errors import ExportError
from mrfs_edge.core.files import atomic_path, write_json_atomic
from mrfs_edge.core.log import plural, progress
from mrfs_edge.io.pairs import PairFolder
from mrfs_edge.metrics.agreement import AgreementScore
from mrfs_edge.metrics.cost import node_macs
from mrfs_edge.metrics.segmentation import SegmentationScore
from mrfs_edge.processing.postprocess import restore_frame
from mrfs_edge.processing.preprocess import fit_to_model
from mrfs_edge.processing.thermal import ThermalAGC

LOG = logging.getLogger(__name__)

@dataclass
class CalibrationConfig:
    count: int = 16
    method: RangeMethod = "percentile"   # percentile: 99.999 %
    quantizer: Quantizer = "auto"
    mixed_precision: bool = True
    sensitivity_pairs: int = 4
    quantize_attention: bool = False     # INT8 for the attention products q·kᵀ and attn·v too
    budget: Budget = field(default_factory=Budget)
    threads: int = 0                     # ONNX Runtime intra-op threads (0: its default); speed only


@dataclass
class CalibrationArtifacts:
    qdq_onnx: Path
    range_table: Path
    summary_json: Path
    summary: dict[str, Any]


def resolve_quantizer(quantizer: Quantizer) -> Literal["modelopt", "builtin"]:
    """``auto`` → ModelOpt's ONNX PTQ when it imports, else the toolkit's own Q/DQ."""
    if quantizer == "auto":
        return "modelopt" if modelopt_available() else "builtin"
    return quantizer


def held_out_agreement(fp32: Path, variant: Path, folder: PairFolder | None, contract: ModelContract,
                       label: str, threads: int = 0) -> dict[str, Any] | None:
    """Run ``variant`` and the FP32 model on every pair of ``folder``: agreement, fused PSNR/SSIM, mIoU.

    Used for the Q/DQ model here and for the emulated FP16 graph by the engine builder, so the
    figures a summary prints for either precision come from the same comparison. Pairs are read
    and scored one at a time (two sessions, one pair's outputs alive). Where the pairs have
    labels, both models' mIoU (each frame's class map at the label's size, as the runtime
    restores it) and the drop in points are added.
    """
    if folder is None:
        return None
    reference, test = scoring_session(fp32, threads), scoring_session(variant, threads)
    outputs = list(contract.output_names)
    agreement = AgreementScore()
    labelled = folder.has_labels
    scores = {name: SegmentationScore(contract.num_classes) for name in ("fp32", "test")} if labelled else {}
    thermal = ThermalAGC(smoothing=0.0)   # each frame on its own, as calibration sets are read
    for pair in progress(folder, desc="held-out", unit="pair", leave=False):
        feed, fit = fit_to_model(pair.visible, thermal(pair.infrared), contract)
        (ref_seg, ref_fused), (seg, fused) = reference.run(outputs, feed), test.run(outputs, feed)
        agreement.update(ref_seg[0], seg[0], ref_fused[0], fused[0])
        for name, (s, f) in (("fp32", (ref_seg, ref_fused)), ("test", (seg, fused))):
            if name in scores:
                scores[name].update(pair.label, restore_frame(s[0], f[0], fit, contract.uint8_io).labels)
    figures: dict[str, Any] = {"pairs": agreement.pairs, "split": str(folder.root), **agreement.as_dict()}
    miou = ""
    if scores:
        figures.update({"miou_fp32": scores["fp32"].miou, "miou": scores["test"].miou,
                        "miou_drop": 100 * (scores["fp32"].miou - scores["test"].miou)})
        miou = (f", mIoU {100 * figures['miou']:.2f}% vs FP32 {100 * figures['miou_fp32']:.2f}% "
                f"(drop {figures['miou_drop']:.2f} points)")
    LOG.info(f"held-out ({agreement.pairs} pairs): {label} vs FP32 pixel agreement {100 * agreement.pixel_agreement:.2f}%, "
             f"fused PSNR {agreement.fused_psnr:.1f} dB, SSIM {agreement.fused_ssim:.4f}{miou}")
    return figures


def _mac_shares(qdq: onnx.ModelProto, macs: dict[str, int], layers: list[str]) -> dict[str, float]:
    """INT8 share of the weighted layers' multiply-adds (the budget's) and of all of them."""
    int8 = set(quantized_nodes(qdq))
    weighted = sum(macs.get(n, 0) for n in layers)
    return {"int8_weighted_mac_fraction": sum(macs.get(n, 0) for n in layers if n in int8) / max(weighted, 1),
            "int8_mac_fraction": sum(m for n, m in macs.items() if n in int8) / max(sum(macs.values()), 1),
            "weighted_gmacs": weighted / 1e9, "total_gmacs": sum(macs.values()) / 1e9}


def calibrate(fp32_onnx: Path, out_dir: Path, calib_folder: PairFolder, config: CalibrationConfig,
              eval_folder: PairFolder | None = None) -> CalibrationArtifacts:
    """Calibrate, quantise, fall back to mixed precision if needed, write and verify the Q/DQ model."""
    phases = PhaseLog()
    out_dir.mkdir(parents=True, exist_ok=True)
    contract = read_onnx_contract(fp32_onnx)
    stem = fp32_onnx.stem
    quantizer = resolve_quantizer(config.quantizer)
    calibration = CalibrationSet.from_folder(calib_folder, config.count, contract)
    LOG.info(f"calibration set: {len(calibration)} pairs from {calib_folder.root} ({', '.join(calibration.names)})")
    table = out_dir / f"{stem}.calib-{config.method}.json"
    fp32 = onnx.load(str(fp32_onnx))
    layers = weighted_nodes(fp32)
    with phases("ranges"):
        # The first convolutions read the frames' 8-bit grid exactly (an exact shift, its range fixed).
        grid = grid_inputs(fp32, calibration, config.threads)
        shifted, grid_ranges = shift_onto_grid(fp32, grid)
        tensors = qdq_tensors(shifted, quantize_attention=config.quantize_attention)
        # The fusion head's CNN_fuse reads raw images beside upsampled features through one Concat, so one
        # INT8 scale: its branches are balanced first (exact), which needs each branch's range too.
        fuse = [n for n in concat_convs(fp32) if "CNN_fuse" in n]
        branches = [t for t in concat_inputs(fp32, fuse) if t not in set(tensors)]
        LOG.info(f"calibrating {len(tensors)} activations ({config.method}) of {len(layers)} Conv/MatMul/Gemm layers"
                 f"{' and the attention products' if config.quantize_attention else ''} ...")
        calibrated = [t for t in tensors + branches if t not in grid_ranges]
        ranges = {**collect_ranges(shifted, calibration, config.method, calibrated, threads=config.threads),
                  **grid_ranges}
        balanced, ranges = balance_concat_branches(shifted, ranges, fuse)
        del shifted
        write_json_atomic(table, {"method": config.method, "pairs": calibration.names, "balanced_convs": fuse,
                                  "grid_inputs": grid, "amax": {t: ranges[t] for t in tensors}})
    with phases("qdq"):
        full = build_qdq(balanced, ranges, quantize_attention=config.quantize_attention)
        del balanced
    macs = node_macs(fp32)
    weighted_macs = {n: macs.get(n, 0) for n in layers}
    selection: MixedPrecisionResult | None = None
    with phases("sensitivity"):
        feeds = [calibration.feed(i) for i in range(min(config.sensitivity_pairs, len(calibration)))]
        evaluator = QuantEvaluator(full, feeds, threads=config.threads)
        full_score = evaluator.score(set(evaluator.groups))
        search = config.mixed_precision and not config.budget.met(full_score.pixel_agreement, full_score.fused_psnr,
                                                                  margin=True)
        groups = []
        if search:
            LOG.info(f"every layer in INT8 misses the budget on {len(feeds)} calibration pairs (agreement "
                     f"{100 * full_score.pixel_agreement:.2f}%, PSNR {full_score.fused_psnr:.1f} dB): "
                     f"measuring the {plural(len(evaluator.groups), 'block')} one at a time")
            groups = group_sensitivity(evaluator, config.budget, weighted_macs,
                                       progress=lambda items: progress(list(items), desc="sensitivity",
                                                                       unit="group", leave=False))
        elif config.mixed_precision:
            LOG.info(f"every layer in INT8 meets the budget with margin on {len(feeds)} calibration pairs "
                     f"(agreement {100 * full_score.pixel_agreement:.2f}%, PSNR {full_score.fused_psnr:.1f} dB): "
                     "no block needs higher precision, sensitivity analysis skipped")
    if search:
        with phases("selection"), progress(desc="selection", unit="variant", leave=False) as bar:
            selection = select_mixed_precision(evaluator, config.budget, groups, sum(weighted_macs.values()),
                                               tick=bar.update)
        LOG.info(f"mixed precision: {plural(len(selection.kept_high), 'block')} kept high "
                 f"({', '.join(selection.kept_high) or 'none'}); "
                 f"{100 * selection.int8_mac_fraction:.1f}% of the weighted MACs in INT8")
    quantised = set(evaluator.groups) if selection is None else set(selection.quantized_groups)
    keep = {n for g in quantised for n in evaluator.groups[g]}
    kept_high = sorted(set(evaluator.groups) - quantised)
    del evaluator, feeds
    with atomic_path(out_dir / f"{stem}.int8.onnx") as qdq_path:
        with phases("qdq_model"):
            if quantizer == "modelopt":
                quantize_modelopt(fp32_onnx, qdq_path, calibration, config.method,
                                  [n for n in layers if n not in keep])
                qdq = onnx.load(str(qdq_path))
            else:
                qdq = full if not kept_high else strip_qdq(full, keep)
            del full
            violations = trt_rule_violations(qdq)
            if violations:
                raise ExportError(f"{qdq_path}: Q/DQ graph breaks TensorRT's rules: {violations[0]} "
                                  f"(+{len(violations) - 1} more)")
            shares = _mac_shares(qdq, macs, layers)
            metadata = {p.key: p.value for p in fp32.metadata_props}
            del fp32
            calibration_record = {"method": config.method, "pairs": len(calibration), "names": calibration.names,
                                  "folder": str(calib_folder.root), "sha256": calibration.fingerprint(),
                                  "range_table": str(table)}
            metadata["mrfs_edge.quantization"] = json.dumps({
                "quantizer": quantizer, "quantize_attention": config.quantize_attention, **shares,
                "kept_high_precision": kept_high, "calibration": calibration_record})
            save_with_metadata(qdq, metadata, qdq_path)
            int8_layers = len(set(quantized_nodes(qdq)) & set(layers))
            del qdq
        with phases("held_out"):
            held_out = held_out_agreement(fp32_onnx, qdq_path, eval_folder, contract, "INT8", config.threads)
    budget = config.budget
    held = held_out or {}
    budget_met = (bool(held) and budget.met(held["pixel_agreement"], held["fused_psnr"])
                  and budget.miou_met(held.get("miou_drop"))
                  and shares["int8_weighted_mac_fraction"] >= budget.min_int8_mac_fraction)
    summary = {
        "fp32_onnx": str(fp32_onnx), "qdq_onnx": str(out_dir / f"{stem}.int8.onnx"), "quantizer": quantizer,
        "quantize_attention": config.quantize_attention, "calibration": calibration_record,
        "budget": asdict(budget), "budget_met": budget_met,
        "int8_layers": int8_layers, "weighted_layers": len(layers), **shares,
        "kept_high_precision": kept_high, "grid_inputs": grid,
        "calibration_pairs_check": {"pairs": full_score.pairs,
                                    "agreement": selection.agreement if selection else full_score.pixel_agreement,
                                    "fused_psnr": selection.psnr if selection else full_score.fused_psnr},
        "held_out": held_out,
        "sensitivity": [{"group": g.name, "layers": len(g.nodes), "gmacs": g.macs / 1e9,
                         "agreement": g.agreement, "fused_psnr": g.psnr, "damage": g.damage} for g in groups],
        "selection_steps": selection.steps if selection else [],
        **phases.summary(),
    }
    summary_path = write_json_atomic(out_dir / f"{stem}.int8.summary.json", summary)
    LOG.info(f"wrote {out_dir / f'{stem}.int8.onnx'} ({int8_layers}/{len(layers)} layers INT8, "
             f"{100 * shares['int8_weighted_mac_fraction']:.1f}% of the weighted MACs, "
             f"{100 * shares['int8_mac_fraction']:.1f}% of all), range table {table}, summary {summary_path}; "
             f"{summary['seconds']:.0f} s, peak memory {summary['peak_rss_mb'] / 1024:.2f} GB")
    return CalibrationArtifacts(out_dir / f"{stem}.int8.onnx", table, summary_path, summary)
