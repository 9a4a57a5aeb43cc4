"""Where and with what a benchmark ran: machine, library versions, source commit, date.

Latency figures mean nothing without the machine and its load, and accuracy figures can move
with library versions, so every report carries them and ``--compare`` shows them side by side.
The commit is read from ``.git`` files directly (no git executable needed on a Jetson).
"""
from __future__ import annotations

import os
import platform
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from mrfs_edge import __version__

PACKAGES = ("torch", "onnxruntime", "numpy", "onnx", "opencv-python-headless", "tensorrt")
NOT_INSTALLED = "not installed"
# JetPack's OpenCV and TensorRT come from apt, without pip metadata: their modules say the version.
MODULES = {"opencv-python-headless": "cv2", "tensorrt": "tensorrt"}


def cpu_name() -> str:
    """The CPU model from ``/proc/cpuinfo`` (Linux, x86 and most ARM kernels), else :mod:`platform`."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model", "Hardware") and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def memory_gb() -> float | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9
    except (ValueError, OSError, AttributeError):
        return None


def load_average() -> list[float] | None:
    """1/5/15-minute load averages: other work on the machine (e.g. a training job) slows every row."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def machine(gpu: str | None = None) -> dict[str, object]:
    return {"cpu": cpu_name(), "cores": os.cpu_count(), "memory_gb": memory_gb(), "arch": platform.machine(),
            "os": platform.platform(), "hostname": platform.node(), "gpu": gpu, "load_average": load_average()}


def versions() -> dict[str, str]:
    """Package versions from pip metadata, else from a module this run already imported (apt packages)."""
    found = {"python": platform.python_version(), "mrfs_edge": __version__}
    for package in PACKAGES:
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            module = sys.modules.get(MODULES.get(package, ""))
            version = getattr(module, "__version__", None)
            found[package] = f"{version} (not from pip)" if version else NOT_INSTALLED
    return found


def git_commit(start: Path | None = None) -> str | None:
    """The checked-out commit of the source tree this package runs from (None outside a git checkout)."""
    folder = (start or Path(__file__)).resolve()
    for root in (folder, *folder.parents):
        git = root / ".git"
        if git.is_file():      # a worktree or submodule: "gitdir: <path>"
            git = (root / git.read_text().partition("gitdir:")[2].strip()).resolve()
        if not git.is_dir():
            continue
        head = (git / "HEAD").read_text().strip()
        if not head.startswith("ref:"):
            return head
        ref = head.partition("ref:")[2].strip()
        common = git / "commondir"
        bases = [git] + ([(git / common.read_text().strip()).resolve()] if common.is_file() else [])
        for base in bases:
            if (base / ref).is_file():
                return (base / ref).read_text().strip()
            packed = base / "packed-refs"
            if packed.is_file():
                for line in packed.read_text().splitlines():
                    if line.endswith(f" {ref}"):
                        return line.split()[0]
        return None
    return None


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
