"""Command lines of the lean runtime: ``runtime/run.py``, ``runtime/register.py`` and
``benchmarks/runtime_fps.py`` (torch-free).

Errors, signals and exit statuses are the CLI base's (:mod:`mrfs_edge.core.cli`): a user on a
vehicle reads one line for a missing camera or a bad file (exit 2), even for an OpenCV or ONNX
Runtime internal error (exit 1), never a traceback unless ``-v`` asks for it.
"""
from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import get_args

from mrfs_edge import assets
from mrfs_edge.core.args import non_negative_int, positive_float, positive_int
from mrfs_edge.core.cli import CliParser, command, one_line
from mrfs_edge.core.errors import MrfsEdgeError
from mrfs_edge.deploy import demo

LOG = logging.getLogger(__name__)

RUNS = Path("runs") / "runtime"
JETSON_EXAMPLE = ("python3 runtime/run.py --model build/mrfs_b0_mfnet_demo_480x640.int8.engine "
                  "--visible 'csi://0?width=1280&height=720&fps=30' "
                  "--infrared 'v4l2:///dev/video1?format=Y16&fps=9' --max-skew-ms 20 --registration ir_to_vis.yaml "
                  "--output display://0 --output /data/drives/drive.avi --segment-s 60")


# --- run -------------------------------------------------------------------------------------

def run_parser() -> argparse.ArgumentParser:
    from mrfs_edge.backends import BACKENDS
    from mrfs_edge.io.source import BadFramePolicy

    parser = CliParser(
        prog="runtime/run.py",
        description="Run an exported MRFS model (ONNX or TensorRT engine) on paired visible/infrared "
                    "streams: fused image + segmentation overlay, torch-free.",
        epilog=f"Jetson, CSI visible + USB Y16 thermal: {JETSON_EXAMPLE}")
    parser.add_argument("--model", help="exported .onnx, or .engine/.plan (default: the bundled demo model as ONNX)")
    parser.add_argument("--backend", choices=BACKENDS, help="default: from the file suffix")
    parser.add_argument("--cuda-graph", action="store_true", help="TensorRT: replay the engine as a CUDA graph")
    parser.add_argument("--threads", type=non_negative_int, default=0, help="ONNX Runtime CPU threads (0: its default)")
    parser.add_argument("--visible", help="visible URI: folder, image, video, v4l2://, csi://, gst://, rtsp:// "
                                          "(default: bundled samples)")
    parser.add_argument("--infrared", help="infrared URI, as --visible; 16-bit (Y16) kept until gain control")
    parser.add_argument("--pair", metavar="URI",
                        help="both streams from one recorded drive instead of --visible/--infrared: "
                             "bag://drive.mcap?visible=/camera/color/image_raw&infrared=/thermal/image_raw "
                             "(.mcap, ROS 2 bag folder or .db3, ROS 1 .bag; the bag extra), paired by capture stamp")
    parser.add_argument("--output", action="append", default=[],
                        help="display://0, a video file (.mp4/.avi/.mkv) or a folder; repeatable "
                             f"(default: the display, else a folder under {RUNS}/)")
    parser.add_argument("--no-display", action="store_true", help="never open a window")
    parser.add_argument("--save-raw", action="store_true", help="folders: also write label/ and fused/ PNGs")
    parser.add_argument("--registration", help="YAML/JSON infrared→visible transform (runtime/register.py)")
    parser.add_argument("--thermal-low", type=float, default=1.0, help="16-bit AGC low percentile (default 1)")
    parser.add_argument("--thermal-high", type=float, default=99.0, help="16-bit AGC high percentile (default 99)")
    parser.add_argument("--thermal-smoothing", type=float, default=0.9,
                        help="EMA weight of previous AGC limits, 0..1 (default 0.9)")
    parser.add_argument("--max-skew-ms", "--tolerance-ms", dest="max_skew_ms", type=positive_float, default=20.0,
                        help="the two frames of a pair at most this far apart in capture time (default 20 ms); "
                             "skew percentiles and unpaired frames per camera go to the status line and the log")
    parser.add_argument("--stall-s", type=positive_float, default=1.0,
                        help="live cameras: one silent this long pauses the pairing, said in the status line, "
                             "until it delivers again (default 1 s)")
    parser.add_argument("--segment-s", type=positive_float,
                        help="video outputs: record in closed segments of this many seconds (<stem>_000000.mkv, "
                             "...), so a power cut loses at most the open one")
    parser.add_argument("--loop", action="store_true",
                        help="replay file sources from the start each time they end (demos, soaks, recording tests)")
    parser.add_argument("--loop-fps", type=positive_float,
                        help="with --loop: paced like cameras at this rate (live: paired by capture time, frames "
                             "dropped when the model is slower)")
    parser.add_argument("--queue", type=positive_int, default=2, help="frames buffered between stages (default 2)")
    parser.add_argument("--max-frames", type=positive_int, help="stop after this many frame pairs")
    parser.add_argument("--on-bad-frame", choices=get_args(BadFramePolicy),
                        help="an unreadable frame: stop after the frames before it, or skip it (named in the "
                             "log); default: skip for cameras and streams, stop for files, folders and videos")
    parser.add_argument("--retries", type=int, default=5, help="reconnect attempts for a live source (default 5)")
    parser.add_argument("--log", help="JSON run log (default: runtime_log.json in the output folder, "
                                      "<video stem>.runtime_log.json beside a video; none for display/null)")
    return parser


