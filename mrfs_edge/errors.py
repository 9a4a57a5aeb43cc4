"""Errors the toolkit reports to users as one line naming the file and what is wrong.

Every command-line script catches :class:`MrfsEdgeError`, prints ``error: <message>`` and exits
non-zero, so a user never reads a traceback for bad input.
"""
from __future__ import annotations


class MrfsEdgeError(Exception):
    """Base of every user-facing error; ``str()`` is the one-line message."""


class CheckpointError(MrfsEdgeError):
    """A checkpoint file is missing, unreadable, truncated or of another network."""


class ImageError(MrfsEdgeError):
    """An image is missing, unreadable, or does not fit its partner."""


class DatasetError(MrfsEdgeError):
    """A paired folder is laid out in a way the readers do not understand."""


class ModelFileError(MrfsEdgeError):
    """An ONNX model or TensorRT engine cannot be used (corrupt, stale, wrong machine)."""


class SourceError(MrfsEdgeError):
    """A camera or video source cannot be opened or stopped delivering frames."""


class ExportError(MrfsEdgeError):
    """An export failed its parity check or produced an invalid graph."""
