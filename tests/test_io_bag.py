"""ROS 2 bags and MCAP files in and out (issue 15, part 6).

Every recording here is written by the libraries themselves (``mcap-ros2-support`` for MCAP,
``rosbags`` for a ROS 2 ``.db3`` bag and a ROS 1 ``.bag``) and every result is read back with them:
a 30 fps colour topic and a 9 fps 16-bit thermal topic replay into pairs within the tolerance,
each thermal frame with its nearest colour frame and no frame twice; the runtime command writes
one message per pair on each output topic, stamped with the pair's capture time.
"""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import cv2
import numpy as np
import pytest

from mrfs_edge.core.errors import ImageError, SinkError, SourceError
from mrfs_edge.io.bag import IMAGE_MSGDEF, McapSink, decode_image, open_bag_pair
from mrfs_edge.io.sinks import Rendered

pytest.importorskip("mcap_ros2", reason="the bag extra (mcap, mcap-ros2-support) is not installed")
from mcap.reader import make_reader
from mcap_ros2.decoder import DecoderFactory
from mcap_ros2.writer import Writer

T0 = 1_700_000_000_000_000_000            # ns since the epoch: a real drive's magnitude (float s loses ns here)
VIS_FPS, IR_FPS, SECONDS = 30, 9, 2
VIS_STAMPS = [T0 + round(k * 1e9 / VIS_FPS) for k in range(VIS_FPS * SECONDS)]
IR_STAMPS = [T0 + 7_000_000 + round(j * 1e9 / IR_FPS) for j in range(IR_FPS * SECONDS)]
VIS_LATENCY, IR_LATENCY = 5_000_000, 45_000_000     # recorder receive time - capture time
H, W = 48, 64
TOLERANCE_S = 0.02
VIS, IR = "/camera/color/image_raw", "/thermal/image_raw"
RULE = "=" * 80
COMPRESSED_MSGDEF = IMAGE_MSGDEF.replace(
    "uint32 height\nuint32 width\nstring encoding\nuint8 is_bigendian\nuint32 step\nuint8[] data\n",
    "string format\nuint8[] data\n")


def header(stamp: int) -> dict[str, Any]:
    return {"stamp": {"sec": stamp // 10**9, "nanosec": stamp % 10**9}, "frame_id": "cam"}


def raw(image: np.ndarray, encoding: str, stamp: int) -> dict[str, Any]:
    channels = 1 if image.ndim == 2 else image.shape[2]
    return {"header": header(stamp), "height": image.shape[0], "width": image.shape[1], "encoding": encoding,
            "is_bigendian": 0, "step": image.shape[1] * channels * image.itemsize, "data": image.tobytes()}


def visible_image(k: int) -> np.ndarray:
    """Frame ``k`` of the colour topic: its index in every pixel's red channel, so a pair says which it is."""
    image = np.zeros((H, W, 3), np.uint8)
    image[..., 0], image[..., 1] = k, 200
    return image


def write_mcap(path: Path, visible: str = "rgb8", infrared: str = "mono16", chunk_size: int = 1 << 20,
               spoil: int | None = None, vis_stamps: list[int] = VIS_STAMPS, ir_stamps: list[int] = IR_STAMPS) -> Path:
    """A drive: 30 fps colour (raw ``visible`` encoding or ``jpeg``; frame ``spoil``'s JPEG replaced by
    garbage) and 9 fps thermal, in log-time order."""
    messages = []
    for k, stamp in enumerate(vis_stamps):
        image = visible_image(k)
        if visible == "jpeg":
            jpeg = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))[1].tobytes()
            body = {"header": header(stamp), "format": "jpeg", "data": b"\xff\xd8garbage" if k == spoil else jpeg}
        else:
            body = raw(image[..., ::-1] if visible == "bgr8" else image, visible, stamp)
        messages.append((stamp + VIS_LATENCY, VIS, "jpeg" if visible == "jpeg" else "raw", body))
    for j, stamp in enumerate(ir_stamps):
        value = 1000 + j if infrared == "mono16" else j
        image = np.full((H, W), value, np.uint16 if infrared == "mono16" else np.uint8)
        messages.append((stamp + IR_LATENCY, IR, "raw", raw(image, infrared, stamp)))
    with open(path, "wb") as stream:
        writer = Writer(stream, chunk_size=chunk_size)
        schemas = {"raw": writer.register_msgdef("sensor_msgs/msg/Image", IMAGE_MSGDEF),
                   "jpeg": writer.register_msgdef("sensor_msgs/msg/CompressedImage", COMPRESSED_MSGDEF)}
        for log_time, topic, kind, body in sorted(messages, key=lambda m: m[0]):
            writer.write_message(topic, schemas[kind], body, log_time=log_time, publish_time=log_time)
        writer.finish()
    return path


