"""The benchmark harness behind ``benchmarks/run.py``.

Rows are modes (PyTorch FP32 eager as the reference, ONNX Runtime FP32 / emulated FP16 / INT8
Q/DQ, TensorRT engines where present); each gets latency, memory, accuracy against ground truth
and against the reference, and fusion quality, in ``report.json``, ``report.md`` and plots.
The engine rows need only the core install and TensorRT (a Jetson): without PyTorch the
reference is the FP32 ONNX in ONNX Runtime or saved outputs (:mod:`.reference`); the PyTorch
row, exports, calibration and plots load PyTorch, onnx and matplotlib (the ``export`` extra)
only when they run.
"""
from mrfs_edge.bench.compare import compare_files, compare_reports
from mrfs_edge.bench.harness import BenchConfig, BenchResult, run_benchmark
from mrfs_edge.bench.modes import MODES, REFERENCE

__all__ = ["BenchConfig", "BenchResult", "run_benchmark", "compare_files", "compare_reports", "MODES", "REFERENCE"]
