"""Atomic outputs and content hashes.

Outputs are written under a temporary name beside the target and renamed only when complete,
so an interrupted export, calibration or benchmark never leaves a half-written file that a
later run would trust. The renamed file gets the permissions a plain ``open()`` would have given
it (``0o666`` less the umask, or those of the file it replaces): ``mkstemp``'s private ``0o600``
would leave engines and reports unreadable to the service user that runs them on the vehicle.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it onto ``target`` on success only."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, _mode_for(target))
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def _mode_for(target: Path) -> int:
    """The replaced file's permission bits, else ``0o666`` less this process's umask."""
    try:
        return target.stat().st_mode & 0o7777
    except FileNotFoundError:
        return 0o666 & ~_umask()


def _umask() -> int:
    """The umask, read without changing it where Linux allows (``os.umask`` sets as it reads)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_bytes_atomic(target: str | os.PathLike[str], data: bytes) -> Path:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)
    return Path(target)


def write_json_atomic(target: str | os.PathLike[str], payload: Any) -> Path:
    text = json.dumps(payload, indent=2, sort_keys=False, default=_json_default) + "\n"
    return write_bytes_atomic(target, text.encode())


def _json_default(value: Any) -> Any:
    """Numpy scalars and paths in reports become plain JSON values."""
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()
