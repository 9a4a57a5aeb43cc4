"""Cache keys for deploy artefacts, stored beside each file, and the one reuse-or-rebuild decision.

An artefact (FP32 ONNX, FP16 graph, Q/DQ graph, engine) is reused only when the key recorded
beside it at build time equals the key its step computes now, byte for byte. A key names every
input that changes the file: the input artefact's content hash, the options, the data it was
calibrated on, the toolkit version. Paths that only say *where* things go are left out, so moving
an output directory does not force a rebuild while changing a calibration option does. A reuse
keyed on file names or modification times (what the benchmark did before) silently serves a
graph calibrated with other settings; the record makes the decision checkable and the log line
says which inputs differ.
"""
from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from mrfs_edge import __version__ as TOOLKIT_VERSION
from mrfs_edge.core.files import sha256_file, write_json_atomic

LOG = logging.getLogger(__name__)

Step = Literal["fp32-onnx", "fp16-onnx", "qdq-onnx", "engine"]
RECORD_SUFFIX = ".key.json"
RECORD_SCHEMA = 1


@dataclass(frozen=True)
class CacheKey:
    """What a step's output depends on: ``inputs`` is plain JSON (numbers, strings, lists, dicts)."""

    step: Step
    inputs: Mapping[str, Any]

    def payload(self) -> dict[str, Any]:
        return {"step": self.step, "toolkit": TOOLKIT_VERSION, "inputs": _plain(self.inputs)}

    @property
    def digest(self) -> str:
        canonical = json.dumps(self.payload(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


def record_path(artefact: Path) -> Path:
    """``m.int8.onnx`` → ``m.int8.onnx.key.json``."""
    return artefact.with_name(artefact.name + RECORD_SUFFIX)


def source_identity(artefact: Path) -> dict[str, Any]:
    """An input artefact as a key field: its content hash, and the key it was built with if recorded.

    The content hash alone covers a file the user made elsewhere (``--onnx``); the recorded key
    carries the upstream options into the downstream key for files this workflow built.
    """
    record = read_record(artefact)
    return {"sha256": sha256_file(artefact), "key": record.get("key") if record else None}


def read_record(artefact: Path) -> dict[str, Any] | None:
    path = record_path(artefact)
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and record.get("schema") == RECORD_SCHEMA else None


def write_record(artefact: Path, key: CacheKey) -> Path:
    """The key beside ``artefact`` with the artefact's own hash (a file swapped by hand is caught)."""
    return write_json_atomic(record_path(artefact), {"schema": RECORD_SCHEMA, "key": key.digest,
                                                     "sha256": sha256_file(artefact), **key.payload()})


def why_rebuild(artefact: Path, key: CacheKey, companions: Sequence[Path] = ()) -> str | None:
    """None when ``artefact`` can be reused for ``key``; otherwise the reason, in words."""
    if not artefact.is_file():
        return "no earlier file"
    missing = [p.name for p in companions if not p.is_file()]
    if missing:
        return f"{', '.join(missing)} missing"
    record = read_record(artefact)
    if record is None:
        return f"no key record {record_path(artefact).name} beside it"
    if record.get("key") != key.digest:
        changed = changed_fields({"step": record.get("step"), "toolkit": record.get("toolkit"),
                                  "inputs": record.get("inputs")}, key.payload())
        return f"key differs ({', '.join(changed) or 'record unreadable'})"
    if record.get("sha256") != sha256_file(artefact):
        return "file changed since it was built"
    return None


def changed_fields(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted names of the leaves that differ between two JSON values."""
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        names: list[str] = []
        for name in sorted(set(old) | set(new), key=str):
            names += changed_fields(old.get(name), new.get(name), f"{prefix}{name}.")
        return names
    return [] if old == new else [prefix.rstrip(".") or "key"]


def reuse_or_build(artefact: Path, key: CacheKey, build: Callable[[], object],
                   companions: Sequence[Path] = ()) -> bool:
    """Reuse ``artefact`` on an exact key match, else ``build()`` it and record the key; True if built.

    ``build`` writes ``artefact`` (and ``companions``, files the step also needs on reuse, like the
    calibration summary) atomically; the record is written only after it returns, so an interrupted
    build leaves no record that a later run would trust.
    """
    reason = why_rebuild(artefact, key, companions)
    if reason is None:
        LOG.info("reusing %s: %s key %s matches", artefact, key.step, key.digest[:12])
        return False
    LOG.info("building %s: %s", artefact, reason)
    record_path(artefact).unlink(missing_ok=True)
    build()
    write_record(artefact, key)
    return True


def _plain(value: Any) -> Any:
    """Tuples as lists and paths as strings, so a key round-trips through its JSON record unchanged."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value
