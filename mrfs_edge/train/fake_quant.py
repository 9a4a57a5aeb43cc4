"""Fake INT8 quantisation for quantisation-aware training, placed as the Q/DQ graph places it.

Every ``nn.Conv2d`` and ``nn.Linear`` is replaced by a version that quantises its input per
tensor and its weight per output channel (symmetric INT8, zero point 0), exactly the Q/DQ pairs
:mod:`mrfs_edge.calibration.qdq` puts in front of Conv/MatMul/Gemm nodes. Rounding uses
``torch.fake_quantize_per_{tensor,channel}_affine``: their backward is the clipped
straight-through estimator, and the TorchScript exporter writes each of them as one
QuantizeLinear/DequantizeLinear pair, so the trained network exports as the Q/DQ graph
TensorRT builds without any graph surgery.

A Linear is computed as ``x @ Wᵀ + b`` with the quantiser on ``Wᵀ`` (axis 1): the exported
MatMul then reads its weight straight from a DequantizeLinear on its output axis, the layout
ONNX Runtime's quantiser and TensorRT use, instead of a Transpose between the two.

Written here rather than taken from NVIDIA ModelOpt: ``modelopt.torch`` 0.47.0 does not import
on a clean install (``modelopt.torch.opt.plugins`` imports ``huggingface_hub`` unguarded, which
the wheel does not declare), and CI installs only ``.[export,dev]``; this module needs nothing
beyond PyTorch, so the QAT tests run everywhere the training tests run.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from mrfs_edge.model.deploy_form import DeploySegHead
from mrfs_edge.model.heads import resize
from mrfs_edge.model.mit import ReducedKeyValueAttention
from mrfs_edge.train.qat_options import CALIB_METHODS, PERCENTILE, CalibMethod

LOG = logging.getLogger(__name__)

QUANT_MAX = 127
# torch.quantile refuses inputs above 2**24 elements; larger activations are subsampled evenly.
_QUANTILE_LIMIT = 1 << 24


class TensorQuantizer(nn.Module):
    """Symmetric INT8 fake quantisation of one tensor: per tensor, or per channel along ``axis``.

    ``amax`` (the clipping range) comes from calibration for activations and from the weight
    itself, at every step, for weights (``dynamic``), so the weight scales follow training as
    TensorRT will recompute them from the exported float weights.
    """

    def __init__(self, axis: int | None = None, dynamic: bool = False) -> None:
        super().__init__()
        self.axis = axis
        self.dynamic = dynamic
        self.calibrating: CalibMethod | None = None
        self.register_buffer("amax", torch.tensor(float("nan")))
        self._samples: list[Tensor] = []

    def _range(self, x: Tensor) -> Tensor:
        if self.axis is None:
            return x.detach().abs().amax()
        dims = [d for d in range(x.ndim) if d != self.axis % x.ndim]
        return x.detach().abs().amax(dim=dims)

    def _observe(self, x: Tensor) -> None:
        if self.calibrating == "max":
            self._samples.append(self._range(x))
            return
        values = x.detach().abs().flatten()
        if values.numel() > _QUANTILE_LIMIT:
            values = values[:: -(-values.numel() // _QUANTILE_LIMIT)]
        self._samples.append(torch.quantile(values.float(), PERCENTILE / 100.0))

    def finish_calibration(self) -> None:
        """Max calibration keeps the largest |x| seen; percentile the mean of each batch's percentile."""
        if not self._samples:
            raise RuntimeError("a quantizer saw no data during calibration")
        stacked = torch.stack(self._samples)
        amax = stacked.amax(dim=0) if self.calibrating == "max" else stacked.mean(dim=0)
        self.amax = amax.clamp_min(1e-8).to(self.amax.device)
        self._samples, self.calibrating = [], None

    def forward(self, x: Tensor) -> Tensor:
        if self.calibrating is not None:
            self._observe(x)
            return x
        amax = self._range(x).clamp_min(1e-8) if self.dynamic else self.amax
        if not bool(torch.isfinite(amax).all()):
            raise RuntimeError("quantizer used before calibration")
        scale = (amax / QUANT_MAX).float()
        if self.axis is None:
            zero = torch.zeros((), dtype=torch.int32, device=x.device)
            return torch.fake_quantize_per_tensor_affine(x, scale, zero, -128, QUANT_MAX)
        zero = torch.zeros(scale.shape, dtype=torch.int32, device=x.device)
        return torch.fake_quantize_per_channel_affine(x, scale, zero, self.axis % x.ndim, -128, QUANT_MAX)

    def extra_repr(self) -> str:
        kind = "per tensor" if self.axis is None else f"per channel (axis {self.axis})"
        return f"{kind}, {'dynamic' if self.dynamic else 'calibrated'}"


