"""Errors the toolkit reports to users as one line naming the file and what is wrong.

Every command-line script catches :class:`MrfsEdgeError`, prints ``error: <message>`` and exits
non-zero, so a user never reads a traceback for bad input.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager


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


class SinkError(MrfsEdgeError):
    """An output (display, video file, image folder) cannot be created or written."""


class ExportError(MrfsEdgeError):
    """An export failed its parity check or produced an invalid graph."""


class MissingExtraError(MrfsEdgeError):
    """A workstation step needs an optional package (torch, onnx, ...) this install lacks."""


# Packages of the ``export`` extra: what a Jetson (core install) does not have.
EXPORT_PACKAGES = ("torch", "onnx", "onnxslim", "onnxconverter_common", "matplotlib")


@contextmanager
def needs_extra(step: str, extra: str = "export", packages: Sequence[str] = EXPORT_PACKAGES) -> Iterator[None]:
    """Turn a missing heavy package inside ``step`` into one line that names the pip extra.

    Workstation steps import torch/onnx only when they run, so the target commands work on a
    core install; when such a step does run there, the user learns what to install, not a traceback.
    """
    try:
        yield
    except ModuleNotFoundError as exc:
        root = (exc.name or "").split(".")[0]
        if root not in packages:
            raise
        raise MissingExtraError(f"{step} needs {root}, which is not installed: pip install -e '.[{extra}]' "
                                "(a workstation step; on the target build from the prepared ONNX)") from exc
