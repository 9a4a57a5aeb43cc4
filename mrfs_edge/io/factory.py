"""``open_source``: the source for a URI, in the spirit of jetson-utils ``videoSource::Create``.

The URI forms and their options are parsed (and checked) by :func:`mrfs_edge.io.uri.parse_uri`;
this module only maps each scheme to the source that reads it.
"""
from __future__ import annotations

import cv2

from mrfs_edge.core.errors import SourceError
from mrfs_edge.io.capture import (
    CaptureSource,
    ImageFilesSource,
    csi_pipeline,
    require_gstreamer,
    v4l2_settings,
)
from mrfs_edge.io.source import Source, Stream
from mrfs_edge.io.uri import NETWORK_SCHEMES, parse_uri


def open_source(uri: str, role: Stream = "visible", retries: int = 5, backoff_s: float = 0.5) -> Source:
    """The source for a URI (not yet opened: ``open()`` or iteration raises :class:`SourceError`).

    A malformed URI (unknown scheme, bad option) fails here, before anything is opened.
    """
    parsed = parse_uri(uri, "source")

    def live(target: str, api: int, settings: tuple[tuple[int, float], ...] = ()) -> CaptureSource:
        return CaptureSource(uri, role, target=target, live=True, api=api, settings=settings,
                             retries=retries, backoff_s=backoff_s)

    if parsed.scheme == "csi":
        require_gstreamer(uri)
        return live(csi_pipeline(parsed.location, parsed.options), cv2.CAP_GSTREAMER)
    if parsed.scheme == "gst":
        require_gstreamer(uri)
        return live(parsed.location, cv2.CAP_GSTREAMER)
    if parsed.scheme in NETWORK_SCHEMES:
        return live(parsed.location, cv2.CAP_FFMPEG)
    if parsed.scheme == "v4l2":
        return live(parsed.location, cv2.CAP_V4L2, v4l2_settings(parsed.options))
    if parsed.is_video:
        if not parsed.path.is_file():
            raise SourceError(f"{uri}: no such video file")
        return CaptureSource(uri, role, target=str(parsed.path), api=cv2.CAP_FFMPEG, live=False)
    return ImageFilesSource(uri, role, path=parsed.path)
