"""The time below which no engine can run a graph on a Jetson: a roofline floor, not a measurement.

A frame needs its multiply-adds done and its bytes moved. On one module the GPU's tensor
cores do at most ``int8_tops`` dense INT8 operations per second (a multiply-add is two), at most
``fp16_tflops`` dense FP16 ones, and its CUDA cores ``fp32_tflops`` FP32 ones (TensorRT's TF32 is
off by default in this toolkit, ``--tf32``); its DRAM moves at most ``bandwidth_gbs``. So

    compute = 2·MACs_int8 / int8 rate + 2·MACs_fp16 / fp16 rate + 2·MACs_fp32 / fp32 rate
    memory  = (boundary bytes + weight bytes) / bandwidth          (``metrics.cost.PrecisionSplit``)
    floor   = max(compute, memory)

The compute term is a hard floor for the graph's precisions; the memory term assumes an engine
that fuses every op other than the matrix ops into them (each matrix op reads its inputs and
writes its output once through DRAM, weights read once). Real engines reach neither peak: the
floor says how far a measurement is from what the silicon allows, and what a precision change
can buy at most. GPU only: a TensorRT engine runs on the GPU unless built for DLA, so the DLA
share of NVIDIA's headline TOPS is left out. The rates are NVIDIA's published figures for each
module's highest power mode in its data sheet (JetPack 5/6.0 modes; JetPack 6.2's MAXN SUPER
on Orin Nano/NX raises clocks and bandwidth, which lowers these floors). NVIDIA publishes INT8
TOPS with 2:4 structured sparsity; dense is half of it, and these weights are dense.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from mrfs_edge.metrics.cost import KINDS, PRECISIONS, PrecisionSplit

FLOOR_LABEL = "floor (not a measurement)"
UNKNOWN_COST = "cost unknown (exported without cost metadata)"


@dataclass(frozen=True)
class Jetson:
    """One module's GPU peaks (dense) and DRAM bandwidth, with where each figure comes from."""

    name: str
    int8_tops: float       # dense INT8 tensor-core TOPS (NVIDIA's sparse figure / 2)
    fp16_tflops: float     # dense FP16 tensor-core TFLOPS (half the dense INT8 rate on Ampere)
    fp32_tflops: float     # CUDA cores × 2 × GPU clock
    bandwidth_gbs: float   # DRAM GB/s
    citation: str


# Ampere tensor cores run dense FP16 at half their dense INT8 rate (NVIDIA A100 data sheet:
# 624 INT8 TOPS, 312 FP16 TFLOPS dense); Orin's GPU is Ampere (sm_87).
_AMPERE_FP16 = "FP16 = dense INT8 / 2 (Ampere tensor cores; NVIDIA A100 data sheet 624 INT8 TOPS vs 312 FP16 TFLOPS dense)"

JETSONS: tuple[Jetson, ...] = (
    Jetson("Orin Nano 8GB", 20.0, 10.0, 1024 * 2 * 0.625e9 / 1e12, 68.0,
           "NVIDIA Jetson Orin Nano Series Data Sheet (DS-11105-001): 'Jetson Orin Nano 8GB: Up to 40 (Sparse) "
           "INT8 TOPs and 20 (Dense) INT8 TOPs', GPU only (no DLA), 1024 CUDA cores / 32 tensor cores at 625 MHz; "
           "128-bit LPDDR5 68 GB/s; " + _AMPERE_FP16),
    Jetson("Orin NX 16GB", 30.0, 15.0, 1024 * 2 * 0.918e9 / 1e12, 102.4,
           "NVIDIA Jetson Orin NX Series Data Sheet (DS-10712-001): 100 sparse INT8 TOPS for GPU + 2 DLA, "
           "1024 CUDA cores / 32 tensor cores at 918 MHz, 128-bit LPDDR5 102.4 GB/s; GPU share 100 - 40 (DLA "
           "maximum, github.com/NVIDIA/Deep-Learning-Accelerator-SW README: 'maximum DLA TOPs on Jetson Orin NX "
           "16GB are comparable to the 15W power mode on Jetson AGX Orin 64GB', 40 TOPs) = 60 sparse, 30 dense "
           "(= Orin Nano 8GB's 40 x 918/625 MHz); " + _AMPERE_FP16),
    Jetson("AGX Orin 64GB", 85.5, 42.75, 2048 * 2 * 1.3e9 / 1e12, 204.8,
           "github.com/NVIDIA/Deep-Learning-Accelerator-SW README: AGX Orin 64GB MAXN 'GPU sparse INT8 peak DL "
           "performance 171 TOPs' (+105 DLA = 275 TOPS); NVIDIA Jetson AGX Orin Series Technical Brief: 2048 CUDA "
           "cores, 64 tensor cores, 5.3 FP32 TFLOPS at 1.3 GHz, 256-bit LPDDR5 204.8 GB/s; " + _AMPERE_FP16),
)

