"""Activation ranges for symmetric INT8 with bounded memory: streamed statistics, chunked outputs.

ONNX Runtime's ``quantize_static`` calibrator exposes every tensor as a graph output and keeps
every pair's outputs until the end, so its memory grows with pairs × tensors (9.6 GB for four
pairs of the demo B0 at 480×640). Here a pass exposes only a chunk of the tensors (bounded by
their bytes per pair and a count), reads the calibration pairs one at a time, and folds each
output into per-tensor statistics of fixed size at once: a running max of ``|x|`` and a
histogram of ``|x|`` over a fixed number of bins whose range doubles (merging neighbouring bins,
exactly) when a larger value arrives. Memory is then one pair's outputs of one chunk plus a few
kilobytes per tensor, whatever the number of pairs or tensors; the price is one forward pass
per chunk and pair, each pruned to the nodes that chunk needs.

The amax per tensor comes from the statistics by ``method``: ``max`` (the running max),
``percentile`` (the 99.999th percentile of ``|x|``, to a bin) or ``entropy`` (the threshold
minimising the KL divergence between the 2048-bin histogram and its 128-level quantisation,
the procedure TensorRT's entropy calibrator publishes).
"""
from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import onnx

from mrfs_edge.calibration.dataset import CalibrationSet
from mrfs_edge.core.errors import ModelFileError
from mrfs_edge.core.log import progress

LOG = logging.getLogger(__name__)

RangeMethod = Literal["percentile", "entropy", "max"]
PERCENTILE = 99.999
HISTOGRAM_BINS = 2048
QUANTIZED_BINS = 128          # levels of one sign of symmetric INT8 (TensorRT's 127 plus zero)
CHUNK_BYTES = 256 * 2 ** 20   # outputs exposed per pass, per pair: memory bound beside the session's own
CHUNK_TENSORS = 48            # and at most this many tensors per pass


