"""The I/O contract and self-description every exported MRFS model carries (torch-free).

An ONNX file stores it in ``metadata_props`` and an engine in its ``<engine>.json`` sidecar,
so the runtime learns input names, layouts, class names and preprocessing from the model
file itself instead of from flags a user might get wrong.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, get_args

from mrfs_edge.core.classes import class_names_for, palette_for

METADATA_KEY = "mrfs_edge.core.contract"

# "logits": float N×C×H×W scores; "labels": ArgMax inside the graph, int32 N×H×W (30× less to copy).
SegOutput = Literal["logits", "labels"]
SEG_OUTPUTS: tuple[SegOutput, ...] = get_args(SegOutput)
# ONNX shaped for a TensorRT parser generation; "8.5" decomposes LayerNorm (JetPack 5 parsers).
TrtCompat = Literal["8.5", "8.6", "10"]
TRT_COMPAT_CHOICES: tuple[TrtCompat, ...] = get_args(TrtCompat)

PREPROCESSING = ("visible: RGB (OpenCV BGR flipped), /255, no mean/std; infrared: 8-bit grey, /255, "
                 "replicated to 3 channels inside the graph; frames zero-padded (centred) to a multiple of 32")


@dataclass
class ModelContract:
    """What a model file expects and returns, plus where it came from."""

    backbone: str
    num_classes: int
    decoder_embed_dim: int
    height: int
    width: int
    batch: int = 1
    uint8_io: bool = False            # uint8 NHWC frames in, uint8 NHWC fused out
    seg_output: SegOutput = "logits"
    ir_channels: int = 1
    dynamic: dict[str, Any] | None = None   # {"batch": [min,opt,max], "height": [...], "width": [...]}
    class_names: list[str] = field(default_factory=list)
    palette: list[list[int]] = field(default_factory=list)
    preprocessing: str = PREPROCESSING
    checkpoint_sha256: str = ""
    toolkit_version: str = ""
    opset: int = 17
    trt_compat: TrtCompat | None = None
    fp32_nodes: list[str] = field(default_factory=list)  # overflow-prone ops to pin to FP32

    def __post_init__(self) -> None:
        if not self.class_names:
            self.class_names = list(class_names_for(self.num_classes))
        if not self.palette:
            self.palette = [list(c) for c in palette_for(self.num_classes)]
        if self.seg_output not in SEG_OUTPUTS:
            raise ValueError(f"seg_output must be 'logits' or 'labels', not {self.seg_output!r}")

    # Tensor names are part of the contract: runtime, calibration and engine builder use them.
    @property
    def input_names(self) -> tuple[str, str]:
        return ("visible", "infrared")

    @property
    def seg_name(self) -> str:
        return "seg_logits" if self.seg_output == "logits" else "seg_labels"

    @property
    def output_names(self) -> tuple[str, str]:
        return (self.seg_name, "fused")

    def input_shapes(self, batch: int | None = None, height: int | None = None,
                     width: int | None = None) -> dict[str, tuple[int, ...]]:
        n, h, w = batch or self.batch, height or self.height, width or self.width
        if self.uint8_io:
            return {"visible": (n, h, w, 3), "infrared": (n, h, w, self.ir_channels)}
        return {"visible": (n, 3, h, w), "infrared": (n, self.ir_channels, h, w)}

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ModelContract:
        data = json.loads(text)
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})

    def metadata(self) -> dict[str, str]:
        """``metadata_props`` entries: the full contract plus a few human-readable keys."""
        return {METADATA_KEY: self.to_json(), "mrfs_edge.variant": self.backbone,
                "mrfs_edge.core.classes": ",".join(self.class_names),
                "mrfs_edge.input_size": f"{self.height}x{self.width}",
                "mrfs_edge.preprocessing": self.preprocessing,
                "mrfs_edge.checkpoint_sha256": self.checkpoint_sha256,
                "mrfs_edge.toolkit_version": self.toolkit_version}

    @classmethod
    def from_metadata(cls, metadata: dict[str, str], source: str = "model") -> ModelContract:
        from mrfs_edge.core.errors import ModelFileError

        if METADATA_KEY not in metadata:
            raise ModelFileError(f"{source}: no mrfs-edge metadata ({METADATA_KEY}); "
                                 "export it with export/export_onnx.py")
        return cls.from_json(metadata[METADATA_KEY])