def identify(pair: tuple[Any, Any]) -> tuple[int, int]:
    visible, infrared = pair
    return int(visible.image[0, 0, 0]), int(infrared.image[0, 0]) - (1000 if infrared.image.dtype == np.uint16 else 0)


def nearest_pairs(vis: list[int], ir: list[int]) -> list[tuple[int, int]]:
    """What pairing must give here: each thermal frame with its nearest colour frame (all within 16.7 ms)."""
    return [(min(range(len(vis)), key=lambda k: abs(vis[k] - t)), j) for j, t in enumerate(ir)]


@pytest.fixture(scope="module")
def drive(tmp_path_factory) -> Path:
    return write_mcap(tmp_path_factory.mktemp("bags") / "drive.mcap")


def pairs_of(uri: str) -> list[tuple[Any, Any]]:
    return list(open_bag_pair(uri, TOLERANCE_S))


def check_pairs(pairs: list[tuple[Any, Any]], vis: list[int], ir: list[int]) -> None:
    ids = [identify(p) for p in pairs]
    assert ids == nearest_pairs(vis, ir)
    assert len({k for k, _ in ids}) == len(ids) == len({j for _, j in ids}) == len(ir)
    for (visible, infrared), (k, j) in zip(pairs, ids):
        assert visible.stamp_ns == vis[k] and infrared.stamp_ns == ir[j]
        assert abs(visible.stamp_ns - infrared.stamp_ns) <= TOLERANCE_S * 1e9


def test_mcap_replays_30_and_9_fps_topics_into_pairs_by_header_stamp(drive: Path) -> None:
    source = open_bag_pair(f"bag://{drive}?visible={VIS}&infrared={IR}", TOLERANCE_S)
    pairs = list(source)
    check_pairs(pairs, VIS_STAMPS, IR_STAMPS)
    status = source.status()           # as the run log and status line read it for cameras
    assert status.pairs == len(IR_STAMPS) and source.unpaired == len(VIS_STAMPS) - len(IR_STAMPS)
    assert status.unpaired == {"visible": len(VIS_STAMPS) - len(IR_STAMPS), "infrared": 0}
    skews = [abs(v.stamp_ns - i.stamp_ns) / 1e6 for v, i in pairs]
    assert status.skew_ms is not None and status.skew_ms["max"] == pytest.approx(max(skews), abs=0.01)
    assert not status.paused
    visible, infrared = pairs[0]
    assert visible.image.shape == (H, W, 3) and visible.image.dtype == np.uint8
    assert infrared.image.shape == (H, W) and infrared.image.dtype == np.uint16      # for the thermal AGC
    assert visible.image.flags.writeable and infrared.image.flags.writeable


def test_a_thermal_frame_pairs_with_the_nearer_colour_frame_read_after_it(tmp_path: Path) -> None:
    """Colour at 0, 33, 67, 100 and 133 ms, thermal at 118 ms: 100 is within the tolerance (18 ms)
    but 133 is nearer (15 ms); the replay must read 133 before it pairs."""
    ms = 1_000_000
    vis = [T0 + round(k * 1e9 / 30) for k in range(5)]
    path = write_mcap(tmp_path / "one.mcap", vis_stamps=vis, ir_stamps=[T0 + 118 * ms])
    assert [identify(p) for p in pairs_of(f"bag://{path}?visible={VIS}&infrared={IR}")] == [(4, 0)]


