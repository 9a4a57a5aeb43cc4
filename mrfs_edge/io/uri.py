"""The one parser of the URIs that name frame sources and outputs, as jetson-utils' ``URI`` class.

Sources (:func:`mrfs_edge.io.factory.open_source`) and sinks (:func:`mrfs_edge.io.sinks.open_sink`)
both start from :func:`parse_uri`, so a scheme, a path rule or an option means the same on both
sides and is checked, with a one-line error naming the URI, before any device is touched.

====================================  ========  ==================================================
form                                  role      options (query string, typed here)
====================================  ========  ==================================================
``dir``, ``image.png``, ``file://…``  both      sink videos: ``codec`` (FourCC, e.g. ``MJPG``);
                                                  a sink is a video or a folder (no extension,
                                                  or a trailing ``/``), never ``out.gif``
``clip.mp4`` (``.avi .mkv …``)        both      as above
``v4l2:///dev/video0``, ``/dev/…``    source    ``format`` (FourCC), ``width``, ``height``, ``fps``
``csi://0``                           source    ``width``, ``height``, ``fps`` (integer), ``flip`` 0–7
``gst://<pipeline>``                  source    none: the pipeline is passed verbatim (an
                                                  appsink is appended unless it ends in one)
``rtsp://user:pass@host/…`` (also     source    none: the query belongs to the server
``rtsps http https rtmp``)
``display://0`` or ``display``        sink      none
``null://``                           sink      none (counts frames, writes nothing)
``bag://drive.mcap`` (``.db3`` bag    source    ``visible``, ``infrared`` (topics, both required),
folder, ROS 1 ``.bag``)                           ``stamp`` ``header`` (default) or ``log``: one URI
                                                  names a recorded visible/infrared pair
``bag://results.mcap``                sink      ``labels``, ``fused``, ``composite`` (topics; empty:
                                                  not written), ``frame_id``
====================================  ========  ==================================================
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Callable, Literal, Tuple, Union  # run-time aliases subscript on 3.8
from urllib.parse import parse_qsl

from mrfs_edge.core.errors import MrfsEdgeError, SinkError, SourceError

Scheme = Literal["file", "v4l2", "csi", "gst", "rtsp", "rtsps", "http", "https", "rtmp", "display", "null", "bag"]
Role = Literal["source", "sink"]
OptionValue = Union[int, float, str]  # a runtime alias: `int | float` needs 3.10

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".ts", ".flv")
NETWORK_SCHEMES = ("rtsp", "rtsps", "http", "https", "rtmp")
SOURCE_SCHEMES = ("file", "v4l2", "csi", "gst") + NETWORK_SCHEMES + ("bag",)
SINK_SCHEMES = ("file", "display", "null", "bag")
BAG_EXAMPLE = "bag://drive.mcap?visible=/camera/color/image_raw&infrared=/thermal/image_raw"
SOURCE_HINT = "use a folder, image, video, v4l2://, csi://, gst:// or rtsp://"
SINK_HINT = "use display://0, null://, a video file or a folder"
NOUN = {"source": "source", "sink": "output"}


def redact(uri: str) -> str:
    """The URI with any password hidden, so error messages and logs never leak camera credentials."""
    return re.sub(r"(://[^/:@]+):[^/@]*@", r"\1:***@", uri)


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise ValueError
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0 or value == float("inf"):
        raise ValueError
    return value


def _flip(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 7:
        raise ValueError
    return value


def _topic(text: str) -> str:
    """A ROS topic name: letters, digits, ``_``, ``/`` and ``~`` (``/camera/color/image_raw``)."""
    if not re.fullmatch(r"[A-Za-z0-9_/~]+", text):
        raise ValueError
    return text


def _topic_or_off(text: str) -> str:
    """A topic name, or empty for an output topic that is not written."""
    return text if not text else _topic(text)


def _stamp(text: str) -> str:
    if text not in ("header", "log"):
        raise ValueError
    return text


def _fourcc(text: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9 ]{1,4}", text):
        raise ValueError
    return text


# An option's converter, and what its value must be (said in the error when it is not).
_Kind = Tuple[Callable[[str], OptionValue], str]  # a runtime alias: tuple[...] needs 3.9
_POSITIVE_INT: _Kind = (_positive_int, "a positive integer")
_POSITIVE_FLOAT: _Kind = (_positive_float, "a positive number")
_FLIP: _Kind = (_flip, "an nvvidconv flip-method from 0 to 7")
_FOURCC: _Kind = (_fourcc, "a FourCC of 1 to 4 letters or digits, e.g. Y16 or MJPG")
_TOPIC: _Kind = (_topic, "a ROS topic name, e.g. /camera/color/image_raw")
_OUTPUT_TOPIC: _Kind = (_topic_or_off, "a ROS topic name, or empty to leave that output out")
_FRAME_ID: _Kind = (_topic, "a ROS frame id, e.g. camera_color_optical_frame")
_STAMP: _Kind = (_stamp, "header (the driver's capture stamp) or log (the recorder's receive time)")
# The options each (scheme, role) takes; one missing here takes none.
_OPTIONS: dict[tuple[str, str], dict[str, _Kind]] = {
    ("v4l2", "source"): {"format": _FOURCC, "width": _POSITIVE_INT, "height": _POSITIVE_INT, "fps": _POSITIVE_FLOAT},
    ("csi", "source"): {"width": _POSITIVE_INT, "height": _POSITIVE_INT, "fps": _POSITIVE_INT, "flip": _FLIP},
    ("file", "sink"): {"codec": _FOURCC},
    ("bag", "source"): {"visible": _TOPIC, "infrared": _TOPIC, "stamp": _STAMP},
    ("bag", "sink"): {"labels": _OUTPUT_TOPIC, "fused": _OUTPUT_TOPIC, "composite": _OUTPUT_TOPIC,
                        "frame_id": _FRAME_ID},
}


@dataclass(frozen=True, repr=False)
class URI:
    """One parsed source or output URI.

    ``location`` is what the scheme addresses: a path (``file``), a device (``v4l2``), a sensor id
    (``csi``), a pipeline (``gst``), the whole URL (network streams, whose query is the server's),
    a display index (``display``) or nothing (``null``). ``options`` hold the query's typed values.
    """

    text: str
    scheme: Scheme
    location: str
    options: Mapping[str, OptionValue] = field(default_factory=lambda: MappingProxyType({}), hash=False)

    def __repr__(self) -> str:
        return f"URI({self.redacted!r})"         # a logged or printed URI never shows a password

    @property
    def redacted(self) -> str:
        """``text`` with any password replaced by ``***``: the form for logs and errors."""
        return redact(self.text)

    @property
    def path(self) -> Path:
        """The file or folder of a ``file`` URI."""
        return Path(self.location)

    @property
    def is_video(self) -> bool:
        """A ``file`` URI whose extension names a video container (else a folder or an image)."""
        return self.scheme == "file" and self.path.suffix.lower() in VIDEO_EXTENSIONS


def _split(text: str) -> tuple[str, str]:
    """``(scheme, rest)``; bare paths are ``file``, bare ``/dev/video*`` is ``v4l2``, ``display`` a display."""
    if "://" in text:
        scheme, _, rest = text.partition("://")
        return scheme.lower(), rest
    if text == "display":
        return "display", "0"
    if text.startswith("/dev/video"):
        return "v4l2", text
    return "file", text


def _options(shown: str, scheme: str, role: Role, query: str, error: type[MrfsEdgeError]) -> dict[str, OptionValue]:
    """The query's options, each checked by name for ``(scheme, role)`` and converted to its type."""
    known = _OPTIONS.get((scheme, role), {})
    options: dict[str, OptionValue] = {}
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name not in known:
            listed = f"known: {', '.join(known)}" if known else "it takes none"
            raise error(f"{shown}: unknown option '{name}' for {scheme}:// ({listed})")
        if name in options:
            raise error(f"{shown}: option '{name}' given twice")
        parse, expected = known[name]
        try:
            options[name] = parse(value)
        except ValueError:
            raise error(f"{shown}: option {name}={value!r} is not {expected}") from None
    return options


def _check_output_path(shown: str, location: str) -> None:
    """An output file is a video; anything else with an extension (``out.gif``, ``frame.png``) is
    refused rather than silently made a folder of that name. A folder whose name has a dot is
    written with a trailing ``/`` (``runs/v1.2/``)."""
    suffix = Path(location).suffix.lower()
    if suffix and suffix not in VIDEO_EXTENSIONS and not location.endswith("/"):
        raise SinkError(f"{shown}: unsupported output extension '{suffix}' (videos: {' '.join(VIDEO_EXTENSIONS)}; "
                        f"a folder of images: no extension, or end it with '/')")


def _check_bag(shown: str, role: Role, location: str, options: Mapping[str, OptionValue]) -> None:
    """A bag source names both topics of its pair; a bag output is one new MCAP file."""
    if not location:
        raise (SourceError if role == "source" else SinkError)(f"{shown}: no file after bag:// (e.g. {BAG_EXAMPLE})")
    if role == "source":
        missing = [name for name in ("visible", "infrared") if name not in options]
        if missing:
            raise SourceError(f"{shown}: bag:// needs the {' and '.join(missing)} topic{'s' if len(missing) > 1 else ''} "
                              f"(e.g. {BAG_EXAMPLE})")
    elif Path(location).suffix.lower() != ".mcap":
        raise SinkError(f"{shown}: a bag:// output is one MCAP file: name it <name>.mcap")


def parse_uri(text: str, role: Role) -> URI:
    """Parse a source or output URI; :class:`SourceError` / :class:`SinkError` (one line) when wrong.

    Checks the scheme against ``role`` and every option's name and value; it touches no file or
    device, so an URI that parses may still fail to open.
    """
    error: type[MrfsEdgeError] = SourceError if role == "source" else SinkError
    shown = redact(text)
    if not text.strip():
        raise error(f"'{text}': empty {NOUN[role]} URI")
    scheme, rest = _split(text)
    allowed, other = (SOURCE_SCHEMES, SINK_SCHEMES) if role == "source" else (SINK_SCHEMES, SOURCE_SCHEMES)
    hint = SOURCE_HINT if role == "source" else SINK_HINT
    if scheme not in allowed:
        if scheme in other:
            raise error(f"{shown}: '{scheme}://' names {'an output' if role == 'source' else 'a source'}, "
                        f"not {'a source' if role == 'source' else 'an output'} ({hint})")
        raise error(f"{shown}: unknown {NOUN[role]} scheme '{scheme}://' ({hint})")
    if scheme in NETWORK_SCHEMES:
        return URI(text, scheme, text)
    if scheme == "gst":
        if not rest.strip():
            raise error(f"{shown}: no pipeline after gst:// (e.g. gst://videotestsrc ! videoconvert ! appsink)")
        return URI(text, scheme, rest)
    location, _, query = rest.partition("?")
    options = MappingProxyType(_options(shown, scheme, role, query, error))
    if scheme == "csi" and location and not location.isdigit():
        raise error(f"{shown}: csi sensor id must be a number, not '{location}' (e.g. csi://0)")
    if scheme == "v4l2" and not location:
        raise error(f"{shown}: no device after v4l2:// (e.g. v4l2:///dev/video0)")
    if scheme == "file" and not location:
        raise error(f"{shown}: no path after file://")
    if scheme == "file" and role == "sink":
        _check_output_path(shown, location)
    if scheme == "bag":
        _check_bag(shown, role, location, options)
    if scheme == "display" and not location:
        location = "0"
    return URI(text, scheme, location, options)
