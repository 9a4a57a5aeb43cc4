"""Bounded-memory range collection: streamed statistics equal ranges computed directly from the outputs."""
from __future__ import annotations

import weakref

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from mrfs_edge.assets import CALIB_SPLIT, SAMPLES
from mrfs_edge.calibration.dataset import CalibrationSet
from mrfs_edge.calibration.ranges import (
    TensorStatistics,
    collect_ranges,
    entropy_amax,
    percentile_amax,
)
from mrfs_edge.core.errors import ModelFileError
from mrfs_edge.core.memory import peak_rss_bytes
from mrfs_edge.io.pairs import PairFolder
from tests.fake_tensorrt import make_tiny_onnx, tiny_contract

TENSORS = ["x", "a", "r", "b", "y"]


def _chain() -> onnx.ModelProto:
    """x → Conv → a → Relu → r → Conv → b → Mul(3) → y: five float tensors of different ranges."""
    rng = np.random.default_rng(1)
    inits = [numpy_helper.from_array(rng.normal(size=(4, 2, 3, 3)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.normal(size=(3, 4, 1, 1)).astype(np.float32), "w2"),
             numpy_helper.from_array(np.array(3.0, np.float32), "three")]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], name="conv1", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["a"], ["r"], name="relu"),
             helper.make_node("Conv", ["r", "w2"], ["b"], name="conv2"),
             helper.make_node("Mul", ["b", "three"], ["y"], name="scale")]
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8, 8])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


class _Pairs:
    """A calibration set of random feeds whose spread grows pair by pair (so histograms must re-bin).

    It records how many earlier feeds were still alive each time a feed was asked for, and how
    often feeds were asked for: a collector that held the pairs would keep them alive.
    """

    def __init__(self, count: int) -> None:
        self.count = count
        self.alive: list[weakref.ref] = []
        self.most_alive = 0
        self.reads = 0

    def __len__(self) -> int:
        return self.count

    def feed(self, position: int) -> dict[str, np.ndarray]:
        self.most_alive = max(self.most_alive, sum(ref() is not None for ref in self.alive))
        self.reads += 1
        x = np.random.default_rng(position).normal(scale=1.0 + 3 * position, size=(1, 2, 8, 8)).astype(np.float32)
        self.alive.append(weakref.ref(x))
        return {"x": x}


def _direct_outputs(model: onnx.ModelProto, pairs: _Pairs) -> dict[str, np.ndarray]:
    """Every tensor of every pair at once, through ONNX Runtime with all of them as outputs."""
    exposed = onnx.ModelProto()
    exposed.CopyFrom(model)
    exposed.graph.output.extend(helper.make_empty_tensor_value_info(t) for t in ["a", "r", "b"])
    session = ort.InferenceSession(exposed.SerializeToString(), providers=["CPUExecutionProvider"])
    per_pair = []
    for position in range(len(pairs)):
        feed = pairs.feed(position)
        per_pair.append(dict(zip(["x", "a", "r", "b", "y"],
                                 [feed["x"], *session.run(["a", "r", "b", "y"], feed)])))
    return {t: np.concatenate([np.abs(p[t]).ravel() for p in per_pair]) for t in TENSORS}


def test_max_ranges_equal_the_largest_magnitude_over_all_pairs_whatever_the_chunking():
    model, pairs = _chain(), _Pairs(5)
    reference = {t: float(v.max()) for t, v in _direct_outputs(model, _Pairs(5)).items()}
    ranges = collect_ranges(model, pairs, "max", TENSORS, threads=1, chunk_size=2)
    assert ranges == reference                                   # exactly: the same float32 values
    assert collect_ranges(model, _Pairs(5), "max", TENSORS, threads=1, chunk_size=100) == reference
    # four produced tensors in chunks of two: two passes, each reading the five pairs once
    assert pairs.reads == 2 * 5
    assert pairs.most_alive == 0                                 # no pair outlives its pass


def test_percentile_and_entropy_ranges_come_from_histograms_within_a_bin_of_the_direct_figures():
    model = _chain()
    values = _direct_outputs(model, _Pairs(6))
    percentile = collect_ranges(model, _Pairs(6), "percentile", TENSORS, threads=1)
    for tensor in TENSORS:
        stats = TensorStatistics()
        for position in range(6):          # the same stream of pairs the collector saw
            stats.update(np.split(values[tensor], 6)[position])
        width = stats.edge / stats.bins
        # the percentile as the smallest value with that share at or below it (no interpolation)
        assert abs(percentile[tensor] - np.percentile(values[tensor], 99.999, method="inverted_cdf")) <= width
    entropy = collect_ranges(model, _Pairs(6), "entropy", TENSORS, threads=1)
    assert all(0 < entropy[t] <= float(values[t].max()) for t in TENSORS)