def test_stamp_log_pairs_by_the_recorders_receive_time(drive: Path) -> None:
    """Thermal arrives 40 ms later than colour: by log time its pairs shift by about one colour frame."""
    pairs = pairs_of(f"bag://{drive}?visible={VIS}&infrared={IR}&stamp=log")
    vis_log = [s + VIS_LATENCY for s in VIS_STAMPS]
    ir_log = [s + IR_LATENCY for s in IR_STAMPS]
    check_pairs(pairs, vis_log, ir_log)
    assert [identify(p) for p in pairs] != nearest_pairs(VIS_STAMPS, IR_STAMPS)


def test_compressed_visible_and_8_bit_thermal(tmp_path: Path) -> None:
    path = write_mcap(tmp_path / "jpeg.mcap", visible="jpeg", infrared="mono8")
    pairs = list(open_bag_pair(f"bag://{path}?visible={VIS}&infrared={IR}", TOLERANCE_S))
    assert len(pairs) == len(IR_STAMPS)
    visible, infrared = pairs[3]
    assert visible.image.shape == (H, W, 3) and infrared.image.dtype == np.uint8
    k, j = nearest_pairs(VIS_STAMPS, IR_STAMPS)[3]
    assert abs(int(visible.image[..., 0].mean()) - k) <= 3 and abs(int(visible.image[..., 1].mean()) - 200) <= 3
    assert int(infrared.image[0, 0]) == j


def message(image: np.ndarray, encoding: str, step: int | None = None, bigendian: bool = False) -> SimpleNamespace:
    data = image.astype(image.dtype.newbyteorder(">")).tobytes() if bigendian else image.tobytes()
    row = image.shape[1] * (1 if image.ndim == 2 else image.shape[2]) * image.itemsize
    if step is not None:        # rows padded to ``step`` bytes, as some drivers align them
        data = b"".join(data[r * row:(r + 1) * row] + b"\xff" * (step - row) for r in range(image.shape[0]))
    return SimpleNamespace(height=image.shape[0], width=image.shape[1], encoding=encoding, is_bigendian=int(bigendian),
                           step=step or row, data=data)


def test_raw_encodings_decode_to_the_roles_layouts() -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    grey16 = np.random.default_rng(1).integers(0, 65536, (5, 7), dtype=np.uint16)
    image = "sensor_msgs/msg/Image"
    assert np.array_equal(decode_image(message(rgb, "rgb8"), image, "visible", "t"), rgb)
    assert np.array_equal(decode_image(message(rgb[..., ::-1].copy(), "bgr8"), image, "visible", "t"), rgb)
    rgba = np.dstack([rgb, np.full((5, 7), 9, np.uint8)])
    assert np.array_equal(decode_image(message(rgba, "rgba8", step=32), image, "visible", "t"), rgb)
    grey = decode_image(message(rgb[..., 0].copy(), "mono8"), image, "visible", "t")
    assert grey.shape == (5, 7, 3) and np.array_equal(grey[..., 2], rgb[..., 0])
    for encoding in ("mono16", "16UC1"):
        for bigendian in (False, True):
            thermal = decode_image(message(grey16, encoding, step=16, bigendian=bigendian), image, "infrared", "t")
            assert thermal.dtype == np.uint16 and np.array_equal(thermal, grey16)
    assert np.array_equal(decode_image(message(rgb, "rgb8"), image, "infrared", "t"),
                          cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))


