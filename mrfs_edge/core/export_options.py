"""Export options, in the style of trtexec/Polygraphy flags (torch-free)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from mrfs_edge.core.contract import TRT_COMPAT_CHOICES, SegOutput, TrtCompat

# Which axes are dynamic: the batch, height and width ("hw"), or all three.
Dynamic = Literal["batch", "hw", "both"]
DYNAMIC_CHOICES: tuple[Dynamic, ...] = get_args(Dynamic)


def parse_shape(text: str) -> tuple[int, int, int]:
    """``"1x480x640"`` → ``(1, 480, 640)`` (batch × height × width)."""
    try:
        n, h, w = (int(v) for v in text.lower().split("x"))
    except ValueError as exc:
        raise ValueError(f"shape {text!r} must look like NxHxW, e.g. 1x480x640") from exc
    return n, h, w


@dataclass
class ExportOptions:
    height: int = 480
    width: int = 640
    batch: int = 1
    opset: int = 17
    dynamic: Dynamic | None = None
    min_shape: tuple[int, int, int] | None = None
    opt_shape: tuple[int, int, int] | None = None
    max_shape: tuple[int, int, int] | None = None
    seg_output: SegOutput = "logits"
    uint8_io: bool = False
    ir_channels: Literal[1, 3] = 1
    trt_compat: TrtCompat | None = None      # "8.5" also lowers the opset to 16 (no LayerNormalization)
    simplify: bool = True
    rewrite: bool = True                     # export the exact deploy form (model.deploy_form); False: the literal graph
    tolerance: float = 1e-3                  # max |Δ| allowed between ONNX Runtime and PyTorch
    min_agreement: float = 0.999             # argmax agreement floor of the parity check
    parity_pairs: int = 4                    # bundled/held-out pairs used by the parity check

    def __post_init__(self) -> None:
        for name, value in (("height", self.height), ("width", self.width)):
            if value <= 0 or value % 32:
                padded = max(32, -(-value // 32) * 32)
                raise ValueError(f"--{name} {value} is not a positive multiple of 32 (the encoder downsamples "
                                 f"by 32); export at {padded}: the runtime zero-pads smaller frames to it, "
                                 "as the authors' evaluation does")
        if self.dynamic is not None and self.dynamic not in DYNAMIC_CHOICES:
            raise ValueError(f"--dynamic must be one of {', '.join(DYNAMIC_CHOICES)}")
        if self.ir_channels not in (1, 3):
            raise ValueError("--ir-channels must be 1 or 3")
        if self.trt_compat is not None and self.trt_compat not in TRT_COMPAT_CHOICES:
            raise ValueError(f"--trt-compat must be one of {', '.join(TRT_COMPAT_CHOICES)}")
        if self.trt_compat == "8.5" and self.opset >= 17:
            self.opset = 16  # opset 17 would let the exporter emit LayerNormalization
        for shape in (self.min_shape, self.opt_shape, self.max_shape):
            if shape and (shape[1] % 32 or shape[2] % 32):
                raise ValueError(f"dynamic shape {shape} must have H and W multiples of 32")

    @property
    def decompose_layernorm(self) -> bool:
        return self.trt_compat == "8.5"

    def profile(self) -> dict[str, list[int]] | None:
        """Min/opt/max per dynamic axis, recorded in the metadata for the engine builder."""
        if not self.dynamic:
            return None
        static = (self.batch, self.height, self.width)
        opt = self.opt_shape or static
        low = self.min_shape or (1, max(32, self.height // 2 // 32 * 32), max(32, self.width // 2 // 32 * 32))
        high = self.max_shape or (max(4, self.batch), self.height, self.width)
        axes = {"batch": 0, "height": 1, "width": 2}
        wanted = {"batch": ("batch",), "hw": ("height", "width"), "both": ("batch", "height", "width")}[self.dynamic]
        profile = {}
        for name in wanted:
            i = axes[name]
            triple = [low[i], opt[i], high[i]]
            if not triple[0] <= triple[1] <= triple[2]:
                raise ValueError(f"dynamic {name}: need min ≤ opt ≤ max, got {triple}")
            profile[name] = triple
        return profile