def test_a_histogram_whose_range_grows_keeps_exact_counts_at_the_coarser_resolution():
    rng = np.random.default_rng(0)
    small, large = rng.uniform(0, 1, 20000), rng.uniform(0, 5.5, 20000)
    stats = TensorStatistics(bins=256)
    stats.update(small)
    stats.update(large)
    assert stats.edge == pytest.approx(small.max() * 8)          # 5.5 / 1 → three doublings
    direct, _ = np.histogram(np.concatenate([small, large]), bins=256, range=(0, stats.edge))
    assert stats.histogram.sum() == 40000
    assert np.abs(stats.histogram - direct).sum() <= 8           # float32 rounding at bin edges only
    assert stats.amax == pytest.approx(large.max())


def _entropy_by_definition(histogram: np.ndarray, edge: float, levels: int) -> float:
    """TensorRT's published KL threshold search, one candidate at a time."""
    best, best_kl = None, np.inf
    for i in range(levels, histogram.size + 1):
        p = histogram[:i].astype(np.float64).copy()
        p[i - 1] += histogram[i:].sum()
        occupied = p > 0
        q = np.zeros(i)
        bounds = (np.arange(levels + 1) * i) // levels
        for start, stop in zip(bounds[:-1], bounds[1:]):
            count = occupied[start:stop].sum()
            if count:
                q[start:stop] = np.where(occupied[start:stop], histogram[start:stop].sum() / count, 0.0)
        p, q = p / p.sum(), q / q.sum()
        if np.any(occupied & (q == 0)):
            continue
        kl = float(np.sum(p[occupied] * np.log(p[occupied] / q[occupied])))
        if kl < best_kl:
            best, best_kl = i, kl
    return (best + 0.5) * edge / histogram.size


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_entropy_threshold_is_the_kl_minimum_of_tensorrt_s_search(seed):
    rng = np.random.default_rng(seed)
    values = np.abs(np.concatenate([rng.normal(size=5000), rng.normal(scale=8, size=40)]))
    histogram, _ = np.histogram(values, bins=256, range=(0, values.max()))
    threshold = entropy_amax(histogram, float(values.max()), levels=32)
    assert threshold == pytest.approx(_entropy_by_definition(histogram, float(values.max()), 32))
    assert threshold < 0.8 * values.max()                        # the outliers are clipped


def test_percentile_is_the_upper_edge_of_the_bin_holding_it():
    histogram = np.zeros(8, np.int64)
    histogram[[0, 3, 6]] = [50, 49, 1]
    assert percentile_amax(histogram, 8.0, 99.0) == 4.0          # 99 of 100 values lie in bins 0..3
    assert percentile_amax(histogram, 8.0, 99.999) == 7.0


def test_a_real_calibration_set_is_read_pair_by_pair_and_unknown_tensors_are_named(tmp_path):
    contract = tiny_contract()
    path = make_tiny_onnx(tmp_path / "tiny.onnx", contract)
    calibration = CalibrationSet.from_folder(PairFolder(SAMPLES, CALIB_SPLIT), 3, contract)
    model = onnx.load(str(path))
    exposed = onnx.ModelProto()
    exposed.CopyFrom(model)
    exposed.graph.output.extend([helper.make_empty_tensor_value_info("x4"), helper.make_empty_tensor_value_info("pre")])
    session = ort.InferenceSession(exposed.SerializeToString(), providers=["CPUExecutionProvider"])
    direct = [session.run(["x4", "pre"], calibration.feed(i)) for i in range(len(calibration))]
    ranges = collect_ranges(path, calibration, "max", ["visible", "x4", "pre"], threads=1)
    assert ranges["x4"] == max(float(np.abs(x4).max()) for x4, _ in direct)
    assert ranges["pre"] == max(float(np.abs(pre).max()) for _, pre in direct)
    assert ranges["visible"] == max(float(np.abs(calibration.feed(i)["visible"]).max()) for i in range(3))
    with pytest.raises(ModelFileError, match="'nope'"):
        collect_ranges(path, calibration, "max", ["x4", "nope"])


def test_peak_rss_counts_memory_this_process_touched():
    block = np.ones(64 * 2 ** 20 // 8)                          # 64 MiB, written
    assert peak_rss_bytes() >= block.nbytes


def test_pairs_are_fingerprinted_by_names_and_bytes_not_by_folder(tmp_path):
    import shutil

    from mrfs_edge.calibration.dataset import fingerprint_pairs

    for sub in ("vi", "ir"):
        (tmp_path / sub).mkdir()
        for name in ("00530D", "00720N"):
            shutil.copy(SAMPLES / sub / f"{name}.png", tmp_path / sub / f"{name}.png")
    bundled, copied = PairFolder(SAMPLES, ["00530D", "00720N"]), PairFolder(tmp_path)
    assert fingerprint_pairs(copied, [0, 1]) == fingerprint_pairs(bundled, [0, 1])
    assert fingerprint_pairs(copied, [0, 1]) != fingerprint_pairs(copied, [1, 0])
    with open(tmp_path / "ir" / "00720N.png", "ab") as file:
        file.write(b"\0")
    assert fingerprint_pairs(copied, [0, 1]) != fingerprint_pairs(bundled, [0, 1])
    assert fingerprint_pairs(copied, [0]) == fingerprint_pairs(bundled, [0])
