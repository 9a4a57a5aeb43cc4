"""Builds the fake CUDA runtime (``fake_cudart.c``) that tests and the JetPack rehearsal load
through ``MRFS_EDGE_CUDART`` in place of libcudart, on machines without an NVIDIA GPU.

It is compiled from source on demand (a C compiler is all it needs), so no binary is committed.
"""
from __future__ import annotations

import ctypes
import shutil
import subprocess
from pathlib import Path
from typing import Callable

SOURCE = Path(__file__).with_name("fake_cudart.c")
LIBRARY_NAME = "libcudart_fake.so"


def build_fake_cudart(out_dir: str | Path) -> Path:
    """Compile the fake into ``out_dir`` (rebuilt when the source is newer) and return its path.

    Raises ``RuntimeError`` (one line) when no C compiler is found or the compile fails.
    """
    out = Path(out_dir) / LIBRARY_NAME
    if out.exists() and out.stat().st_mtime >= SOURCE.stat().st_mtime:
        return out
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise RuntimeError("cannot build the fake libcudart: no C compiler (cc) on PATH")
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_suffix(".so.partial")
    result = subprocess.run([compiler, "-shared", "-fPIC", "-O1", "-o", str(partial), str(SOURCE), "-lpthread"],
                            capture_output=True, text=True)
    if result.returncode != 0:
        first = (result.stderr.strip().splitlines() or ["no output"])[0]
        raise RuntimeError(f"cannot build the fake libcudart from {SOURCE}: {first}")
    partial.replace(out)   # atomic, so a concurrent reader never loads a half-written library
    return out


def fake_kernel(library: Path) -> Callable[..., int]:
    """``fakeLaunchCopyKernel(dst, src, nbytes, stream) -> cudaError_t`` of a built fake: a device
    copy kernel stand-in, checked as CUDA checks kernel launches (stream and memory on the
    calling thread's current device). Loading the same path as the binding shares its state."""
    function = ctypes.CDLL(str(library)).fakeLaunchCopyKernel
    function.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    function.restype = ctypes.c_int
    return function


def live_allocations(library: Path) -> int:
    """Device and pinned allocations of the fake not yet freed."""
    function = ctypes.CDLL(str(library)).fakeLiveAllocations
    function.restype = ctypes.c_int
    return int(function())