def _quiet_opencv() -> None:
    """Keep OpenCV's own warnings (e.g. a failed camera open) from burying our one-line error."""
    import cv2

    cv_logging = getattr(getattr(cv2, "utils", None), "logging", None)
    if cv_logging is not None:
        cv_logging.setLogLevel(cv_logging.LOG_LEVEL_ERROR)


def _default_model() -> Path:
    """The bundled demo model as ONNX (``demo.default_onnx``, which says which file; torch only on first use)."""
    try:
        return Path(demo.default_onnx())
    except MrfsEdgeError:
        raise
    except Exception as exc:
        raise MrfsEdgeError(f"no --model given and the bundled demo model could not be prepared as ONNX "
                            f"({type(exc).__name__}: {one_line(exc)}); pass --model PATH.onnx") from exc


def _default_sources(args: argparse.Namespace) -> tuple[str, str]:
    if args.visible and args.infrared:
        return args.visible, args.infrared
    if args.visible or args.infrared:
        raise MrfsEdgeError(f"--{'infrared' if args.visible else 'visible'} is required with "
                            f"--{'visible' if args.visible else 'infrared'}")
    visible, infrared = assets.SAMPLES / "vi", assets.SAMPLES / "ir"
    LOG.info(f"no --visible/--infrared given: using the bundled sample pairs ({visible}, {infrared})")
    return str(visible), str(infrared)


