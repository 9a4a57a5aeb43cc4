"""Recorded drives in, results out, the way robot teams keep them: ROS 2 bags and MCAP files.

``bag://drive.mcap?visible=/camera/color/image_raw&infrared=/thermal/image_raw`` names one paired
source (:func:`open_bag_pair`): each topic is replayed in its recorded order and the two are paired
by capture time with the project's pairing (:class:`mrfs_edge.io.pairing.Pairer`), exactly as two
live cameras are, so a replayed drive gives the pairs the vehicle would have given.

*Which time.* By default a frame's time is its message's ``header.stamp``: the driver's capture
time, the moment the sensor saw the scene. The bag's log time is when the recorder *received* the
message, after encoding, transport and queueing, delays that differ between a colour camera and
a USB thermal camera by tens of milliseconds, as much as the pairing tolerance. A message whose
header stamp is zero (a driver that does not set it) falls back to its log time; ``stamp=log``
uses log times throughout (drivers whose clocks are not synchronised with each other).

Read: ``.mcap`` files with ``mcap`` + ``mcap-ros2-support`` (every Python from 3.8); ROS 2
``.db3`` bag folders (or one of their ``.db3`` files) and ROS 1 ``.bag`` files with ``rosbags``.
Messages: ``sensor_msgs/msg/Image`` (``rgb8 bgr8 rgba8 bgra8 mono8 8UC1 mono16 16UC1``) and
``sensor_msgs/msg/CompressedImage`` (JPEG/PNG, decoded by OpenCV). 16-bit thermal stays 16-bit,
as from a Y16 camera or a 16-bit PNG: the runtime's thermal gain control makes it 8-bit.

``bag://results.mcap`` as an output (:class:`McapSink`) writes each pair's labels (``mono8``),
fused image and composite (``rgb8``) as ``sensor_msgs/msg/Image`` topics of a new MCAP file
(ROS 2 CDR, ``ros2`` profile: Foxglove and ``ros2 bag play`` open it), stamped (header, log and
publish time) with the input pair's visible stamp to the nanosecond. It is written under a
hidden temporary name and renamed when the run ends, so a killed run leaves no file under the
final name.
"""
from __future__ import annotations

import logging
import os
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

import cv2
import numpy as np

from mrfs_edge.core.errors import ImageError, MissingExtraError, SinkError, SourceError
from mrfs_edge.io.pairing import PairedSource
from mrfs_edge.io.sinks import Rendered, Sink
from mrfs_edge.io.source import BadFrame, BadFramePolicy, Frame, Source, Stream
from mrfs_edge.io.uri import OptionValue, parse_uri

LOG = logging.getLogger(__name__)

StampKind = Literal["header", "log"]
IMAGE = "sensor_msgs/msg/Image"
COMPRESSED = "sensor_msgs/msg/CompressedImage"
# Raw encodings read: (pixel type, channels, channel order).
ENCODINGS: dict[str, tuple[type[np.unsignedinteger], int, Literal["rgb", "bgr", "grey"]]] = {
    "rgb8": (np.uint8, 3, "rgb"), "bgr8": (np.uint8, 3, "bgr"), "rgba8": (np.uint8, 4, "rgb"),
    "bgra8": (np.uint8, 4, "bgr"), "mono8": (np.uint8, 1, "grey"), "8UC1": (np.uint8, 1, "grey"),
    "mono16": (np.uint16, 1, "grey"), "16UC1": (np.uint16, 1, "grey"),
}
DEFAULT_TOPICS = {"labels": "/mrfs/labels", "fused": "/mrfs/fused", "composite": "/mrfs/composite"}

# sensor_msgs/msg/Image with its dependencies, in the concatenated form ROS 2 (rosbag2's MCAP
# storage) writes as a channel's schema, so a reader needs no ROS installation to decode it.
_RULE = "=" * 80
IMAGE_MSGDEF = f"""std_msgs/Header header
uint32 height
uint32 width
string encoding
uint8 is_bigendian
uint32 step
uint8[] data

{_RULE}
MSG: std_msgs/Header
builtin_interfaces/Time stamp
string frame_id

{_RULE}
MSG: builtin_interfaces/Time
int32 sec
uint32 nanosec
"""


# The bag extra's import names and the pip packages that provide them.
PIP_NAMES = {"mcap": "mcap", "mcap_ros2": "mcap-ros2-support", "rosbags": "rosbags"}