_RATES = {"int8": "int8_tops", "fp16": "fp16_tflops", "fp32": "fp32_tflops"}


@dataclass(frozen=True)
class Floor:
    jetson: str
    compute_ms: float
    memory_ms: float

    @property
    def floor_ms(self) -> float:
        return max(self.compute_ms, self.memory_ms)

    @property
    def bound(self) -> Literal["compute", "memory"]:
        return "compute" if self.compute_ms >= self.memory_ms else "memory"


def floor(split: PrecisionSplit, jetson: Jetson) -> Floor:
    """``split``'s roofline floor on ``jetson`` (see the module docstring for the model)."""
    compute_s = sum(2 * split.gmacs(None, precision) * 1e9 / (getattr(jetson, rate) * 1e12)
                    for precision, rate in _RATES.items())
    memory_s = (split.boundary_bytes + split.weight_bytes) / (jetson.bandwidth_gbs * 1e9)
    return Floor(jetson.name, 1e3 * compute_s, 1e3 * memory_s)


def floors(split: PrecisionSplit) -> list[Floor]:
    return [floor(split, jetson) for jetson in JETSONS]


def cost_line(split: PrecisionSplit | None) -> str:
    """One line for a build summary: GMACs per precision, INT8 share, bytes per frame."""
    if split is None:
        return UNKNOWN_COST
    g = {p: split.gmacs(None, p) for p in PRECISIONS}
    return (f"{split.total_gmacs:.2f} GMACs per frame: INT8 {g['int8']:.2f} / FP16 {g['fp16']:.2f} / "
            f"FP32 {g['fp32']:.2f} ({100 * split.weighted_int8_fraction:.1f}% of weighted MACs in INT8); "
            f"activations {split.activation_bytes / 1e6:.0f} MB as written, "
            f"{split.boundary_bytes / 1e6:.0f} MB at matrix-op boundaries, weights {split.weight_bytes / 1e6:.1f} MB")


def floor_line(split: PrecisionSplit | None) -> str:
    """One line: the floor per Jetson, labelled as a floor."""
    if split is None:
        return UNKNOWN_COST
    parts = [f"{f.jetson} {f.floor_ms:.1f} ms ({f.bound})" for f in floors(split)]
    return f"{FLOOR_LABEL}: " + ", ".join(parts)


def summary_lines(split: PrecisionSplit | None) -> list[str]:
    """The build summary's cost lines (one when the cost is unknown)."""
    return [cost_line(split)] if split is None else [cost_line(split), floor_line(split)]


def cost_record(split: PrecisionSplit | None) -> dict[str, object]:
    """The figures for a JSON summary: GMACs per kind and precision, bytes, and the floors."""
    if split is None:
        return {"known": False, "reason": UNKNOWN_COST}
    return {"known": True,
            "gmacs": {kind: {p: split.gmacs(kind, p) for p in PRECISIONS} for kind in KINDS},
            "total_gmacs": split.total_gmacs, "weighted_int8_fraction": split.weighted_int8_fraction,
            "int8_fraction": split.int8_fraction,
            "activation_mb": split.activation_bytes / 1e6, "boundary_mb": split.boundary_bytes / 1e6,
            "weight_mb": split.weight_bytes / 1e6, "unresolved_nodes": split.unresolved,
            "floor": {"label": FLOOR_LABEL,
                      "jetsons": [{"jetson": f.jetson, "floor_ms": f.floor_ms, "compute_ms": f.compute_ms,
                                   "memory_ms": f.memory_ms, "bound": f.bound} for f in floors(split)]}}
