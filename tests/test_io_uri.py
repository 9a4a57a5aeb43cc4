"""The one URI parser of sources and sinks: every accepted form, typed options, redaction, one-line errors."""
from __future__ import annotations

from pathlib import Path

import pytest

from mrfs_edge.core.errors import SinkError, SourceError
from mrfs_edge.io.uri import URI, parse_uri, redact

# text, role, scheme, location, options, is_video
ACCEPTED = [
    ("data/vi", "source", "file", "data/vi", {}, False),
    ("file:///abs/vi", "source", "file", "/abs/vi", {}, False),
    ("file://rel/00147D.png", "source", "file", "rel/00147D.png", {}, False),
    ("clip.MP4", "source", "file", "clip.MP4", {}, True),
    ("/dev/video0", "source", "v4l2", "/dev/video0", {}, False),
    ("/dev/video0?format=Y16&width=640&height=512&fps=30", "source", "v4l2", "/dev/video0",
     {"format": "Y16", "width": 640, "height": 512, "fps": 30.0}, False),
    ("v4l2:///dev/video1?format=GREY&fps=8.7", "source", "v4l2", "/dev/video1",
     {"format": "GREY", "fps": 8.7}, False),
    ("csi://0", "source", "csi", "0", {}, False),
    ("csi://", "source", "csi", "", {}, False),
    ("CSI://1?width=1280&height=720&fps=60&flip=2", "source", "csi", "1",
     {"width": 1280, "height": 720, "fps": 60, "flip": 2}, False),
    ("gst://videotestsrc ! video/x-raw, width=640 ! appsink", "source", "gst",
     "videotestsrc ! video/x-raw, width=640 ! appsink", {}, False),
    ("rtsp://admin:secret@10.0.0.2/stream?channel=1", "source", "rtsp",
     "rtsp://admin:secret@10.0.0.2/stream?channel=1", {}, False),     # the query is the server's
    ("rtsps://cam/live", "source", "rtsps", "rtsps://cam/live", {}, False),
    ("https://host/live.m3u8", "source", "https", "https://host/live.m3u8", {}, False),
    ("http://host/mjpeg", "source", "http", "http://host/mjpeg", {}, False),
    ("rtmp://host/app", "source", "rtmp", "rtmp://host/app", {}, False),
    ("display://0", "sink", "display", "0", {}, False),
    ("display://", "sink", "display", "0", {}, False),
    ("display", "sink", "display", "0", {}, False),
    ("null://", "sink", "null", "", {}, False),
    ("out.mp4", "sink", "file", "out.mp4", {}, True),
    ("file://runs/out.mkv?codec=MJPG", "sink", "file", "runs/out.mkv", {"codec": "MJPG"}, True),
    ("runs/frames", "sink", "file", "runs/frames", {}, False),
]


@pytest.mark.parametrize("text, role, scheme, location, options, is_video", ACCEPTED,
                         ids=[f"{a[1]}:{a[0]}" for a in ACCEPTED])
def test_every_accepted_form(text, role, scheme, location, options, is_video):
    uri = parse_uri(text, role)
    assert (uri.text, uri.scheme, uri.location, dict(uri.options)) == (text, scheme, location, options)
    assert [type(v) for v in uri.options.values()] == [type(v) for v in options.values()]   # typed, not str
    assert uri.is_video == is_video


def test_uri_is_frozen_and_its_options_read_only():
    uri = parse_uri("csi://0?width=640", "source")
    with pytest.raises(AttributeError):
        uri.scheme = "file"  # type: ignore[misc]
    with pytest.raises(TypeError):
        uri.options["width"] = 1  # type: ignore[index]
    assert uri == parse_uri("csi://0?width=640", "source") and isinstance(uri, URI)
    assert parse_uri("file://a/b", "sink").path == Path("a/b")


@pytest.mark.parametrize("text, shown", [
    ("rtsp://admin:secret@10.0.0.2/stream", "rtsp://admin:***@10.0.0.2/stream"),
    ("rtsp://admin:p@ss@10.0.0.2/s", "rtsp://admin:***@ss@10.0.0.2/s"),  # first @ ends the password it can see
    ("rtsp://admin@10.0.0.2/stream", "rtsp://admin@10.0.0.2/stream"),    # no password: nothing to hide
    ("http://host:8554/stream", "http://host:8554/stream"),              # a port is not a password
    ("/dev/video0?format=Y16", "/dev/video0?format=Y16"),
])
def test_redaction_hides_passwords_only(text, shown):
    assert redact(text) == shown
    assert parse_uri(text, "source").redacted == shown