def _package(name: str, what: str) -> ModuleType:
    """Import one of the ``bag`` extra's packages, or say in one line how to install it."""
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError as exc:
        package = PIP_NAMES[name.split(".")[0]]
        raise MissingExtraError(f"{what} needs {package}, which is not installed: pip install '.[bag]'") from exc


# --- reading ------------------------------------------------------------------------------------

@dataclass
class TopicInfo:
    msgtype: str
    count: int


class BagReader(ABC):
    """One recording opened for reading: its topics and one topic's messages in recorded order."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.topics: dict[str, TopicInfo] = {}
        self.duration_s = 0.0

    @abstractmethod
    def messages(self, topic: str) -> Iterator[tuple[int, Any]]:
        """``(log time in ns, decoded message)`` of ``topic``, in log-time order."""

    @abstractmethod
    def close(self) -> None: ...

    def topic(self, topic: str, uri: str) -> TopicInfo:
        """The image topic's info; a missing or non-image topic names what the recording has."""
        info = self.topics.get(topic)
        if info is None:
            present = ", ".join(f"{name} ({t.msgtype})" for name, t in sorted(self.topics.items())) or "none"
            raise SourceError(f"{uri}: no topic {topic} in {self.path} (topics: {present})")
        if info.msgtype not in (IMAGE, COMPRESSED):
            raise SourceError(f"{uri}: topic {topic} holds {info.msgtype}, not images ({IMAGE} or {COMPRESSED})")
        return info


class McapBagReader(BagReader):
    """An MCAP file through ``mcap`` and ``mcap-ros2-support`` (the schema in the file decodes it).

    A file cut short (power lost while recording) has no summary at its end: it is then read
    from the start, record by record, up to its last complete one, as far as it got.
    """

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self._reader_module = _package("mcap.reader", f"reading {path}")
        self._decoders = _package("mcap_ros2.decoder", f"reading {path}").DecoderFactory()
        self._file = open(path, "rb")  # noqa: SIM115 - held open while the topic is replayed
        self._linear = False                       # no summary: records read from the start (_scan)
        self._channels: dict[int, Any] = {}
        self._schemas: dict[int, Any] = {}
        try:
            self._reader = self._reader_module.make_reader(self._file, decoder_factories=[self._decoders])
            summary = self._reader.get_summary()
        except Exception as exc:  # noqa: BLE001 - any damage at the end: read what precedes it
            LOG.debug("%s: no readable summary (%s: %s)", path, type(exc).__name__, exc)
            summary = None
        if summary is None or summary.statistics is None:
            self._scan()
            return
        counts = summary.statistics.channel_message_counts
        for channel in summary.channels.values():
            schema = summary.schemas.get(channel.schema_id)
            info = self.topics.setdefault(channel.topic, TopicInfo(schema.name if schema else "unknown", 0))
            info.count += counts.get(channel.id, 0)
        stats = summary.statistics
        self.duration_s = max(stats.message_end_time - stats.message_start_time, 0) / 1e9

    def _records(self) -> Iterator[Any]:
        """Every record from the start of the file, ending quietly at the first damaged one."""
        stream_reader = _package("mcap.stream_reader", f"reading {self.path}")
        self._file.seek(0)
        records = stream_reader.StreamReader(self._file).records
        while True:
            try:
                record = next(records)
            except StopIteration:
                return
            except Exception as exc:  # noqa: BLE001 - a cut-short file ends in a partial record of any kind
                LOG.debug("%s: records end at a damaged one (%s: %s)", self.path, type(exc).__name__, exc)
                return
            yield record

    def _scan(self) -> None:
        """Topics, counts and duration of a file without a summary, from one pass over its records."""
        records = _package("mcap.records", f"reading {self.path}")
        first = last = None
        for record in self._records():
            if isinstance(record, records.Schema):
                self._schemas[record.id] = record
            elif isinstance(record, records.Channel):
                self._channels[record.id] = record
                schema = self._schemas.get(record.schema_id)
                self.topics.setdefault(record.topic, TopicInfo(schema.name if schema else "unknown", 0))
            elif isinstance(record, records.Message) and record.channel_id in self._channels:
                self.topics[self._channels[record.channel_id].topic].count += 1
                first = record.log_time if first is None else min(first, record.log_time)
                last = record.log_time if last is None else max(last, record.log_time)
        if not self._channels:
            self._file.close()
            raise SourceError(f"{self.path}: not a readable MCAP file (no channel in it)")
        LOG.warning("%s: no summary at its end (recording cut short?): reading it up to its last complete record",
                    self.path)
        self._linear = True
        self.duration_s = (last - first) / 1e9 if first is not None and last is not None else 0.0

    def messages(self, topic: str) -> Iterator[tuple[int, Any]]:
        if not self._linear:
            for _schema, _channel, message, decoded in self._reader.iter_decoded_messages(topics=[topic],
                                                                                             log_time_order=True):
                yield message.log_time, decoded
            return
        records = _package("mcap.records", f"reading {self.path}")
        decoders: dict[int, Any] = {}
        for record in self._records():
            channel = self._channels.get(getattr(record, "channel_id", -1))
            if not isinstance(record, records.Message) or channel is None or channel.topic != topic:
                continue
            if channel.id not in decoders:
                decoders[channel.id] = self._decoders.decoder_for(channel.message_encoding,
                                                                  self._schemas.get(channel.schema_id))
            yield record.log_time, decoders[channel.id](record.data)

    def close(self) -> None:
        self._file.close()