class QuantConv2d(nn.Conv2d):
    """``nn.Conv2d`` reading an INT8 input and INT8 weights (per output channel, axis 0)."""

    input_quantizer: TensorQuantizer
    weight_quantizer: TensorQuantizer

    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(self.input_quantizer(x), self.weight_quantizer(self.weight), self.bias)


class QuantLinear(nn.Linear):
    """``nn.Linear`` as ``q(x) @ q(Wᵀ) + b``, the weight quantised per output channel (axis 1 of Wᵀ)."""

    input_quantizer: TensorQuantizer
    weight_quantizer: TensorQuantizer

    def forward(self, x: Tensor) -> Tensor:
        out = torch.matmul(self.input_quantizer(x), self.weight_quantizer(self.weight.t()))
        return out + self.bias if self.bias is not None else out


_REPLACEMENTS = (nn.Conv2d, nn.Linear)


def _quantized_copy(layer: nn.Module) -> nn.Module:
    """The same layer, holding the same parameter objects, with quantizers (the optimiser's view is unchanged)."""
    if isinstance(layer, nn.Conv2d):
        quantized: nn.Module = QuantConv2d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride,
                                           layer.padding, layer.dilation, layer.groups, layer.bias is not None,
                                           layer.padding_mode, device="meta")
        axis = 0
    else:
        quantized = QuantLinear(layer.in_features, layer.out_features, layer.bias is not None, device="meta")
        axis = 1
    quantized.weight, quantized.bias = layer.weight, layer.bias
    quantized.train(layer.training)
    quantized.input_quantizer = TensorQuantizer().to(layer.weight.device)
    quantized.weight_quantizer = TensorQuantizer(axis=axis, dynamic=True).to(layer.weight.device)
    return quantized


class QuantDeploySegHead(DeploySegHead):
    """The deploy form's segmentation head with the residual read of its first sum quantised.

    ``linear_c1(c1) + resize(linear_c2(c2))`` is an Add fed directly by a Conv: TensorRT fuses it
    into that Conv's INT8 kernel only when the other input is INT8, so the Q/DQ graph quantises
    it (:func:`mrfs_edge.calibration.qdq.residual_adds`) and the fine-tuned network must too.
    """

    residual_quantizer: TensorQuantizer

    def forward(self, features: Sequence[Tensor]) -> Tensor:
        c1, c2, c3, c4 = features
        size = c1.shape[2:]
        fused = (self.linear_c1(c1) + self.residual_quantizer(resize(self.linear_c2(c2), size))
                 + resize(self.linear_c3(c3), size) + resize(self.linear_c4(c4), size))
        return self.linear_pred(torch.relu(fused))


def insert_fake_quant(model: nn.Module) -> list[str]:
    """Replace every Conv2d/Linear of ``model`` in place; returns the names of the replaced layers.

    Exact types only: a subclass may compute something else with its weight. The deploy form's
    segmentation head also gets its residual quantizer (:class:`QuantDeploySegHead`).
    """
    replaced = []
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if type(child) in _REPLACEMENTS:
                setattr(module, child_name, _quantized_copy(child))
                replaced.append(f"{name}.{child_name}" if name else child_name)
    for module in model.modules():
        if type(module) is DeploySegHead:
            module.__class__ = QuantDeploySegHead
            module.residual_quantizer = TensorQuantizer().to(module.linear_c1.weight.device)
    LOG.debug(f"fake quantisation on {len(replaced)} weighted layers")
    return replaced


class AttentionProducts(nn.Module):
    """The four INT8 inputs of one attention's two products: ``q·kᵀ`` and ``softmax(·)·v``.

    The products are computed inside :func:`mrfs_edge.model.mit.multi_head_attention`, a function
    every attention module calls, not a module that could be swapped; so while the attention
    module runs, a :class:`~torch.overrides.TorchFunctionMode` quantises both operands of each
    ``a @ b`` it evaluates (the operator form: its projections, :class:`QuantLinear`, use
    ``torch.matmul`` and are left alone). The first product gets quantizers 0 and 1, the second
    2 and 3, in the order the function computes them; that is also where the Q/DQ graph's
    ``--quantize-attention`` puts its pairs (both inputs of every MatMul of two activations).
    """

    def __init__(self) -> None:
        super().__init__()
        self.operands = nn.ModuleList(TensorQuantizer() for _ in range(4))
        self.calls = 0