# text, role, exact one-line message
REJECTED = [
    ("ftp://host/stream", "source", ("ftp://host/stream: unknown source scheme 'ftp://' "
      "(use a folder, image, video, v4l2://, csi://, gst:// or rtsp://)")),
    ("rtsp://u:pw@h/s", "sink", ("rtsp://u:***@h/s: 'rtsp://' names a source, not an output "
      "(use display://0, null://, a video file or a folder)")),
    ("display://0", "source", ("display://0: 'display://' names an output, not a source "
      "(use a folder, image, video, v4l2://, csi://, gst:// or rtsp://)")),
    ("null://", "source", ("null://: 'null://' names an output, not a source "
      "(use a folder, image, video, v4l2://, csi://, gst:// or rtsp://)")),
    ("csi://0", "sink", ("csi://0: 'csi://' names a source, not an output "
      "(use display://0, null://, a video file or a folder)")),
    ("webrtc://x", "sink", ("webrtc://x: unknown output scheme 'webrtc://' "
      "(use display://0, null://, a video file or a folder)")),
    ("csi://0?width=abc", "source", "csi://0?width=abc: option width='abc' is not a positive integer"),
    ("csi://0?height=-5", "source", "csi://0?height=-5: option height='-5' is not a positive integer"),
    ("csi://0?fps=29.97", "source", "csi://0?fps=29.97: option fps='29.97' is not a positive integer"),
    ("csi://0?flip=9", "source", "csi://0?flip=9: option flip='9' is not an nvvidconv flip-method from 0 to 7"),
    ("csi://0?widht=5", "source",
     "csi://0?widht=5: unknown option 'widht' for csi:// (known: width, height, fps, flip)"),
    ("csi://cam", "source", "csi://cam: csi sensor id must be a number, not 'cam' (e.g. csi://0)"),
    ("csi://0?width=1&width=2", "source", "csi://0?width=1&width=2: option 'width' given twice"),
    ("v4l2://", "source", "v4l2://: no device after v4l2:// (e.g. v4l2:///dev/video0)"),
    ("/dev/video0?format=Y16LE", "source", ("/dev/video0?format=Y16LE: option format='Y16LE' is not "
      "a FourCC of 1 to 4 letters or digits, e.g. Y16 or MJPG")),
    ("/dev/video0?fps=0", "source", "/dev/video0?fps=0: option fps='0' is not a positive number"),
    ("/dev/video0?fps=nan", "source", "/dev/video0?fps=nan: option fps='nan' is not a positive number"),
    ("/dev/video0?width=", "source", "/dev/video0?width=: option width='' is not a positive integer"),
    ("data/vi?fps=5", "source", "data/vi?fps=5: unknown option 'fps' for file:// (it takes none)"),
    ("out.mkv?codec=H.264", "sink", ("out.mkv?codec=H.264: option codec='H.264' is not "
      "a FourCC of 1 to 4 letters or digits, e.g. Y16 or MJPG")),
    ("null://?every=2", "sink", "null://?every=2: unknown option 'every' for null:// (it takes none)"),
    ("display://0?title=x", "sink", "display://0?title=x: unknown option 'title' for display:// (it takes none)"),
    ("gst://", "source", "gst://: no pipeline after gst:// (e.g. gst://videotestsrc ! videoconvert ! appsink)"),
    ("file://", "sink", "file://: no path after file://"),
    ("", "source", "'': empty source URI"),
    (" ", "sink", "' ': empty output URI"),
]


@pytest.mark.parametrize("text, role, message", REJECTED, ids=[f"{r[1]}:{r[0]}" for r in REJECTED])
def test_errors_are_one_line_naming_the_uri_and_the_fault(text, role, message):
    with pytest.raises(SourceError if role == "source" else SinkError) as exc:
        parse_uri(text, role)
    assert str(exc.value) == message and "\n" not in message


def test_error_messages_and_repr_never_show_the_password():
    assert repr(parse_uri("rtsp://admin:secret@10.0.0.2/s", "source")) == "URI('rtsp://admin:***@10.0.0.2/s')"
    with pytest.raises(SourceError) as exc:
        parse_uri("v4l2://admin:secret@x/dev?fps=abc", "source")
    assert "secret" not in str(exc.value) and "admin:***@" in str(exc.value)