@command
def run_main(argv: Sequence[str] | None = None) -> int:
    # Imported here, not at the top, so register.py and --help never load ONNX Runtime.
    from mrfs_edge.backends import ENGINE_SUFFIXES, open_runner
    from mrfs_edge.io.bag import open_bag_pair
    from mrfs_edge.io.pairing import open_pair
    from mrfs_edge.io.sinks import ImageFolderSink, display_available, open_sinks
    from mrfs_edge.io.uri import parse_uri
    from mrfs_edge.processing.registration import load_registration
    from mrfs_edge.processing.thermal import ThermalAGC
    from mrfs_edge.runtime.looping import loop_pair
    from mrfs_edge.runtime.pipeline import Pipeline, PipelineOptions
    from mrfs_edge.runtime.run_log import check_log_path, default_log_path

    args = run_parser().parse_args(argv)
    log_path = check_log_path(args.log) if args.log else None    # before the run, not after it
    _quiet_opencv()
    if args.pair and (args.visible or args.infrared):
        raise MrfsEdgeError("--pair names both streams: give it without --visible/--infrared")
    if args.loop_fps and not args.loop:
        raise MrfsEdgeError("--loop-fps paces a replay: give --loop too")
    if args.loop and args.pair:
        raise MrfsEdgeError("--loop replays --visible/--infrared files, not a --pair recording")
    if args.segment_s and not any(parse_uri(o, "sink").is_video for o in args.output):
        raise MrfsEdgeError(f"--segment-s {args.segment_s:g} is for video outputs, and no --output is a video file "
                            "(.mkv, .avi, .mp4, ...)")
    # Opened now (file, topics): a wrong topic is reported before the model is loaded.
    paired = open_bag_pair(args.pair, args.max_skew_ms / 1000.0, args.on_bad_frame).open() if args.pair else None
    visible, infrared = ("", "") if paired else _default_sources(args)
    thermal = ThermalAGC(args.thermal_low, args.thermal_high, args.thermal_smoothing)
    registration = load_registration(args.registration) if args.registration else None
    model = Path(args.model) if args.model else _default_model()
    engine = args.backend == "tensorrt" or (args.backend is None and model.suffix.lower() in ENGINE_SUFFIXES)
    if args.cuda_graph and not engine:
        raise MrfsEdgeError("--cuda-graph needs a TensorRT engine (.engine/.plan)")
    options = {"use_cuda_graph": args.cuda_graph} if engine else ({"threads": args.threads} if args.threads else {})
    runner = open_runner(model, args.backend, **options)
    describe = getattr(runner, "describe", None)   # TensorRT: what the engine really runs, per layer
    if describe is not None:
        LOG.info(describe())
    source = paired if paired is not None else open_pair(visible, infrared, args.max_skew_ms / 1000.0,
                                                         retries=args.retries, on_bad_frame=args.on_bad_frame,
                                                         stall_s=args.stall_s)
    if args.loop:
        source = loop_pair(source, args.loop_fps)
    source.open()
    run_dir = RUNS / datetime.now().strftime("%Y%m%d-%H%M%S")
    outputs = args.output or (["display://0"] if not args.no_display and display_available() else [])
    sinks = open_sinks([o for o in outputs if not (args.no_display and o.startswith("display"))],
                       fps=source.fps, save_raw=args.save_raw, segment_s=args.segment_s)
    if not sinks:
        sinks = [ImageFolderSink(run_dir, args.save_raw)]
        LOG.info(f"no output to show or write: saving composites to {run_dir}/")
    log_path = log_path or default_log_path(sinks)
    pipeline = Pipeline(runner, source, sinks, thermal, registration,
                        PipelineOptions(queue_size=args.queue, max_frames=args.max_frames, log_path=log_path),
                        registration_path=args.registration)
    with runner:
        log = pipeline.run()
    frames = log["frames"]
    LOG.info(f"{frames['written']} frames in {log['wall_s']:.1f} s ({log['fps']:.1f} fps), "
             f"{frames['dropped_before_model'] + frames['dropped_before_output']} dropped, "
             f"stopped by {log['stopped_by']}; outputs: {', '.join(log['outputs'])}; log: {log_path or 'none'}")
    return 0


# --- throughput benchmark ----------------------------------------------------------------------

def fps_parser() -> argparse.ArgumentParser:
    parser = CliParser(
        prog="benchmarks/runtime_fps.py",
        description="End-to-end FPS of the runtime pipeline (capture → preprocess → model → postprocess → "
                    "composite) against model-only FPS, on the same runner and frames.",
        epilog="example: benchmarks/runtime_fps.py --threads 1 --frames 50 --json runs/runtime_fps.json")
    parser.add_argument("--model", help="exported .onnx, or .engine/.plan (default: the bundled demo model as ONNX)")
    parser.add_argument("--threads", type=non_negative_int, default=0, help="ONNX Runtime CPU threads (0: its default)")
    parser.add_argument("--visible", help="visible URI, as for runtime/run.py (default: bundled samples); "
                                          "files are replayed until enough frames")
    parser.add_argument("--infrared", help="infrared URI, as --visible")
    parser.add_argument("--frames", type=positive_int, default=50, help="frames timed per measurement (default 50)")
    parser.add_argument("--warmup", type=non_negative_int, default=5, help="frames run before timing (default 5)")
    parser.add_argument("--json", metavar="OUT", help="also write the result as JSON")
    return parser


@command
def fps_main(argv: Sequence[str] | None = None) -> int:
    from mrfs_edge.backends import ENGINE_SUFFIXES, open_runner
    from mrfs_edge.core.files import write_json_atomic
    from mrfs_edge.io.pairing import open_pair
    from mrfs_edge.runtime.throughput import measure_throughput

    args = fps_parser().parse_args(argv)
    _quiet_opencv()
    visible, infrared = _default_sources(args)
    model = Path(args.model) if args.model else _default_model()
    onnx = model.suffix.lower() not in ENGINE_SUFFIXES
    runner = open_runner(model, **({"threads": args.threads} if onnx and args.threads else {}))
    with runner:
        result = measure_throughput(runner, open_pair(visible, infrared), args.frames, args.warmup)
    print(result.table())
    if args.json:
        LOG.info(f"wrote {write_json_atomic(args.json, result.as_dict())}")
    return 0