class RosbagsReader(BagReader):
    """A ROS 2 bag folder (``.db3`` or ``.mcap`` storage) or a ROS 1 ``.bag`` through ``rosbags``.

    Bags without message definitions (ROS 2 before Iron) are decoded with the Humble type store:
    ``sensor_msgs/msg/Image`` and ``CompressedImage`` are the same in every ROS 2 release.
    """

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        highlevel = _package("rosbags.highlevel", f"reading {path}")
        typesys = _package("rosbags.typesys", f"reading {path}")
        self._reader = highlevel.AnyReader([path],
                                           default_typestore=typesys.get_typestore(typesys.Stores.ROS2_HUMBLE))
        try:
            self._reader.open()
        except Exception as exc:
            raise SourceError(f"{path}: not a readable bag ({type(exc).__name__}: {exc})") from exc
        for connection in self._reader.connections:
            info = self.topics.setdefault(connection.topic, TopicInfo(connection.msgtype, 0))
            info.count += connection.msgcount
        self.duration_s = self._reader.duration / 1e9

    def messages(self, topic: str) -> Iterator[tuple[int, Any]]:
        connections = [c for c in self._reader.connections if c.topic == topic]
        for connection, log_ns, raw in self._reader.messages(connections=connections):
            yield log_ns, self._reader.deserialize(raw, connection.msgtype)

    def close(self) -> None:
        self._reader.close()


def open_reader(path: Path, uri: str) -> BagReader:
    """The reader for a recording: ``.mcap`` files by ``mcap``, bag folders, ``.db3`` and ``.bag`` by ``rosbags``."""
    if not path.exists():
        raise SourceError(f"{uri}: no such bag file or folder: {path}")
    if path.is_file() and path.suffix.lower() == ".mcap":
        return McapBagReader(path)
    if path.is_file() and path.suffix.lower() == ".db3":
        path = path.parent           # a ROS 2 bag is its folder (metadata.yaml beside the .db3 files)
    if path.is_dir() and not (path / "metadata.yaml").is_file():
        raise SourceError(f"{uri}: {path} is a folder without metadata.yaml, not a ROS 2 bag")
    if path.is_file() and path.suffix.lower() != ".bag":
        raise SourceError(f"{uri}: {path} is not a bag (.mcap file, ROS 2 bag folder or .db3, ROS 1 .bag)")
    return RosbagsReader(path)


def stamp_ns(message: Any, log_ns: int, kind: StampKind) -> int:
    """The frame's time: the header's capture stamp, or the log time (``kind="log"``, or no stamp set)."""
    if kind == "header":
        stamp = message.header.stamp
        header_ns = int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)
        if header_ns > 0:
            return header_ns
    return int(log_ns)


