"""Frames in and results out: image files, paired datasets, camera and video sources, sinks.

Torch-free and model-free: this layer knows pixels and files, not networks.

* :mod:`~mrfs_edge.io.uri` – the one parser of source and output URIs (schemes, typed options);
* :mod:`~mrfs_edge.io.source` – :class:`Frame` and the :class:`Source` base (reconnect, backoff);
* :mod:`~mrfs_edge.io.capture` – image-file and VideoCapture sources, pixel layouts, CSI/V4L2 setup;
* :mod:`~mrfs_edge.io.factory` – ``open_source(uri)``; :mod:`~mrfs_edge.io.pairing` – ``open_pair``;
* :mod:`~mrfs_edge.io.sinks` – ``open_sink(uri)``: display, video file, image folder, ``null://``;
* :mod:`~mrfs_edge.io.images`, :mod:`~mrfs_edge.io.pairs` – image files and paired dataset folders.
"""
from mrfs_edge.io.images import read_infrared, read_label, read_visible, write_image
from mrfs_edge.io.pairs import LAYOUTS, Pair, PairFolder, read_split

__all__ = ["LAYOUTS", "Pair", "PairFolder", "read_split", "read_visible", "read_infrared", "read_label",
           "write_image"]
