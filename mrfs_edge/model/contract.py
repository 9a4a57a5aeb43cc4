"""The contract an export of a network would carry, derived from the network and the export options.

It lives with the model (not the exporter) so the PyTorch reference runner can state the same
contract as the ONNX it is compared with, without importing the exporter.
"""
from __future__ import annotations

from mrfs_edge import __version__
from mrfs_edge.core.contract import ModelContract
from mrfs_edge.core.export_options import ExportOptions
from mrfs_edge.model.network import MRFS


def build_contract(model: MRFS, options: ExportOptions, checkpoint_sha256: str) -> ModelContract:
    cfg = model.config
    return ModelContract(
        backbone=cfg.backbone, num_classes=cfg.num_classes, decoder_embed_dim=cfg.decoder_embed_dim,
        height=options.height, width=options.width, batch=options.batch, uint8_io=options.uint8_io,
        seg_output=options.seg_output, ir_channels=options.ir_channels, dynamic=options.profile(),
        checkpoint_sha256=checkpoint_sha256, toolkit_version=__version__, opset=options.opset,
        trt_compat=options.trt_compat)
