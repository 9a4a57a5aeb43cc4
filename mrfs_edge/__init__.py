"""mrfs-edge: deploy MRFS infrared/visible fusion and segmentation networks with TensorRT.

The package root imports nothing heavy: ``mrfs_edge.data``, ``mrfs_edge.metrics`` and
``mrfs_edge.runtime`` work without PyTorch; ``mrfs_edge.model`` and the exporters need it.
"""
__version__ = "0.1.0"