class _QuantizedProducts(TorchFunctionMode):
    def __init__(self, products: AttentionProducts) -> None:
        super().__init__()
        self.products = products

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is Tensor.matmul and self.products.calls < 2:   # how `a @ b` reaches a mode
            first = 2 * self.products.calls
            self.products.calls += 1
            a, b = args
            args = (self.products.operands[first](a), self.products.operands[first + 1](b))
        return func(*args, **kwargs)


def insert_attention_quant(model: nn.Module) -> list[str]:
    """Quantise both operands of every attention product of ``model``; returns the attention modules' names."""
    names = []
    for name, module in model.named_modules():
        if not isinstance(module, ReducedKeyValueAttention):
            continue
        module.products = AttentionProducts().to(next(module.parameters()).device)
        module.register_forward_pre_hook(_enter_products)
        module.register_forward_hook(_leave_products)
        names.append(name)
    return names


def _enter_products(module: nn.Module, _inputs: object) -> None:
    module.products.calls = 0
    module._products_mode = _QuantizedProducts(module.products)
    module._products_mode.__enter__()


def _leave_products(module: nn.Module, _inputs: object, _output: object) -> None:
    module._products_mode.__exit__(None, None, None)
    if module.products.calls != 2:
        raise RuntimeError(f"{type(module).__name__}: {module.products.calls} attention products seen, expected 2")


def quantized_layers(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """``(name, layer)`` of every fake-quantised weighted layer."""
    return ((n, m) for n, m in model.named_modules() if isinstance(m, (QuantConv2d, QuantLinear)))


def unquantized_layers(model: nn.Module) -> list[str]:
    """Weighted layers left in float (empty after :func:`insert_fake_quant`)."""
    return [n for n, m in model.named_modules() if type(m) in _REPLACEMENTS]


@contextmanager
def frozen_weight_ranges(model: nn.Module) -> Iterator[nn.Module]:
    """Within the block, weight ranges are constants (buffers) taken from the current weights.

    The exporter folds constants only: with the ranges fixed, every scale and zero point in the
    graph is an initializer and each weight stays a float initializer behind its Q/DQ pair, the
    form TensorRT parses. The numbers are those of the dynamic ranges, so outputs do not change.
    """
    frozen = []
    with torch.no_grad():
        for _, layer in quantized_layers(model):
            quantizer = layer.weight_quantizer
            if quantizer.dynamic:
                weight = layer.weight
                quantizer.amax = weight.abs().amax(dim=list(range(1, weight.ndim))).clamp_min(1e-8)
                quantizer.dynamic = False
                frozen.append(quantizer)
    try:
        yield model
    finally:
        for quantizer in frozen:
            quantizer.dynamic = True
            quantizer.amax = torch.tensor(float("nan"), device=quantizer.amax.device)


def quantizers(model: nn.Module) -> Iterator[TensorQuantizer]:
    return (m for m in model.modules() if isinstance(m, TensorQuantizer))


@torch.no_grad()
def calibrate(model: nn.Module, batches: Iterable[tuple[Tensor, Tensor]], method: CalibMethod = "max") -> int:
    """Set every activation quantizer's range from ``batches`` of ``(visible, infrared)``; returns the count.

    The model runs in eval mode in float (quantizers only observe), so each range is that of the
    FP32 network's activations, as post-training calibration of the ONNX graph measures them.
    """
    if method not in CALIB_METHODS:
        raise ValueError(f"calibration method must be one of {', '.join(CALIB_METHODS)}")
    static = [q for q in quantizers(model) if not q.dynamic]
    for q in static:
        q.calibrating = method
    was_training = model.training
    model.eval()
    count = 0
    try:
        for visible, infrared in batches:
            model(visible, infrared)
            count += 1
    finally:
        model.train(was_training)
    if not count:
        for q in static:
            q.calibrating, q._samples = None, []
        raise ValueError("calibration needs at least one pair")
    for q in static:
        q.finish_calibration()
    return count