# --- soak ------------------------------------------------------------------------------------

SOAKS = Path("runs") / "soak"


def non_negative_float(text: str) -> float:
    """``type=`` for a time or rate where 0 means none (no warm-up, no pacing)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def soak_parser() -> argparse.ArgumentParser:
    from mrfs_edge.io.source import IMAGE_SEQUENCE_FPS

    parser = CliParser(
        prog="benchmarks/soak.py",
        description="Run the runtime pipeline for a long time on a replayed source and sample its resident "
                    "memory, open file descriptors and threads once per interval: growth after the warm-up, "
                    "frames, drops and pairs, as JSON and a plot. Exit 1 when something grew past its limit.",
        epilog="example: benchmarks/soak.py --threads 1 --duration-s 3600 --output-dir runs/soak/1h")
    parser.add_argument("--model", help="exported .onnx, or .engine/.plan (default: the bundled demo model as ONNX)")
    parser.add_argument("--threads", type=non_negative_int, default=1,
                        help="ONNX Runtime CPU threads (default 1: a soak measures growth, not speed; 0: its default)")
    parser.add_argument("--visible", help="visible files, as for runtime/run.py (default: bundled samples); replayed "
                                          "without end")
    parser.add_argument("--infrared", help="infrared files, as --visible")
    parser.add_argument("--fps", type=non_negative_float, default=IMAGE_SEQUENCE_FPS,
                        help=f"replay paced like a camera at this rate: live pairing, frames dropped when the model "
                             f"is slower (default {IMAGE_SEQUENCE_FPS:g}; 0: every frame, as fast as the model)")
    parser.add_argument("--duration-s", type=positive_float, default=3600.0, help="how long (default 3600)")
    parser.add_argument("--warmup-s", type=non_negative_float, default=300.0,
                        help="growth is measured after this (default 300)")
    parser.add_argument("--interval-s", type=positive_float, default=1.0, help="sampling interval (default 1)")
    parser.add_argument("--output", action="append", default=[],
                        help="sinks, as for runtime/run.py (default null://); repeatable")
    parser.add_argument("--segment-s", type=positive_float, help="video outputs in closed segments of this length")
    parser.add_argument("--max-rss-growth-mb", type=non_negative_float, default=50.0,
                        help="resident memory growth allowed after the warm-up (default 50 MiB)")
    parser.add_argument("--max-fd-growth", type=non_negative_int, default=4,
                        help="open file descriptors allowed above the warm-up count (default 4)")
    parser.add_argument("--max-thread-growth", type=non_negative_int, default=0,
                        help="threads allowed above the warm-up count (default 0)")
    parser.add_argument("--output-dir", help=f"soak.json and soak.png go here (default {SOAKS}/<time>)")
    return parser


@command
def soak_main(argv: Sequence[str] | None = None) -> int:
    from mrfs_edge.backends import ENGINE_SUFFIXES, open_runner
    from mrfs_edge.core.files import write_json_atomic
    from mrfs_edge.io.pairing import open_pair
    from mrfs_edge.io.sinks import open_sinks
    from mrfs_edge.runtime.looping import loop_pair
    from mrfs_edge.runtime.pipeline import Pipeline, PipelineOptions
    from mrfs_edge.runtime.soak import GrowthLimits, run_soak, write_plot

    args = soak_parser().parse_args(argv)
    if args.warmup_s >= args.duration_s:
        raise MrfsEdgeError(f"--warmup-s {args.warmup_s:g} must be shorter than --duration-s {args.duration_s:g}")
    _quiet_opencv()
    out_dir = Path(args.output_dir) if args.output_dir else SOAKS / datetime.now().strftime("%Y%m%d-%H%M%S")
    visible, infrared = _default_sources(args)
    source = loop_pair(open_pair(visible, infrared), args.fps or None)
    sinks = open_sinks(args.output or ["null://"], fps=source.fps, segment_s=args.segment_s)
    model = Path(args.model) if args.model else _default_model()
    onnx = model.suffix.lower() not in ENGINE_SUFFIXES
    runner = open_runner(model, **({"threads": args.threads} if onnx and args.threads else {}))
    limits = GrowthLimits(args.max_rss_growth_mb, args.max_fd_growth, args.max_thread_growth)
    pipeline = Pipeline(runner, source, sinks, options=PipelineOptions(status_interval_s=0))
    pace = f"paced at {args.fps:g} fps" if args.fps else "every frame"
    LOG.info(f"soak: {runner.name} for {args.duration_s:g} s (growth after {args.warmup_s:g} s), {pace}; "
             f"report in {out_dir}/")
    with runner:
        report = run_soak(pipeline, args.duration_s, args.warmup_s, args.interval_s, limits)
    json_path = write_json_atomic(out_dir / "soak.json", report)
    plot = write_plot(report, out_dir / "soak.png")
    summary, frames = report["summary"], report["frames"]
    rss, fds, tasks = summary["rss_mb"], summary["fds"], summary["tasks"]
    if rss is not None:
        LOG.info(f"resident memory {rss['at_warmup']:.0f} MiB after the warm-up, {rss['end']:.0f} MiB at the end "
                 f"({rss['growth']:+.1f} MiB, {rss['slope_mb_per_h']:+.1f} MiB/h)")
    if fds is not None and tasks is not None:
        LOG.info(f"file descriptors {fds['at_warmup']:.0f}..{fds['max']:.0f}, threads {summary['threads']['min']:.0f}"
                 f"..{summary['threads']['max']:.0f} (kernel {tasks['min']:.0f}..{tasks['max']:.0f})")
    LOG.info(f"{frames['pairs']} pairs, {frames['written']} frames written, {frames['dropped']} dropped, "
             f"{frames['unpaired']} unpaired; {json_path}" + (f", {plot}" if plot else ""))
    for problem in report["problems"]:
        LOG.error(problem)
    return 1 if report["problems"] else 0


# --- register --------------------------------------------------------------------------------

def register_parser() -> argparse.ArgumentParser:
    parser = CliParser(
        prog="runtime/register.py",
        description="Estimate the infrared→visible transform from point correspondences and write it "
                    "for runtime/run.py --registration.",
        epilog="example: runtime/register.py --visible-size 1280x720 --output ir_to_vis.yaml "
               "--points 12,30:101,88 --points 150,28:860,80 --points 148,110:855,600 --points 10,112:95,610")
    parser.add_argument("--points", action="append", default=[], metavar="X,Y:X,Y",
                        help="one correspondence: infrared x,y : visible x,y (repeatable)")
    parser.add_argument("--points-file", help="file with one X,Y:X,Y correspondence per line (# comments)")
    parser.add_argument("--kind", choices=("homography", "affine"), default="homography",
                        help="homography (8 degrees of freedom, needs 4 points; default) or affine (6, needs 3)")
    parser.add_argument("--visible-size", required=True, metavar="WxH",
                        help="visible frame size the points were picked on, e.g. 1280x720")
    parser.add_argument("--ransac-px", type=float, default=3.0, help="outlier threshold in pixels (default 3)")
    parser.add_argument("--output", required=True, help=".yaml/.yml (YAML) or any other suffix (JSON)")
    return parser


def _size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError as exc:
        raise MrfsEdgeError(f"--visible-size {text!r}: expected WxH, e.g. 1280x720") from exc
    return width, height


@command
def register_main(argv: Sequence[str] | None = None) -> int:
    from mrfs_edge.processing.registration import (
        estimate_registration,
        parse_correspondence,
        read_correspondences,
        save_registration,
    )

    args = register_parser().parse_args(argv)
    pairs = [parse_correspondence(p) for p in args.points]
    if args.points_file:
        pairs += read_correspondences(args.points_file)
    registration = estimate_registration([p[0] for p in pairs], [p[1] for p in pairs], args.kind,
                                         _size(args.visible_size), args.ransac_px)
    path = save_registration(args.output, registration)
    print(f"{args.kind} from {len(pairs)} point pairs, RMS error {registration.rms_error_px:.2f} px: {path}")
    return 0
