"""FP32 ONNX → calibrated, mixed-precision Q/DQ ONNX with a measured accuracy summary.

Runs entirely on the CPU through ONNX Runtime, so a laptop without TensorRT produces the same
INT8 artefacts (Q/DQ model, range table, sensitivity table, summary) that the target turns
into an engine; the summary's figures come from running the Q/DQ model on held-out pairs.
"""
from __future__ import annotations

import json
import logging
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import onnx

from mrfs_edge.backends.onnxruntime_runner import read_onnx_contract
from mrfs_edge.calibration.dataset import CalibrationSet
from mrfs_edge.calibration.qdq import (
    modelopt_available,
    quantize_modelopt,
    quantize_ort,
    quantized_nodes,
    save_with_metadata,
    strip_qdq,
    trt_rule_violations,
    weighted_nodes,
)
from mrfs_edge.calibration.sensitivity import (
    Budget,
    QuantEvaluator,
    group_sensitivity,
    node_macs,
    select_mixed_precision,
)
from mrfs_edge.core.contract import ModelContract
from mrfs_edge.core.errors import ExportError
from mrfs_edge.core.files import atomic_path, write_json_atomic
from mrfs_edge.core.log import plural, progress
from mrfs_edge.io.pairs import PairFolder

LOG = logging.getLogger(__name__)


@dataclass
class CalibrationConfig:
    count: int = 16
    method: Literal["percentile", "entropy", "max"] = "percentile"   # percentile: 99.999 %
    quantizer: Literal["auto", "modelopt", "ort"] = "auto"          # auto: ModelOpt if installed, else ort
    mixed_precision: bool = True
    sensitivity_pairs: int = 4
    budget: Budget = field(default_factory=Budget)


@dataclass
class CalibrationArtifacts:
    qdq_onnx: Path
    range_table: Path
    summary_json: Path
    summary: dict[str, Any]


def _feeds(folder: PairFolder, contract: ModelContract, count: int) -> list[dict]:
    return list(CalibrationSet.from_folder(folder, count, contract))


def held_out_agreement(fp32: onnx.ModelProto, variant: onnx.ModelProto, folder: PairFolder | None,
                       contract: ModelContract, label: str) -> dict[str, Any] | None:
    """Run ``variant`` and the FP32 model on every pair of ``folder``; agreement and fused PSNR/SSIM.

    Used for the Q/DQ model here and for the emulated FP16 graph by the engine builder, so the
    figures a summary prints for either precision come from the same comparison.
    """
    if folder is None:
        return None
    feeds = _feeds(folder, contract, len(folder))
    score = QuantEvaluator(fp32, feeds).score(variant)
    figures = {"pairs": len(feeds), "split": str(folder.root), **score.as_dict()}
    LOG.info(f"held-out ({len(feeds)} pairs): {label} vs FP32 pixel agreement {100 * score.pixel_agreement:.2f}%, "
             f"fused PSNR {score.fused_psnr:.1f} dB, SSIM {score.fused_ssim:.4f}")
    return figures