def test_compressed_16_bit_png_thermal_stays_16_bit() -> None:
    grey16 = np.random.default_rng(2).integers(0, 65536, (6, 9), dtype=np.uint16)
    png = SimpleNamespace(format="mono16; png compressed", data=cv2.imencode(".png", grey16)[1].tobytes())
    thermal = decode_image(png, "sensor_msgs/msg/CompressedImage", "infrared", "t")
    assert thermal.dtype == np.uint16 and np.array_equal(thermal, grey16)
    colour = np.random.default_rng(3).integers(0, 256, (6, 9, 3), dtype=np.uint8)
    png = SimpleNamespace(format="bgr8; png compressed bgr8", data=cv2.imencode(".png", colour)[1].tobytes())
    assert np.array_equal(decode_image(png, "sensor_msgs/msg/CompressedImage", "visible", "t"), colour[..., ::-1])
    assert decode_image(png, "sensor_msgs/msg/CompressedImage", "infrared", "t").shape == (6, 9)
    depth = SimpleNamespace(format="16UC1; compressedDepth png", data=b"\0" * 12)
    with pytest.raises(SourceError, match="unsupported compressed format '16UC1; compressedDepth png'"):
        decode_image(depth, "sensor_msgs/msg/CompressedImage", "infrared", "t")


def test_bad_encodings_and_data_are_one_line_errors() -> None:
    image = "sensor_msgs/msg/Image"
    with pytest.raises(SourceError, match=r"t: unsupported image encoding 'yuv422' \(supported: rgb8 bgr8"):
        decode_image(message(np.zeros((2, 2, 2), np.uint8), "yuv422"), image, "visible", "t")
    with pytest.raises(SourceError, match="uint16 image on the visible topic"):
        decode_image(message(np.zeros((2, 2), np.uint16), "mono16"), image, "visible", "t")
    short = message(np.zeros((4, 4, 3), np.uint8), "rgb8")
    short.data = short.data[:-1]
    with pytest.raises(ImageError, match="rgb8 image of 4x4, step 12, has 47 bytes"):
        decode_image(short, image, "visible", "t")
    jpeg = SimpleNamespace(format="jpeg", data=b"not a jpeg")
    with pytest.raises(ImageError, match="cannot decode 10 bytes of 'jpeg'"):
        decode_image(jpeg, "sensor_msgs/msg/CompressedImage", "visible", "t")


def test_missing_file_and_topic_name_what_is_there(drive: Path, tmp_path: Path) -> None:
    from mrfs_edge.io.factory import open_source

    with pytest.raises(SourceError, match="bag:// names a visible/infrared pair, not one stream: give it as "
                                          "runtime/run.py --pair"):
        open_source(f"bag://{drive}?visible={VIS}&infrared={IR}", "visible")
    with pytest.raises(SourceError, match="no such bag file or folder"):
        open_bag_pair(f"bag://{tmp_path}/none.mcap?visible={VIS}&infrared={IR}")
    source = open_bag_pair(f"bag://{drive}?visible={VIS}&infrared=/flir/image", TOLERANCE_S)
    with pytest.raises(SourceError) as error:
        list(source)
    assert str(error.value) == (f"bag://{drive}?infrared=/flir/image: no topic /flir/image in {drive} "
                                f"(topics: {VIS} (sensor_msgs/msg/Image), {IR} (sensor_msgs/msg/Image))")
    (tmp_path / "notes.mcap").write_text("hello")
    with pytest.raises(SourceError, match="notes.mcap: not a readable MCAP file"):
        list(open_bag_pair(f"bag://{tmp_path}/notes.mcap?visible={VIS}&infrared={IR}"))


def test_unsupported_encoding_in_a_recording_stops_with_its_topic(tmp_path: Path) -> None:
    path = write_mcap(tmp_path / "yuv.mcap", visible="yuv422")
    with pytest.raises(SourceError, match=rf"\?visible={VIS} message 0: unsupported image encoding 'yuv422'"):
        list(open_bag_pair(f"bag://{path}?visible={VIS}&infrared={IR}"))


