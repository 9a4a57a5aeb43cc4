"""Which TensorRT layers stay in FP32 when the rest of the engine runs in FP16 or INT8.

Two sources, used together:

* names: the exporter lists overflow-prone ONNX nodes in the contract's ``fp32_nodes``
  (:func:`mrfs_edge.export.precision.fp16_sensitive_nodes`); TensorRT's ONNX parser names
  each layer after its node, so exact name matches find them.
* structure, for what names miss (nodes the parser split or renamed): Softmax, reductions and
  8.6+'s fused LayerNorm (``NORMALIZATION``) always; and around each reduction, the arithmetic
  of a decomposed LayerNorm — the square that feeds the variance mean (overflows FP16 above
  ~256) and the subtract / add-eps / sqrt / divide up to two layers downstream of it.

Only layers whose outputs are all floating point qualify: integer shape arithmetic stays put.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from mrfs_edge.backends.trt_compat import TrtApi

if TYPE_CHECKING:
    import tensorrt

DOWNSTREAM_HOPS = 2   # x−μ, var+eps (1 hop); sqrt, divide (2 hops) of a decomposed LayerNorm


def select_fp32_layers(api: TrtApi, network: tensorrt.INetworkDefinition, node_names: Iterable[str],
                       patterns: bool = True) -> tuple[list[tensorrt.ILayer], list[str]]:
    """``(layers to pin in network order, node names that matched no layer)``."""
    layers = [network.get_layer(i) for i in range(network.num_layers)]
    wanted = list(dict.fromkeys(node_names))
    by_name = {layer.name: index for index, layer in enumerate(layers)}
    chosen = {by_name[name] for name in wanted if name in by_name}
    if patterns:
        chosen |= _pattern_layers(api, layers)
    pinned = [layers[i] for i in sorted(chosen) if api.is_float_layer(layers[i])]
    return pinned, [name for name in wanted if name not in by_name]


def _pattern_layers(api: TrtApi, layers: list[tensorrt.ILayer]) -> set[int]:
    kinds = [api.layer_kind(layer) for layer in layers]
    consumers: dict[str, list[int]] = {}
    for index, layer in enumerate(layers):
        for i in range(layer.num_inputs):
            tensor = layer.get_input(i)
            if tensor is not None:   # optional inputs are None
                consumers.setdefault(tensor.name, []).append(index)

    def next_layers(index: int) -> list[int]:
        layer = layers[index]
        return [c for i in range(layer.num_outputs) for c in consumers.get(layer.get_output(i).name, [])]

    chosen = {i for i, kind in enumerate(kinds) if kind in ("reduce", "softmax", "normalization")}
    for index, kind in enumerate(kinds):   # the square feeding a variance mean
        if kind == "arithmetic" and any(kinds[c] == "reduce" for c in next_layers(index)):
            chosen.add(index)
    frontier = [i for i, kind in enumerate(kinds) if kind == "reduce"]
    for _ in range(DOWNSTREAM_HOPS):
        frontier = [c for i in frontier for c in next_layers(i) if kinds[c] == "arithmetic"]
        chosen.update(frontier)
    return chosen