def calibrate(fp32_onnx: Path, out_dir: Path, calib_folder: PairFolder, config: CalibrationConfig,
              eval_folder: PairFolder | None = None) -> CalibrationArtifacts:
    """Calibrate, analyse sensitivity, choose mixed precision, write and verify the Q/DQ model."""
    started = time.perf_counter()
    phases: dict[str, float] = {}
    clock = [started]

    def phase(name: str) -> None:
        now = time.perf_counter()
        phases[name] = round(now - clock[0], 1)
        clock[0] = now

    out_dir.mkdir(parents=True, exist_ok=True)
    contract = read_onnx_contract(fp32_onnx)
    stem = fp32_onnx.stem
    calibration = CalibrationSet.from_folder(calib_folder, config.count, contract)
    LOG.info(f"calibration set: {len(calibration)} pairs from {calib_folder.root} ({', '.join(calibration.names)})")
    table = out_dir / f"{stem}.calib-{config.method}.json"
    fp32 = onnx.load(str(fp32_onnx))
    candidates = weighted_nodes(fp32)
    LOG.info(f"calibrating ({config.method}) and quantising {len(candidates)} Conv/MatMul/Gemm layers ...")
    table.unlink(missing_ok=True)   # a table left by an earlier run may come from other pairs
    # The fully quantised graph is only a starting point held in memory: it is written to a private
    # temporary folder, removed on every way out (a signal included), never beside the outputs.
    with tempfile.TemporaryDirectory(prefix=f".{stem}.calibrating.", dir=out_dir) as scratch:
        try:
            quantize_ort(fp32_onnx, Path(scratch) / f"{stem}.int8-all.onnx", calibration, config.method, table,
                         candidates)
        except BaseException:
            table.unlink(missing_ok=True)   # a half-written range table must not be read as a finished one
            raise
        full = onnx.load(str(Path(scratch) / f"{stem}.int8-all.onnx"))
    phase("calibrate")
    macs = node_macs(fp32)
    total_macs = sum(macs.values())
    evaluator = QuantEvaluator(fp32, [calibration.feed(i) for i in range(min(config.sensitivity_pairs, len(calibration)))])
    full_score = evaluator.score(full)
    if config.mixed_precision and not config.budget.met(full_score.pixel_agreement, full_score.fused_psnr, margin=True):
        groups = group_sensitivity(full, evaluator, config.budget, candidates, macs,
                                   progress=lambda items: progress(list(items), desc="sensitivity", unit="group",
                                                                   leave=False))
        with progress(desc="selection", unit="variant", leave=False) as bar:
            selection = select_mixed_precision(full, evaluator, config.budget, groups, macs, tick=bar.update)
        keep = set(selection.quantized_nodes)
        LOG.info(f"mixed precision: {plural(len(selection.kept_high), 'group')} kept high "
                 f"({', '.join(selection.kept_high) or 'none'}); {100 * selection.int8_mac_fraction:.1f}% of MACs in INT8")
    else:
        groups, selection, keep = [], None, set(candidates)
        if config.mixed_precision:
            LOG.info(f"every weighted layer in INT8 meets the budget with margin on {len(evaluator.feeds)} calibration "
                     f"pairs (agreement {100 * full_score.pixel_agreement:.2f}%, PSNR {full_score.fused_psnr:.1f} dB): "
                     "no layer needs higher precision, sensitivity analysis skipped")
    phase("sensitivity_and_selection")
    quantizer = config.quantizer
    if quantizer == "auto":
        quantizer = "modelopt" if modelopt_available() else "ort"
    with atomic_path(out_dir / f"{stem}.int8.onnx") as qdq_path:
        if quantizer == "modelopt":
            quantize_modelopt(fp32_onnx, qdq_path, calibration, config.method, [n for n in candidates if n not in keep])
            qdq = onnx.load(str(qdq_path))
        else:
            qdq = strip_qdq(full, keep)
        violations = trt_rule_violations(qdq)
        if violations:
            raise ExportError(f"{qdq_path}: Q/DQ graph breaks TensorRT's rules: {violations[0]} "
                              f"(+{len(violations) - 1} more)")
        int8_nodes = quantized_nodes(qdq)
        int8_fraction = sum(macs.get(n, 0) for n in int8_nodes) / max(total_macs, 1)
        phase("qdq_model")
        held_out = held_out_agreement(fp32, qdq, eval_folder, contract, "INT8")
        phase("held_out_check")
        summary = {
            "fp32_onnx": str(fp32_onnx), "qdq_onnx": str(out_dir / f"{stem}.int8.onnx"), "quantizer": quantizer,
            "calibration": {"method": config.method, "pairs": len(calibration), "names": calibration.names,
                            "folder": str(calib_folder.root), "sha256": calibration.fingerprint(),
                            "range_table": str(table)},
            "budget": asdict(config.budget),
            "int8_layers": len(int8_nodes), "weighted_layers": len(candidates),
            "int8_mac_fraction": int8_fraction, "total_gmacs": total_macs / 1e9,
            "kept_high_precision": selection.kept_high if selection else [],
            "calibration_pairs_check": ({"agreement": selection.agreement, "fused_psnr": selection.psnr}
                                        if selection else {"agreement": full_score.pixel_agreement,
                                                           "fused_psnr": full_score.fused_psnr}),
            "held_out": held_out,
            "sensitivity": [{"group": g.name, "layers": len(g.nodes), "gmacs": g.macs / 1e9,
                             "agreement": g.agreement, "fused_psnr": g.psnr, "damage": g.damage} for g in groups],
            "selection_steps": selection.steps if selection else [],
            "seconds": round(time.perf_counter() - started, 1), "phase_seconds": phases,
        }
        held = held_out or {}
        summary["budget_met"] = bool(held) and config.budget.met(held.get("pixel_agreement", 0.0),
                                                                  held.get("fused_psnr", 0.0)) \
            and int8_fraction >= config.budget.min_int8_mac_fraction
        metadata = {p.key: p.value for p in fp32.metadata_props}
        metadata["mrfs_edge.quantization"] = json.dumps({**{k: summary[k] for k in (  # dict | dict is 3.9+
            "quantizer", "int8_mac_fraction", "kept_high_precision")}, "calibration": summary["calibration"]})
        save_with_metadata(qdq, metadata, qdq_path)
    summary_path = write_json_atomic(out_dir / f"{stem}.int8.summary.json", summary)
    LOG.info(f"wrote {out_dir / f'{stem}.int8.onnx'} ({len(int8_nodes)}/{len(candidates)} layers INT8, "
             f"{100 * int8_fraction:.1f}% of MACs), range table {table}, summary {summary_path}")
    return CalibrationArtifacts(out_dir / f"{stem}.int8.onnx", table, summary_path, summary)