def _raw_pixels(message: Any, where: str) -> tuple[np.ndarray, str]:
    """``sensor_msgs/Image`` as an array (rows of ``step`` bytes, padding dropped) and its channel order."""
    encoding = str(message.encoding)
    if encoding not in ENCODINGS:
        raise SourceError(f"{where}: unsupported image encoding '{encoding}' (supported: {' '.join(ENCODINGS)})")
    dtype, channels, order = ENCODINGS[encoding]
    height, width, step = int(message.height), int(message.width), int(message.step)
    pixel = np.dtype(dtype).newbyteorder(">" if message.is_bigendian else "<")
    row = width * channels * pixel.itemsize
    data = np.frombuffer(message.data, np.uint8)
    if height == 0 or width == 0 or step < row or data.size < height * step:
        raise ImageError(f"{where}: {encoding} image of {width}x{height}, step {step}, has {data.size} bytes of data")
    rows = data[:height * step].reshape(height, step)[:, :row].copy()     # writable, whatever held the bytes
    image = rows.view(pixel).astype(dtype, copy=False)
    return image.reshape((height, width) if channels == 1 else (height, width, channels)), order


def _compressed_pixels(message: Any, role: Stream, where: str) -> tuple[np.ndarray, str]:
    """A JPEG/PNG ``CompressedImage`` decoded as OpenCV does image files (BGR or grey, 16-bit kept)."""
    fmt = str(message.format)
    if "compresseddepth" in fmt.lower():
        raise SourceError(f"{where}: unsupported compressed format '{fmt}' (compressedDepth; use JPEG or PNG)")
    data = np.frombuffer(message.data, np.uint8)
    # Infrared is decoded to grey by the decoder itself, as read_infrared does image files.
    flags = cv2.IMREAD_UNCHANGED if role == "visible" else cv2.IMREAD_GRAYSCALE | cv2.IMREAD_ANYDEPTH
    image = cv2.imdecode(data, flags) if data.size else None
    if image is None:
        raise ImageError(f"{where}: cannot decode {data.size} bytes of '{fmt}' image data")
    return image, "grey" if image.ndim == 2 else "bgr"


def decode_image(message: Any, msgtype: str, role: Stream, where: str) -> np.ndarray:
    """A message as the role's frame: visible RGB ``H×W×3`` uint8, infrared grey ``H×W`` (8 or 16 bit)."""
    image, order = _raw_pixels(message, where) if msgtype == IMAGE else _compressed_pixels(message, role, where)
    if role == "infrared":
        if order == "grey":
            return image
        return cv2.cvtColor(image[:, :, :3], cv2.COLOR_RGB2GRAY if order == "rgb" else cv2.COLOR_BGR2GRAY)
    if image.dtype != np.uint8:
        raise SourceError(f"{where}: a {image.dtype} image on the visible topic; visible frames are 8-bit colour")
    if order == "grey":
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if order == "bgr":
        return cv2.cvtColor(image[:, :, :3], cv2.COLOR_BGR2RGB)
    return np.ascontiguousarray(image[:, :, :3])


