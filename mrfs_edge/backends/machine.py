"""What this machine can build and run: its TensorRT release and GPU, probed without side effects.

The engine builder stamps engines with it and the TensorRT runner checks an engine against it, so
the probe lives below both (the builder is a deployment step; the runner must import on a Jetson).
"""
from __future__ import annotations

from typing import Any

from mrfs_edge.backends import trt_compat as compat
from mrfs_edge.backends.cuda_memory import CudaError, gpu_properties
from mrfs_edge.backends.sidecar import Machine, sm


def machine_info(trt: Any = None) -> Machine:
    """This machine's TensorRT version, GPU name and compute capability (via cuda-python or pycuda)."""
    api = compat.as_api(trt)
    gpu_name, capability = gpu_properties()
    return Machine(api.version_text, gpu_name, capability)


def tensorrt_status() -> tuple[bool, str]:
    """Whether engines can be built and run here, and a one-line reason or description."""
    try:
        api = compat.TrtApi()
    except (ImportError, OSError) as exc:
        return False, f"TensorRT not installed ({exc}); on Jetson it ships with JetPack (python3-libnvinfer)"
    try:
        gpu_name, capability = gpu_properties()
    except CudaError as exc:
        return False, str(exc)
    except Exception as exc:  # driver-level failures surface as each library's own error type
        return False, f"no CUDA GPU visible ({exc})"
    return True, f"TensorRT {api.version_text} on {gpu_name} ({sm(capability)})"
