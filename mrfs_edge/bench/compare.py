"""``--compare A.json B.json``: every figure of two reports side by side, with B − A.

Typical use: the host run (emulated FP16, Q/DQ on ONNX Runtime) against the Jetson run
(TensorRT engines), or one commit against the next. Rows are matched by mode, figures by their
dotted path in the row; a figure missing or ``null`` on either side is shown without a delta.
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mrfs_edge.bench.report import SCHEMA
from mrfs_edge.core.errors import MrfsEdgeError
from mrfs_edge.core.files import write_bytes_atomic

SKIPPED_KEYS = ("reasons",)


@dataclass
class Difference:
    mode: str
    figure: str
    a: float | None
    b: float | None

    @property
    def delta(self) -> float | None:
        return None if self.a is None or self.b is None else self.b - self.a


def load_report(path: str | os.PathLike[str]) -> dict[str, Any]:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise MrfsEdgeError(f"{path}: no such report") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MrfsEdgeError(f"{path}: not a readable report.json ({exc})") from exc
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise MrfsEdgeError(f"{path}: not a benchmark report (expected schema {SCHEMA})")
    return data


def numeric_figures(row: Mapping[str, Any], path: str = "") -> Iterator[tuple[str, float | None]]:
    """``(dotted path, value)`` of every number (or null figure) in a row; booleans and text are left out."""
    for key, value in row.items():
        if not path and key in SKIPPED_KEYS:
            continue
        here = f"{path}.{key}" if path else str(key)
        if isinstance(value, Mapping):
            yield from numeric_figures(value, here)
        elif value is None or (isinstance(value, (int, float)) and not isinstance(value, bool)):
            yield here, value


def compare_reports(a: Mapping[str, Any], b: Mapping[str, Any]) -> tuple[list[Difference], list[str], list[str]]:
    """Differences for the modes in both reports, and the modes only in A and only in B."""
    rows_a = {row["mode"]: row for row in a["rows"]}
    rows_b = {row["mode"]: row for row in b["rows"]}
    differences = []
    for mode in (m for m in rows_a if m in rows_b):
        figures_a, figures_b = dict(numeric_figures(rows_a[mode])), dict(numeric_figures(rows_b[mode]))
        for figure in dict.fromkeys([*figures_a, *figures_b]):
            differences.append(Difference(mode, figure, figures_a.get(figure), figures_b.get(figure)))
    return (differences, [m for m in rows_a if m not in rows_b], [m for m in rows_b if m not in rows_a])


def _cell(value: float | None) -> str:
    if value is None:
        return "–"
    return str(value) if isinstance(value, int) else f"{value:.6g}"


def _relative(d: Difference) -> str:
    """B − A as a percentage of A (latencies, sizes), blank where A is zero or missing."""
    if d.delta is None or not d.a:
        return ""
    return f"{100 * d.delta / abs(d.a):+.1f}%"


def _environment_line(name: str, report: Mapping[str, Any]) -> str:
    env, machine = report["environment"], report["environment"]["machine"]
    versions = ", ".join(f"{k} {v}" for k, v in env["versions"].items())
    return (f"- **{name}**: {report['created']}, {machine['cpu']} ({machine['cores']} cores, GPU {machine['gpu'] or 'none'}), "
            f"commit {env['commit'] or 'unknown'}; {versions}")


def compare_markdown(a: Mapping[str, Any], b: Mapping[str, Any], name_a: str, name_b: str) -> str:
    differences, only_a, only_b = compare_reports(a, b)
    lines = ["# Benchmark comparison (B − A)", "", _environment_line(f"A = {name_a}", a),
             _environment_line(f"B = {name_b}", b), ""]
    if only_a or only_b:
        lines += [f"Modes only in A: {', '.join(only_a) or 'none'}; only in B: {', '.join(only_b) or 'none'}.", ""]
    for mode in dict.fromkeys(d.mode for d in differences):
        lines += [f"## {mode}", "", "| figure | A | B | B − A | (B − A) / A |", "|---|---:|---:|---:|---:|"]
        lines += [f"| {d.figure} | {_cell(d.a)} | {_cell(d.b)} | {_cell(d.delta)} | {_relative(d)} |"
                  for d in differences if d.mode == mode]
        lines += [""]
    return "\n".join(lines)


def compare_files(path_a: str | os.PathLike[str], path_b: str | os.PathLike[str],
                  output: str | os.PathLike[str] | None = None) -> str:
    """The comparison as Markdown, also written to ``output`` when given."""
    text = compare_markdown(load_report(path_a), load_report(path_b), str(path_a), str(path_b))
    if output is not None:
        write_bytes_atomic(output, text.encode())
    return text