class BagTopicSource(Source):
    """One image topic of a recording, replayed in recorded order; frames carry the recorded stamp.

    ``Frame.timestamp_s`` is that stamp in seconds (what pairing compares) and ``Frame.stamp_ns``
    the exact one (what a results MCAP writes back).
    """

    def __init__(self, uri: str, role: Stream, path: Path, topic: str, stamp: StampKind = "header") -> None:
        super().__init__(uri, role)
        self.path, self.topic, self.stamp = path, topic, stamp
        self.info: TopicInfo | None = None
        self._reader: BagReader | None = None
        self._messages: Iterator[tuple[int, Any]] = iter(())
        self._stamp_ns = 0

    def _open(self) -> None:
        self._reader = open_reader(self.path, self.uri)
        try:
            self.info = self._reader.topic(self.topic, self.uri)
        except SourceError:
            self._reader.close()
            raise
        if self.info.count > 1 and self._reader.duration_s > 0:
            self.fps = (self.info.count - 1) / self._reader.duration_s
        self._messages = self._reader.messages(self.topic)

    def _grab(self) -> np.ndarray | None:
        item = next(self._messages, None)
        if item is None or self.info is None:
            return None
        log_ns, message = item
        self._stamp_ns = stamp_ns(message, log_ns, self.stamp)
        return decode_image(message, self.info.msgtype, self.role, f"{self.uri} message {self._index}")

    def _position_s(self, index: int) -> float:
        return self._stamp_ns / 1e9

    @property
    def unread(self) -> int:
        """Messages of the topic not read (yet): those after the other topic ended are never paired."""
        return max(self.info.count - self._index, 0) if self.info is not None else 0

    def read(self) -> Frame | None:
        frame = super().read()
        if frame is not None:
            frame.stamp_ns = self._stamp_ns
        return frame

    def _release(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None


@dataclass
class _Stream:
    """One topic being paired: the frames read but not yet paired or discarded."""

    source: BagTopicSource
    frames: deque[Frame] = field(default_factory=deque)
    ended: bool = False


class BagPairedSource(PairedSource):
    """The visible and infrared topics of one recording, paired by recorded capture time.

    Each topic is read by its own reader, always the one that is behind, so both are replayed in
    step however their rates differ (30 fps colour, 9 fps thermal) and memory holds about two
    frames per topic. The pairs themselves are the live pairing's
    (:meth:`~mrfs_edge.io.pairing.Pairer.take`): within the maximum skew, closest
    first, no frame used twice, unpaired frames counted per camera and skew percentiles kept, so
    :meth:`status` and the run log read as for cameras. A replay is not live: every pair is
    processed, none dropped.
    """

    visible: BagTopicSource
    infrared: BagTopicSource

    def __init__(self, visible: BagTopicSource, infrared: BagTopicSource, tolerance_s: float = 0.02,
                 on_bad_frame: BadFramePolicy | None = None) -> None:
        super().__init__(visible, infrared, tolerance_s, on_bad_frame=on_bad_frame)

    def _read_into(self, stream: _Stream) -> None:
        try:
            frame = stream.source.read()
        except BadFrame as exc:
            self._bad_frame(exc)     # raises under "stop"; under "skip" the topic reads on
            return
        if frame is None:
            stream.ended = True
        else:
            stream.frames.append(frame)

    def _needs_frames(self, stream: _Stream, other: _Stream) -> bool:
        """``stream`` needs a frame: it holds fewer than two while ``other`` may still be paired.

        With :meth:`_drop_passed` this reads each topic up to its first frame past the other's
        next one, so the frame nearest that one is one of the two at the front of its deque: what
        :func:`~mrfs_edge.io.pairing.take_pair` needs to choose it.
        """
        return not stream.ended and len(stream.frames) < 2 and (bool(other.frames) or not other.ended)

    def _count_unpaired(self, stream: _Stream, frames: int) -> None:
        with self._ready:                # status() reads the pairer from other threads
            self.pairer.unpaired[stream.source.role] += frames
            self.unpaired = sum(self.pairer.unpaired.values())

    def _drop_passed(self, stream: _Stream, other: _Stream) -> None:
        """Discard frames that a later frame of the same topic already matches better (both before
        the other topic's next frame): what take_pair would discard, done while reading so a topic
        that is silent for a while does not fill memory with the other's frames."""
        while len(stream.frames) > 1 and other.frames and stream.frames[1].timestamp_s <= other.frames[0].timestamp_s:
            stream.frames.popleft()
            self._count_unpaired(stream, 1)

    def _file_pairs(self) -> Iterator[tuple[Frame, Frame]]:
        visible, infrared = _Stream(self.visible), _Stream(self.infrared)
        while True:
            wanted = [s for s, o in ((visible, infrared), (infrared, visible)) if self._needs_frames(s, o)]
            if wanted:
                for stream in wanted:
                    self._read_into(stream)
                self._drop_passed(visible, infrared)
                self._drop_passed(infrared, visible)
                continue
            with self._ready:
                pair = self.pairer.take(visible.frames, infrared.frames)
                self.unpaired = sum(self.pairer.unpaired.values())
            if pair is not None:
                yield pair
            elif (visible.ended and not visible.frames) or (infrared.ended and not infrared.frames):
                for stream in (visible, infrared):
                    self._count_unpaired(stream, len(stream.frames) + stream.source.unread)
                return


def open_bag_pair(uri: str, tolerance_s: float = 0.02, on_bad_frame: BadFramePolicy | None = None) -> BagPairedSource:
    """The paired source of a ``bag://`` URI (checked now: the URI's form and that the recording exists)."""
    parsed = parse_uri(uri, "source")
    if parsed.scheme != "bag":
        raise SourceError(f"{parsed.redacted}: not a bag:// URI")
    path = Path(parsed.location)
    if not path.exists():
        raise SourceError(f"{uri}: no such bag file or folder: {path}")
    base = uri.partition("?")[0]
    stamp: StampKind = "log" if parsed.options.get("stamp") == "log" else "header"
    visible, infrared = (BagTopicSource(f"{base}?{role}={parsed.options[role]}", role, path,
                                        str(parsed.options[role]), stamp) for role in ("visible", "infrared"))
    return BagPairedSource(visible, infrared, tolerance_s, on_bad_frame)


# --- writing ------------------------------------------------------------------------------------

def image_message(image: np.ndarray, encoding: Literal["rgb8", "mono8"], stamp: int, frame_id: str) -> dict[str, Any]:
    """A ``sensor_msgs/msg/Image`` as ``mcap-ros2-support`` serialises it (``data`` as bytes: no per-byte copy)."""
    image = np.ascontiguousarray(image)
    height, width = image.shape[:2]
    return {"header": {"stamp": {"sec": stamp // 1_000_000_000, "nanosec": stamp % 1_000_000_000},
                       "frame_id": frame_id},
            "height": height, "width": width, "encoding": encoding, "is_bigendian": 0,
            "step": width * (3 if encoding == "rgb8" else 1), "data": image.tobytes()}


class McapSink(Sink):
    """Labels, fused images and composites as ``sensor_msgs/msg/Image`` topics of a new MCAP file.

    Every message of a pair has the input pair's stamp (``Rendered.stamp_ns``: header stamp, log
    time and publish time), or the time of writing when the source recorded none (a live camera).
    Written to ``.<stem>.partial.mcap`` and renamed on :meth:`close`.
    """

    def __init__(self, path: str | os.PathLike[str], topics: Mapping[str, str] | None = None,
                 frame_id: str = "mrfs_edge") -> None:
        self.path = Path(path)
        self.uri = f"bag://{self.path}"
        self.topics = dict(DEFAULT_TOPICS if topics is None else topics)
        unknown = set(self.topics) - set(DEFAULT_TOPICS)
        if unknown:
            raise ValueError(f"unknown output topics {sorted(unknown)}; known: {', '.join(DEFAULT_TOPICS)}")
        self.frame_id = frame_id
        self.partial = self.path.with_name(f".{self.path.stem}.partial{self.path.suffix}")
        self.frames = 0
        self._file: Any = None
        self._writer: Any = None
        self._schema: Any = None

    def _open(self) -> None:
        writer_module = _package("mcap_ros2.writer", f"writing {self.path}")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.partial, "wb")  # noqa: SIM115 - closed in close()
        except OSError as exc:
            raise SinkError(f"{self.path}: cannot write ({exc.strerror or type(exc).__name__})") from exc
        # LZ4, not the library's default zstd: on camera images both shrink a frame about as much
        # (1.85 vs 1.80 MB for a 640x480 pair's three images), zstd at 2.6 times the time (51 vs 19 ms).
        compression = _package("mcap.writer", f"writing {self.path}").CompressionType.LZ4
        self._writer = writer_module.Writer(self._file, compression=compression)
        self._schema = self._writer.register_msgdef(IMAGE, IMAGE_MSGDEF)

    def write(self, frame: Rendered) -> None:
        if self._writer is None:
            self._open()
        stamp = frame.stamp_ns if frame.stamp_ns is not None else time.time_ns()
        labels = frame.labels
        if labels.dtype != np.uint8:
            if labels.size and (labels.min() < 0 or labels.max() > 255):
                raise SinkError(f"{self.path}: class indices outside 0-255 cannot be written as mono8 labels")
            labels = labels.astype(np.uint8)
        images = {"labels": (labels, "mono8"), "fused": (frame.fused, "rgb8"), "composite": (frame.composite, "rgb8")}
        for name, topic in self.topics.items():
            if not topic:
                continue
            image, encoding = images[name]
            self._writer.write_message(topic, self._schema, image_message(image, encoding, stamp, self.frame_id),
                                       log_time=stamp, publish_time=stamp, sequence=self.frames)
        self.frames += 1

    def close(self) -> None:
        if self._writer is None:
            return
        self._writer.finish()
        self._file.close()
        self._writer = None
        os.replace(self.partial, self.path)


def open_mcap_sink(path: str | os.PathLike[str], options: Mapping[str, OptionValue]) -> McapSink:
    """The sink of a parsed ``bag://<file>.mcap`` output URI's path and options."""
    topics = {name: str(options.get(name, default)) for name, default in DEFAULT_TOPICS.items()}
    return McapSink(path, topics, str(options.get("frame_id", "mrfs_edge")))