class TensorStatistics:
    """Streamed statistics of ``|x|`` for one tensor: running max and a re-binned histogram.

    The histogram covers ``[0, edge]`` in ``bins`` equal bins. ``edge`` starts at the first
    non-zero maximum and doubles as often as needed when a later value exceeds it, merging each
    run of ``2**k`` neighbouring bins into one: counts stay exact, only the resolution halves.
    """

    def __init__(self, bins: int = HISTOGRAM_BINS, histogram: bool = True) -> None:
        if histogram and bins & (bins - 1):
            raise ValueError(f"histogram bins must be a power of two, not {bins}")
        self.bins = bins
        self.amax = 0.0
        self.count = 0
        self.edge = 0.0
        self.histogram: np.ndarray | None = np.zeros(bins, np.int64) if histogram else None

    def update(self, values: np.ndarray) -> None:
        magnitude = np.abs(np.asarray(values, dtype=np.float32)).ravel()
        if magnitude.size == 0:
            return
        top = float(magnitude.max())
        if not math.isfinite(top):
            raise ValueError("tensor holds inf or NaN")
        self.amax = max(self.amax, top)
        self.count += magnitude.size
        if self.histogram is None:
            return
        if top > self.edge:
            self._grow(top)
        if self.edge == 0.0:                       # all zeros so far: they belong in bin 0 whatever the range
            self.histogram[0] += magnitude.size
            return
        index = np.minimum((magnitude * np.float32(self.bins / self.edge)).astype(np.int64), self.bins - 1)
        self.histogram += np.bincount(index, minlength=self.bins)

    def _grow(self, top: float) -> None:
        assert self.histogram is not None
        if self.edge == 0.0:
            self.edge = top
            return
        factor = 2 ** math.ceil(math.log2(top / self.edge))
        merged = np.zeros_like(self.histogram)
        if factor >= self.bins:
            merged[0] = self.histogram.sum()
        else:
            merged[: self.bins // factor] = self.histogram.reshape(-1, factor).sum(axis=1)
        self.histogram = merged
        self.edge *= factor

    def range(self, method: RangeMethod) -> float:
        """The amax ``method`` chooses (never above the running max)."""
        if method == "max" or self.histogram is None or self.edge == 0.0:
            return self.amax
        if method == "percentile":
            return min(self.amax, percentile_amax(self.histogram, self.edge, PERCENTILE))
        if method == "entropy":
            return min(self.amax, entropy_amax(self.histogram, self.edge))
        raise ValueError(f"unknown range method {method!r}")


def percentile_amax(histogram: np.ndarray, edge: float, percentile: float = PERCENTILE) -> float:
    """Upper edge of the bin holding the ``percentile`` of the values (within one bin of exact)."""
    cumulative = np.cumsum(histogram)
    index = int(np.searchsorted(cumulative, cumulative[-1] * percentile / 100.0))
    return (min(index, histogram.size - 1) + 1) * edge / histogram.size


def entropy_amax(histogram: np.ndarray, edge: float, levels: int = QUANTIZED_BINS) -> float:
    """The clipping threshold whose ``levels``-level quantisation loses the least information.

    For every candidate threshold bin ``i`` (``levels`` ≤ i ≤ bins): P is the histogram's first
    ``i`` bins with everything beyond added to the last; Q spreads each of ``levels`` equal
    groups of those bins evenly over the group's bins that P holds values in. The threshold is
    ``i + 0.5`` bin widths for the ``i`` minimising KL(P‖Q); a candidate where Q is empty somewhere P is not
    is infinitely bad. All candidates are scored at once from prefix sums (the group terms of
    the divergence separate), so the search costs a few array operations, not one per bin.
    """
    h = histogram.astype(np.float64)
    bins = h.size
    if bins < levels or h.sum() == 0:
        return edge
    total = h.sum()
    candidates = np.arange(levels, bins + 1)                               # i
    group = np.arange(levels + 1)
    bounds = (group[None, :] * candidates[:, None]) // levels              # group k spans [bounds_k, bounds_k+1)
    occupied = (h > 0).astype(np.float64)
    h_log_h = np.where(h > 0, h * np.log(np.where(h > 0, h, 1.0)), 0.0)
    prefix = [np.concatenate([[0.0], np.cumsum(a)]) for a in (h, occupied, h_log_h)]
    sums, nonzero, entropy_part = (p[bounds[:, 1:]] - p[bounds[:, :-1]] for p in prefix)   # (candidates, levels)
    last = candidates - 1
    outliers = total - prefix[0][candidates]
    # P's last bin also holds the outliers: it is occupied when they are, whatever the histogram says there.
    nonzero[:, -1] += (h[last] == 0) & (outliers > 0)
    p_last = h[last] + outliers
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = np.where(nonzero > 0, sums / np.maximum(nonzero, 1), 0.0)   # Q's value on each occupied bin
        log_mean = np.log(np.where(mean > 0, mean, 1.0))
        # Σ_j p_j log p_j − Σ_j p_j log q_j over the first i bins, P's last bin replaced by p_last.
        cross = (sums * log_mean).sum(axis=1) - h[last] * log_mean[:, -1] + p_last * log_mean[:, -1]
        self_part = entropy_part.sum(axis=1) - h_log_h[last] + np.where(p_last > 0, p_last * np.log(
            np.where(p_last > 0, p_last, 1.0)), 0.0)
        divergence = (self_part - cross) / total + np.log(prefix[0][candidates] / total)
    empty_q = (p_last > 0) & (mean[:, -1] == 0)
    divergence = np.where(empty_q | ~np.isfinite(divergence), np.inf, divergence)
    if not np.isfinite(divergence).any():
        return edge
    best = int(candidates[int(np.argmin(divergence))])
    return (best + 0.5) * edge / bins   # TensorRT's threshold for i bins: (i + 0.5) bin widths


def _needed_nodes(graph: onnx.GraphProto, targets: Iterable[str]) -> list[onnx.NodeProto]:
    """Nodes the ``targets`` depend on, in graph order: a chunk's pass computes nothing else."""
    producer = {out: node for node in graph.node for out in node.output}
    needed: set[int] = set()
    stack = [t for t in targets]
    seen: set[str] = set()
    while stack:
        name = stack.pop()
        if name in seen or name not in producer:
            continue
        seen.add(name)
        node = producer[name]
        if id(node) not in needed:
            needed.add(id(node))
            stack.extend(i for i in node.input if i)
    return [node for node in graph.node if id(node) in needed]


def _tensor_bytes(model: onnx.ModelProto) -> dict[str, int]:
    """Bytes per pair of every tensor with a static shape (0 where shape inference has none)."""
    inferred = onnx.shape_inference.infer_shapes(model)
    sizes = {}
    for value in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        dims = [d.dim_value if d.HasField("dim_value") else 0 for d in value.type.tensor_type.shape.dim]
        sizes[value.name] = 4 * int(np.prod(dims)) if dims and 0 not in dims else 0
    return sizes


def chunk_tensors(order: Sequence[str], sizes: dict[str, int], budget: int = CHUNK_BYTES,
                  most: int = CHUNK_TENSORS) -> list[list[str]]:
    """Consecutive chunks of ``order``, each within ``budget`` bytes and ``most`` tensors (one at least).

    ``order`` is graph order, so early chunks need only the early part of the network.
    """
    chunks: list[list[str]] = []
    current: list[str] = []
    used = 0
    for name in order:
        size = sizes.get(name, 0)
        if current and (used + size > budget or len(current) >= most):
            chunks.append(current)
            current, used = [], 0
        current.append(name)
        used += size
    if current:
        chunks.append(current)
    return chunks


def _session(model: onnx.ModelProto, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    # ORT's CPU arena keeps its high-water mark across chunks (each chunk's outputs differ in size):
    # without it, the demo B0 with 8 pairs peaked at 1.4 GiB instead of 1.9 GiB, no slower.
    options.enable_cpu_mem_arena = False
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def collect_statistics(fp32: onnx.ModelProto | Path, calibration: CalibrationSet, tensors: Sequence[str], *,
                       histogram: bool = True, threads: int = 0, chunk_bytes: int = CHUNK_BYTES,
                       chunk_size: int = CHUNK_TENSORS) -> dict[str, TensorStatistics]:
    """Per-tensor streamed statistics over ``calibration``, one chunk of tensors per pass.

    Graph inputs in ``tensors`` are read from the feeds; every other name must be a float
    tensor some node produces. One ONNX Runtime session per chunk, made from the graph pruned
    to the nodes that chunk needs; the pairs are read again for each chunk (decoding a pair is
    cheap next to the forward pass), so no pair is held beyond its pass.
    """
    model = fp32 if isinstance(fp32, onnx.ModelProto) else onnx.load(str(fp32))
    graph = model.graph
    inputs = {i.name for i in graph.input}
    produced = {out for node in graph.node for out in node.output}
    unknown = [t for t in tensors if t not in inputs and t not in produced]
    if unknown:
        raise ModelFileError(f"{graph.name or 'model'}: no tensor named {unknown[0]!r} to calibrate"
                             f"{f' (+{len(unknown) - 1} more)' if len(unknown) > 1 else ''}")
    wanted = list(dict.fromkeys(tensors))
    stats = {name: TensorStatistics(histogram=histogram) for name in wanted}
    from_feed = [t for t in wanted if t in inputs]
    rank = {out: index for index, node in enumerate(graph.node) for out in node.output}
    chunks = chunk_tensors(sorted((t for t in wanted if t not in inputs), key=rank.__getitem__),
                           _tensor_bytes(model), chunk_bytes, chunk_size)
    LOG.debug(f"calibrating {len(wanted)} tensors in {len(chunks)} passes over {len(calibration)} pairs")
    with progress(total=max(len(chunks), 1) * len(calibration), desc="calibration", unit="pass",
                  leave=False) as bar:
        if not chunks:   # only graph inputs asked for
            for position in range(len(calibration)):
                feed = calibration.feed(position)
                for name in from_feed:
                    stats[name].update(feed[name])
                bar.update(1)
        for number, chunk in enumerate(chunks):
            session = _session(pruned_model(model, chunk), threads)
            names = [i.name for i in session.get_inputs()]
            for position in range(len(calibration)):
                feed = calibration.feed(position)
                if number == 0:
                    for name in from_feed:
                        stats[name].update(feed[name])
                for name, value in zip(chunk, session.run(chunk, {n: feed[n] for n in names})):
                    stats[name].update(value)
                del feed
                bar.update(1)
            del session
    return stats


def pruned_model(model: onnx.ModelProto, chunk: list[str]) -> onnx.ModelProto:
    """``model`` computing only ``chunk`` (as its outputs), with the inputs and initializers those nodes read."""
    nodes = _needed_nodes(model.graph, chunk)
    used = {i for node in nodes for i in node.input}
    graph = onnx.helper.make_graph(
        nodes, f"{model.graph.name}_calibration",
        [i for i in model.graph.input if i.name in used],
        [onnx.helper.make_empty_tensor_value_info(name) for name in chunk],
        [init for init in model.graph.initializer if init.name in used])
    chunk_model = onnx.helper.make_model(graph, opset_imports=model.opset_import, ir_version=model.ir_version)
    return chunk_model


def collect_ranges(fp32: onnx.ModelProto | Path, calibration: CalibrationSet, method: RangeMethod,
                   tensors: Sequence[str], *, threads: int = 0, chunk_bytes: int = CHUNK_BYTES,
                   chunk_size: int = CHUNK_TENSORS) -> dict[str, float]:
    """amax per tensor for symmetric INT8 (scale = amax / 127) from ``calibration`` by ``method``.

    Memory is bounded by one pair's outputs of one chunk (``chunk_bytes``/``chunk_size``) plus
    fixed-size statistics per tensor; see :func:`collect_statistics`.
    """
    if method not in ("percentile", "entropy", "max"):
        raise ValueError(f"range method must be percentile, entropy or max, not {method!r}")
    stats = collect_statistics(fp32, calibration, tensors, histogram=method != "max", threads=threads,
                               chunk_bytes=chunk_bytes, chunk_size=chunk_size)
    return {name: s.range(method) for name, s in stats.items()}