def rosbags_messages(typestore: Any) -> list[tuple[int, str, Any]]:
    """The drive as rosbags messages: bgr8 colour and 16UC1 thermal, with log times."""
    types = typestore.types
    time_t, header_t, image_t = (types[n] for n in ("builtin_interfaces/msg/Time", "std_msgs/msg/Header",
                                                    "sensor_msgs/msg/Image"))

    def make(image: np.ndarray, encoding: str, stamp: int) -> Any:
        body = raw(image, encoding, stamp)
        extra = {"seq": 0} if "seq" in header_t.__dataclass_fields__ else {}      # ROS 1 headers count
        return image_t(header=header_t(stamp=time_t(sec=stamp // 10**9, nanosec=stamp % 10**9), frame_id="cam",
                                       **extra),
                       height=body["height"], width=body["width"], encoding=encoding, is_bigendian=0,
                       step=body["step"], data=np.frombuffer(body["data"], np.uint8))
    messages = [(s + VIS_LATENCY, VIS, make(visible_image(k)[..., ::-1], "bgr8", s)) for k, s in enumerate(VIS_STAMPS)]
    messages += [(s + IR_LATENCY, IR, make(np.full((H, W), 1000 + j, np.uint16), "16UC1", s))
                 for j, s in enumerate(IR_STAMPS)]
    return sorted(messages, key=lambda m: m[0])


def test_ros2_db3_bag_folder_and_its_db3_file(tmp_path: Path) -> None:
    pytest.importorskip("rosbags", reason="rosbags (bag extra) is not installed")
    from rosbags.rosbag2 import Writer as Bag2Writer
    from rosbags.typesys import Stores, get_typestore

    typestore = get_typestore(Stores.ROS2_HUMBLE)
    folder = tmp_path / "drive_bag"
    import inspect

    version = {"version": 8} if "version" in inspect.signature(Bag2Writer).parameters else {}  # 0.9 (3.8): none
    with Bag2Writer(folder, **version) as writer:
        connections = {t: writer.add_connection(t, "sensor_msgs/msg/Image", typestore=typestore) for t in (VIS, IR)}
        for log_time, topic, body in rosbags_messages(typestore):
            writer.write(connections[topic], log_time, typestore.serialize_cdr(body, "sensor_msgs/msg/Image"))
    check_pairs(pairs_of(f"bag://{folder}?visible={VIS}&infrared={IR}"), VIS_STAMPS, IR_STAMPS)
    (db3,) = folder.glob("*.db3")
    check_pairs(pairs_of(f"bag://{db3}?visible={VIS}&infrared={IR}"), VIS_STAMPS, IR_STAMPS)


def test_ros1_bag(tmp_path: Path) -> None:
    pytest.importorskip("rosbags", reason="rosbags (bag extra) is not installed")
    from rosbags.rosbag1 import Writer as Bag1Writer
    from rosbags.typesys import Stores, get_typestore

    typestore = get_typestore(Stores.ROS1_NOETIC)
    path = tmp_path / "drive.bag"
    with Bag1Writer(path) as writer:
        connections = {t: writer.add_connection(t, "sensor_msgs/msg/Image", typestore=typestore) for t in (VIS, IR)}
        for log_time, topic, body in rosbags_messages(typestore):
            writer.write(connections[topic], log_time, typestore.serialize_ros1(body, "sensor_msgs/msg/Image"))
    check_pairs(pairs_of(f"bag://{path}?visible={VIS}&infrared={IR}"), VIS_STAMPS, IR_STAMPS)


# --- results out ----------------------------------------------------------------------------------

def read_results(path: Path) -> dict[str, list[tuple[int, Any]]]:
    """Each output topic's ``(log time, decoded message)``, read back with mcap's own ROS 2 decoder."""
    topics: dict[str, list[tuple[int, Any]]] = {}
    with open(path, "rb") as stream:
        for _schema, channel, record, decoded in make_reader(stream, decoder_factories=[DecoderFactory()]) \
                .iter_decoded_messages(log_time_order=True):
            topics.setdefault(channel.topic, []).append((record.log_time, decoded))
    return topics


def pixels(decoded: Any) -> np.ndarray:
    data = np.frombuffer(decoded.data, np.uint8)
    channels = 3 if decoded.encoding == "rgb8" else 1
    assert decoded.step == decoded.width * channels
    return data.reshape(decoded.height, decoded.width, channels).squeeze(-1 if channels == 1 else ())


def test_mcap_sink_is_renamed_into_place_only_when_closed(tmp_path: Path) -> None:
    out = tmp_path / "runs" / "results.mcap"
    sink = McapSink(out, {"labels": "/seg", "fused": "/fused", "composite": ""}, frame_id="cam")
    labels = np.arange(12, dtype=np.int64).reshape(3, 4) % 9
    fused = np.full((3, 4, 3), 7, np.uint8)
    stamps = [T0 + 1, T0 + 33_333_334]
    for stamp in stamps:
        sink.write(Rendered("f", np.zeros((3, 8, 3), np.uint8), labels, fused, stamp))
    assert not out.exists() and sink.partial.exists()      # killed here: nothing under the final name
    sink.close()
    assert out.exists() and not sink.partial.exists()
    topics = read_results(out)
    assert sorted(topics) == ["/fused", "/seg"]
    assert [t for t, _ in topics["/seg"]] == stamps
    first = topics["/seg"][0][1]
    assert (first.header.stamp.sec, first.header.stamp.nanosec, first.header.frame_id) == (T0 // 10**9, 1, "cam")
    assert first.encoding == "mono8" and np.array_equal(pixels(first), labels)
    assert topics["/fused"][1][1].encoding == "rgb8" and np.array_equal(pixels(topics["/fused"][1][1]), fused)
    with pytest.raises(SinkError, match="class indices outside 0-255"):
        McapSink(tmp_path / "x.mcap").write(Rendered("f", fused, labels + 300, fused, T0))


def test_runtime_command_writes_one_message_per_pair_on_each_topic(drive: Path, tiny_onnx: Path,
                                                                   tmp_path: Path) -> None:
    from mrfs_edge.tools.run import run_main

    out = tmp_path / "results.mcap"
    status = run_main(["--model", str(tiny_onnx), "--pair", f"bag://{drive}?visible={VIS}&infrared={IR}",
                       "--output", f"bag://{out}", "-q"])
    assert status == 0
    log = json.loads((tmp_path / "results.runtime_log.json").read_text())     # beside the results, as for videos
    assert log["frames"]["written"] == len(IR_STAMPS) and log["outputs"] == [f"bag://{out}"]
    expected = [VIS_STAMPS[k] for k, _ in nearest_pairs(VIS_STAMPS, IR_STAMPS)]
    topics = read_results(out)
    assert sorted(topics) == ["/mrfs/composite", "/mrfs/fused", "/mrfs/labels"]
    for topic, messages in topics.items():
        assert [t for t, _ in messages] == expected, topic
        assert [m.header.stamp.sec * 10**9 + m.header.stamp.nanosec for _, m in messages] == expected
    assert pixels(topics["/mrfs/labels"][0][1]).shape == (H, W)
    assert pixels(topics["/mrfs/fused"][0][1]).shape == (H, W, 3)
    composite = pixels(topics["/mrfs/composite"][0][1])
    assert composite.ndim == 3 and composite.shape[2] == 3 and composite.shape[1] >= W
    assert not list(tmp_path.glob(".*partial*"))


def test_results_mcap_reads_as_a_ros2_bag(drive: Path, tmp_path: Path) -> None:
    """rosbags parses the file as ``ros2 bag`` does (its own reader, schema from the file)."""
    pytest.importorskip("rosbags", reason="rosbags (bag extra) is not installed")
    from importlib.metadata import version

    if tuple(int(part) for part in version("rosbags").split(".")[:2]) < (0, 10):
        pytest.skip("rosbags before 0.10 (Python 3.8's) opens MCAP files inside bag folders only")
    from rosbags.highlevel import AnyReader

    out = tmp_path / "r.mcap"
    sink = McapSink(out)
    sink.write(Rendered("f", np.zeros((4, 10, 3), np.uint8), np.ones((4, 5), np.uint8), np.zeros((4, 5, 3), np.uint8),
                        T0 + 5))
    sink.close()
    with AnyReader([out]) as reader:
        read = [(c.topic, t, reader.deserialize(d, c.msgtype)) for c, t, d in reader.messages()]
    assert sorted(topic for topic, _, _ in read) == ["/mrfs/composite", "/mrfs/fused", "/mrfs/labels"]
    labels = next(m for topic, _, m in read if topic == "/mrfs/labels")
    assert all(t == T0 + 5 for _, t, _ in read) and labels.data.reshape(4, 5).tolist() == [[1] * 5] * 4


def test_a_recording_cut_short_replays_up_to_its_last_complete_message(tmp_path: Path,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    """Power lost while recording: no summary, a partial chunk at the end; what was written replays."""
    data = write_mcap(tmp_path / "drive.mcap", chunk_size=20_000).read_bytes()      # chunks of a few frames
    cut = tmp_path / "cut.mcap"
    cut.write_bytes(data[:len(data) // 2])
    pairs = pairs_of(f"bag://{cut}?visible={VIS}&infrared={IR}")
    ids = [identify(p) for p in pairs]
    assert 0 < len(ids) < len(IR_STAMPS)
    assert ids == nearest_pairs(VIS_STAMPS, IR_STAMPS)[:len(ids)]
    assert "no summary at its end (recording cut short?)" in caplog.text


def test_a_corrupt_compressed_frame_stops_a_replay_or_is_skipped(tmp_path: Path) -> None:
    from mrfs_edge.io.source import BadFrame

    k = 10
    path = write_mcap(tmp_path / "spoilt.mcap", visible="jpeg", spoil=k)
    uri = f"bag://{path}?visible={VIS}&infrared={IR}"
    with pytest.raises(BadFrame, match=r"message 10: cannot decode 9 bytes of 'jpeg'"):
        list(open_bag_pair(uri, TOLERANCE_S))      # a file's default: stop at it
    source = open_bag_pair(uri, TOLERANCE_S, on_bad_frame="skip")
    pairs = list(source)
    assert source.skipped == 1 and source.skipped_frames[0].index == k
    assert k not in [int(v.image[..., 0].mean().round()) for v, _ in pairs]
    assert all(abs(v.stamp_ns - i.stamp_ns) <= TOLERANCE_S * 1e9 for v, i in pairs)
    assert len(pairs) >= len(IR_STAMPS) - 1


def test_without_the_bag_extra_the_error_names_the_package(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import sys

    from mrfs_edge.core.errors import MissingExtraError

    monkeypatch.setitem(sys.modules, "mcap_ros2.writer", None)
    frame = Rendered("f", np.zeros((2, 2, 3), np.uint8), np.zeros((2, 2), np.uint8), np.zeros((2, 2, 3), np.uint8))
    with pytest.raises(MissingExtraError, match=r"x.mcap needs mcap-ros2-support, which is not installed: "
                                                r"pip install '\.\[bag\]'"):
        McapSink(tmp_path / "x.mcap").write(frame)


def test_runtime_command_names_a_missing_topic_before_loading_the_model(drive: Path, tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture) -> None:
    from mrfs_edge.tools.run import run_main

    status = run_main(["--model", str(tmp_path / "never-read.onnx"), "--pair",
                       f"bag://{drive}?visible=/camera/depth&infrared={IR}", "--output", f"bag://{tmp_path}/o.mcap"])
    assert status == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert error == [(f"error: bag://{drive}?visible=/camera/depth: no topic /camera/depth in {drive} "
                      f"(topics: {VIS} (sensor_msgs/msg/Image), {IR} (sensor_msgs/msg/Image))")]
    assert not list(tmp_path.iterdir())
