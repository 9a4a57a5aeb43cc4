"""TensorRT engines: build from ONNX (with a sidecar), check where they may run.

Importing this package never imports TensorRT or CUDA libraries; they load inside the
functions that need them, so machines without a GPU can still read sidecars.
"""
from .builder import EngineBuildConfig, build_engine, machine_info, tensorrt_status
from .inspector import layers_path, summary_line
from .sidecar import (CalibrationInfo, EngineSidecar, Machine, check_engine_compatible, read_sidecar,
                      sidecar_path, write_sidecar)
from .trt_compat import TrtApi, parse_version

__all__ = ["EngineBuildConfig", "build_engine", "machine_info", "tensorrt_status", "CalibrationInfo",
           "EngineSidecar", "Machine", "check_engine_compatible", "read_sidecar", "sidecar_path",
           "write_sidecar", "TrtApi", "parse_version", "layers_path", "summary_line"]
