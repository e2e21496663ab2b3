"""``python -m device`` / ``edgekit-device``: run the daemon, benchmark the pipeline, sweep its configurations, or collect labelled frames.

The one place where parts are chosen: source, runtime, engine, preprocessor, daemon.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Callable, Optional, TypeVar

from device import tuning
from device.daemon import default_stale_after_s
from device.errors import DeviceError
from device.frames import DEFAULT_CAMERA, CameraConfig, Frame, FrameSource, parse_size
from device.manifest import VARIANTS, Manifest, load_manifest
from device.runtime import RUNTIMES, XNNPACK_SETTINGS
from device.views import VIEW_MAX_PX

T = TypeVar("T")
EXIT_USAGE = 2
EXIT_ERROR = 1
SOURCE_HELP = ("picamera2 | fake-picamera2[:OPTION,...] (a stand-in camera; options: stall-after=N stops delivering "
               "after N frames, as a loose cable does; scene=FILE shows the table-top scene FILE names, device.tabletop) "
               "| folder:DIR | synthetic")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--manifest", required=True, type=Path, help="manifest.json (or its folder) written by `python -m host run`")
    p.add_argument("--runtime", default="auto", choices=["auto", *RUNTIMES], help="TFLite runtime to use; auto takes the first importable of tflite-runtime, ai-edge-litert, tensorflow")
    p.add_argument("--threads", type=int, default=None, metavar="N", help="interpreter threads (None: the runtime's own choice)")
    p.add_argument("--xnnpack", default="on", choices=XNNPACK_SETTINGS,
                   help="on: the runtime's default delegate (XNNPACK, for the ops it takes); off: TFLite's builtin kernels only")
    p.add_argument("--invert", default="auto", choices=["auto", "on", "off"], help="polarity: auto decides from the image border")
    p.add_argument("--main", type=parse_size, default="{}x{}".format(*DEFAULT_CAMERA.main_size), metavar="WxH", help="camera main stream size")
    p.add_argument("--lores", type=_lores_size, default="auto", metavar="WxH|auto",
                   help="camera lores YUV420 stream the classifier reads; auto sizes it for the model "
                   "(a whole number of pixels per model pixel: 112x84 for a 28x28 grey model, 256x192 for 96x96 RGB)")


def _lores_size(text: str) -> Optional[tuple[int, int]]:
    return None if text == "auto" else parse_size(text)


def _input_range(manifest: Manifest) -> tuple[float, float]:
    """The real values the model's input spans (pixel 0 and 255 through the contract's normalisation)."""
    pre = manifest.preprocess
    bounds = pre.normalize.bounds(pre.channels)
    return min(min(b) for b in bounds), max(max(b) for b in bounds)


def camera_config(args: argparse.Namespace, manifest: Manifest, stream: str = "lores") -> CameraConfig:
    """The camera configuration for this model: streams chosen from the contract, sizes from the flags."""
    return CameraConfig.for_contract(manifest.preprocess, args.main, args.lores, stream, frame_rate=getattr(args, "fps", 0.0) or 30.0,
                                     timeout_s=getattr(args, "camera_timeout", 2.0))


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for docs and tests)."""
    parser = argparse.ArgumentParser(prog="python -m device", description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="{run,bench,sweep,collect}")
    run = sub.add_parser(
        "run",
        help="classify camera frames until stopped, serving the live page / and /healthz /stats /metrics /latest on 127.0.0.1",
        description="Run the classifier daemon. SIGTERM/SIGINT exit 0 after closing the camera and flushing results; "
        "after --max-failures source failures in a row it exits 3 so a supervisor restarts it.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    _common(run)
    run.add_argument("--variant", default="int8", choices=VARIANTS, help="model variant from the manifest")
    run.add_argument("--source", default="picamera2", help=SOURCE_HELP)
    run.add_argument("--port", type=int, default=8321, help="HTTP port on 127.0.0.1; 0 picks a free one (printed, and in --status-file)")
    run.add_argument("--status-file", type=Path, default=None, help="write {pid, port, url} here once serving; removed on exit")
    run.add_argument("--results", type=Path, default=None, metavar="FILE", help="append one JSON line per frame here")
    run.add_argument("--results-max-bytes", type=int, default=10 * 1024 * 1024, help="rotate the results file past this size")
    run.add_argument("--results-backups", type=int, default=3, help="rotated results files kept (FILE.1 … FILE.N)")
    run.add_argument("--loop", action="store_true", help="repeat a folder source instead of reading it once")
    run.add_argument("--exit-when-done", action="store_true", help="exit 0 when a finite source ends (otherwise keep serving)")
    run.add_argument("--fps", type=float, default=30.0, help="synthetic frames per second and camera frame rate (0: synthetic as fast as possible, camera at 30)")
    run.add_argument("--max-failures", type=int, default=5, help="source failures in a row before exiting 3")
    run.add_argument("--camera-timeout", type=float, default=DEFAULT_CAMERA.timeout_s, metavar="SECONDS",
                     help="picamera2 capture timeout (capture_array's wait=); a capture that takes longer counts as a "
                     "camera failure and the camera is reopened")
    run.add_argument("--stale-after", type=float, default=argparse.SUPPRESS, metavar="SECONDS",
                     help="/healthz answers 503 when no frame has been classified for this long (default: 2 x "
                     "--camera-timeout + 10 frame intervals at --fps, i.e. "
                     f"{default_stale_after_s(DEFAULT_CAMERA):g} s at 2 s and 30 fps)")
    run.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    run.add_argument("--hardware-root", type=Path, default=Path("/"), help="where the page and /metrics read /proc and /sys from")
    run.add_argument("--data-dir", type=Path, default=None, metavar="DIR",
                     help="answer POST /collect: collected frames go to DIR/<label>/ (None: the daemon does not collect)")
    run.add_argument("--view-px", type=int, default=VIEW_MAX_PX, metavar="N",
                     help="long side of the frame picture kept of a collected or uncertain frame (area-downscaled)")
    g = run.add_argument_group("uncertain frames", "keep the frames the model was unsure of, for the next round of training")
    g.add_argument("--keep-uncertain", type=Path, default=None, metavar="DIR",
                   help="keep frames whose top-1 minus top-2 score is below --margin in DIR (None: keep none)")
    g.add_argument("--margin", type=float, default=0.2, help="top-1 minus top-2 score below which a frame counts as uncertain")
    g.add_argument("--uncertain-every-s", type=float, default=10.0, metavar="S", help="keep at most one uncertain frame every S seconds")
    g.add_argument("--uncertain-max-files", type=int, default=2000, metavar="N",
                   help="keep no more once DIR holds N pictures (two per frame)")
    g.add_argument("--uncertain-max-bytes", type=int, default=200 * 1024 * 1024, metavar="B", help="keep no more once DIR holds B bytes")

    bench = sub.add_parser(
        "bench",
        help="benchmark the pipeline like TFLite's benchmark_model, with accuracy on synthetic frames",
        description="Load time, first inference, warm-up average, per-stage count/min/max/mean/std/p50/p90/p99, "
        "peak RSS, and accuracy on synthetic camera frames rendered from the golden set.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    _common(bench)
    bench.add_argument("--variant", default="int8", choices=[*VARIANTS, "all"], help="variant to measure, or all")
    bench.add_argument("--source", default="synthetic", help="synthetic (lores YUV420, framed as the training crop) | synthetic-main (640x480 B,G,R) | camera-like (lores YUV420, framed and lit as a camera sees a garment) | camera-like-main | folder:DIR")
    bench.add_argument("--runs", type=int, default=None, help="timed frames (None: every golden image once, or 200)")
    bench.add_argument("--warmup", type=int, default=20, help="untimed frames first")
    bench.add_argument("--hardware-root", type=Path, default=Path("/"), help="where /proc and /sys are read from")
    bench.add_argument("--json", action="store_true", help="print one JSON document instead of the report")

    col = sub.add_parser(
        "collect",
        help="capture N labelled frames into DATA_DIR/<label>/ with the camera configuration the daemon uses (when no daemon runs)",
        description="Open the camera (or another source) as the daemon would for this model, and keep COUNT frames, one every "
        "--interval-s: the frame (main, downscaled) and what the model sees, as PNG, with one JSON line per frame (time, sha256, "
        "source, camera controls). The camera opens in one process at a time: while the daemon runs, ask it instead "
        "(POST /collect, which `python -m deploy collect` does).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    _common(col)
    col.add_argument("--variant", default="int8", choices=VARIANTS, help="the variant whose input the model view shows")
    col.add_argument("--source", default="picamera2", help=SOURCE_HELP)
    col.add_argument("--label", required=True, help="the class of what is in view (a valid file name on the Pi)")
    col.add_argument("--count", type=int, required=True, metavar="N", help="frames to keep")
    col.add_argument("--interval-s", type=float, default=0.5, metavar="S", help="seconds between kept frames")
    col.add_argument("--data-dir", type=Path, required=True, metavar="DIR", help="frames go to DIR/<label>/")
    col.add_argument("--view-px", type=int, default=VIEW_MAX_PX, metavar="N", help="long side of the frame picture")
    col.add_argument("--camera-timeout", type=float, default=DEFAULT_CAMERA.timeout_s, metavar="SECONDS", help="picamera2 capture timeout")
    col.add_argument("--fps", type=float, default=30.0, help="camera frame rate (and synthetic pacing)")
    col.add_argument("--loop", action="store_true", help="repeat a folder source")
    col.add_argument("--status-file", type=Path, default=None, help="keep the job's status (JSON) here while collecting")
    col.add_argument("--json", action="store_true", help="print the job's final status as JSON on stdout")
    sweep = sub.add_parser(
        "sweep",
        help="time every variant at each thread count with XNNPACK on and off, with golden accuracy (what `deploy tune` runs)",
        description="For each configuration: p50/p99 of invoke and of the whole pipeline on synthetic lores frames, CPU "
        "time per frame, top-1 on the golden set against the labels and against float32, and what the interpreter did "
        "with the settings (XNNPACK nodes, worker threads). Then the fastest configuration within the accuracy gate.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    sweep.add_argument("--manifest", required=True, type=Path, help="manifest.json (or its folder)")
    sweep.add_argument("--runtime", default="auto", choices=["auto", *RUNTIMES], help="TFLite runtime to use")
    sweep.add_argument("--variant", action="append", default=None, choices=VARIANTS,
                       help="a variant to include (repeatable; default: every variant whose model file is present)")
    sweep.add_argument("--threads", type=_arg_list(tuning.parse_threads), default=",".join(map(str, tuning.DEFAULT_THREADS)), metavar="N,N,...", help="thread counts")
    sweep.add_argument("--xnnpack", type=_arg_list(tuning.parse_xnnpack), default=",".join(XNNPACK_SETTINGS), metavar="on,off", help="XNNPACK settings")
    sweep.add_argument("--frames", type=int, default=300, help="timed frames per configuration")
    sweep.add_argument("--warmup", type=int, default=20, help="untimed frames per configuration first")
    sweep.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds the frames are split into")
    sweep.add_argument("--golden-count", type=int, default=None, help="golden images for accuracy (None: all)")
    sweep.add_argument("--gate-points", type=float, default=tuning.GATE_POINTS,
                       help="a configuration passes when its golden accuracy is at most this many points below float32's")
    sweep.add_argument("--tie-pct", type=float, default=tuning.TIE_PCT,
                       help="configurations within this %% of the fastest p50 count as tied; the least CPU per frame wins")
    sweep.add_argument("--hardware-root", type=Path, default=Path("/"), help="where /proc and /sys are read from")
    sweep.add_argument("--json", action="store_true", help="print one JSON document (the report and the choice)")
    return parser


def _arg_list(parse: Callable[[str], T]) -> Callable[[str], T]:
    """An argparse type from a ``device.tuning`` parser (ValueError → a usage error naming the flag)."""

    def convert(text: str) -> T:
        try:
            return parse(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    return convert


def _source_factory(args: argparse.Namespace, manifest_golden: Optional[Path], config: CameraConfig):  # type: ignore[no-untyped-def]
    spec: str = args.source
    if spec == "picamera2":
        from device.pi_camera import PiCameraSource

        return lambda: PiCameraSource(config)
    if spec == "fake-picamera2" or spec.startswith("fake-picamera2:"):
        import numpy as np

        from device.fake_picamera2 import FakePicamera2
        from device.pi_camera import PiCameraSource

        stall_after, scene_file = _fake_camera_options(spec)
        images = None
        if manifest_golden is not None and scene_file is None:
            with np.load(manifest_golden, allow_pickle=False) as z:
                images = z["images"]
        return lambda: PiCameraSource(config, factory=lambda: FakePicamera2(images=images, stall_after=stall_after,
                                                                            scene_file=scene_file))
    if spec == "synthetic":
        from device.frames import SyntheticSource

        if manifest_golden is None:
            raise DeviceError("--source synthetic needs the golden set named in the manifest; re-run `python -m host run`")
        return lambda: SyntheticSource.from_golden(manifest_golden, config, loop=True, fps=args.fps)
    if spec.startswith("folder:"):
        from device.frames import FolderSource

        return lambda: FolderSource(spec[len("folder:") :], loop=args.loop)
    raise DeviceError(f"unknown --source {spec!r}; use picamera2, fake-picamera2, folder:DIR or synthetic")


def _fake_camera_options(spec: str) -> tuple[Optional[int], Optional[Path]]:
    """``fake-picamera2[:stall-after=N][,scene=FILE]`` → (N or None: never stalls, FILE or None: the golden images)."""
    _, _, opts = spec.partition(":")
    stall_after: Optional[int] = None
    scene_file: Optional[Path] = None
    for opt in filter(None, opts.split(",")):
        key, _, value = opt.partition("=")
        if key == "stall-after" and value.isdigit():
            stall_after = int(value)
        elif key == "scene" and value:
            scene_file = Path(value).expanduser()
            from device.tabletop import read_scene

            read_scene(scene_file)  # a missing or broken scene file is one line now, not a camera that never opens
        else:
            raise ValueError("--source fake-picamera2 takes stall-after=N (frames before the camera stalls) and scene=FILE "
                             f"(a table-top scene, JSON), separated by commas. Got: {spec!r}")
    return stall_after, scene_file


def cmd_run(args: argparse.Namespace) -> int:
    """Build the parts and run the daemon."""
    from device.daemon import Daemon, DaemonConfig
    from device.engine import open_engine
    from device.page import PageConfig
    from device.pipeline import Pipeline
    from device.preprocess import Preprocessor

    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    manifest = load_manifest(args.manifest)
    config = camera_config(args, manifest)
    stale_after_s = getattr(args, "stale_after", None)
    stale_after_s = default_stale_after_s(config) if stale_after_s is None else stale_after_s
    if not 0 < stale_after_s < float("inf"):
        raise ValueError(f"--stale-after must be a positive number of seconds. Got: {stale_after_s}")
    golden = manifest.golden_path() if manifest.golden is not None else None
    factory = _source_factory(args, golden, config)
    engine = open_engine(manifest, args.variant, args.runtime, args.threads, isolate=True, xnnpack=args.xnnpack)
    pre = Preprocessor(manifest.preprocess, engine.input_spec, args.invert)
    v = manifest.variant(args.variant)
    info = {
        "variant": args.variant,
        "model_path": str(manifest.model_path(args.variant)),
        "sha256": v.sha256,
        "runtime": engine.runtime.name,
        "runtime_version": engine.runtime.version,
        "threads": args.threads,
        "xnnpack": args.xnnpack,
        "delegate_nodes": engine.delegate_nodes,  # what the interpreter did with --xnnpack (0: builtin kernels)
        "source": args.source,
        "labels": list(manifest.labels),
        # what the fps alert compares with: the camera's frame rate, the synthetic pacing, or 0 (unpaced)
        "target_fps": config.frame_rate if args.source in ("picamera2", "fake-picamera2") else (args.fps if args.source == "synthetic" else 0.0),
    }

    def make_pipeline(source: FrameSource) -> Pipeline:
        return Pipeline(source, engine, pre, manifest.labels)

    kept_info = {"source": args.source, "variant": args.variant, "model_sha256": v.sha256}
    collector = None
    if args.data_dir is not None:
        from device.collect import Collector

        collector = Collector(args.data_dir, manifest.preprocess, engine.input_spec, {**kept_info, "collected_by": "daemon"},
                              _view_px(args.view_px))
    keeper = None
    if args.keep_uncertain is not None:
        from device.uncertain import UncertainConfig, UncertainKeeper

        keeper = UncertainKeeper(UncertainConfig(args.keep_uncertain, args.margin, args.uncertain_every_s,
                                                 args.uncertain_max_files, args.uncertain_max_bytes),
                                 manifest.preprocess, engine.input_spec, kept_info, _view_px(args.view_px))
        info["uncertain_margin"] = args.margin
    daemon = Daemon(
        factory,
        make_pipeline,
        info,
        DaemonConfig(
            port=args.port,
            results_path=args.results,
            results_max_bytes=args.results_max_bytes,
            results_backups=args.results_backups,
            status_file=args.status_file,
            max_failures=args.max_failures,
            exit_when_done=args.exit_when_done,
            stale_after_s=stale_after_s,
            page=PageConfig(input_range=_input_range(manifest), hardware_root=args.hardware_root),
        ),
        collector=collector,
        uncertain=keeper,
    )
    daemon.install_signal_handlers()
    return daemon.run()


def _view_px(n: int) -> int:
    from device.collect import VIEW_PX_RANGE

    if not VIEW_PX_RANGE[0] <= n <= VIEW_PX_RANGE[1]:
        raise ValueError(f"--view-px must be from {VIEW_PX_RANGE[0]} to {VIEW_PX_RANGE[1]} pixels. Got: {n}")
    return n


def cmd_collect(args: argparse.Namespace) -> int:
    """One-shot collection: open the source as the daemon would, keep N frames, print progress."""
    import signal

    from device.collect import Collector, CollectRequest, run_once
    from device.preprocess import Preprocessor
    from device.progress import Progress

    logging.basicConfig(level="WARNING", format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    req = CollectRequest(args.label, args.count, args.interval_s, args.view_px)
    manifest = load_manifest(args.manifest)
    spec = manifest.variant(args.variant).input
    pre = Preprocessor(manifest.preprocess, spec, args.invert)
    config = camera_config(args, manifest)
    golden = manifest.golden_path() if manifest.golden is not None else None
    collector = Collector(args.data_dir, manifest.preprocess, spec,
                          {"source": args.source, "variant": args.variant, "model_sha256": manifest.variant(args.variant).sha256,
                           "collected_by": "one-shot"}, _view_px(args.view_px))
    source = _source_factory(args, golden, config)()  # SourceError ("Device or resource busy") is one line
    bar = Progress(req.count, f"collect {req.label!r}", enabled=None if not args.json else False)
    status_file: Optional[Path] = args.status_file

    def on_signal(*_: object) -> None:
        collector.cancel()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    def read() -> Frame:
        from device.frames import ExtrasSource

        if isinstance(source, ExtrasSource):
            source.want_extras()
        return source.read()

    def tensor_of(frame: Frame) -> Any:
        return pre.tensor(frame.pixels, frame.fmt, frame.size, frame.colour_space)

    def progress(st: dict[str, Any]) -> None:
        bar.update(st.get("saved", 0) + st.get("failed", 0) - bar.n)
        if status_file is not None:
            tmp = status_file.with_name(status_file.name + ".tmp")
            tmp.write_text(json.dumps({**st, "pid": os.getpid()}) + "\n")
            os.replace(tmp, status_file)

    try:
        st = run_once(read, tensor_of, collector, req, progress)
    finally:
        source.close()
        collector.close()
        bar.close()
    if args.json:
        print(json.dumps(st, indent=1))
    else:
        print(f"{st['state']}: {st.get('saved', 0)} of {req.count} frames of {req.label!r} in {st.get('dir')}"
              + (f"; {st['failed']} could not be written ({st.get('last_error')})" if st.get("failed") else ""),
              file=sys.stderr)
    return 0 if st["state"] == "done" and not st.get("failed") else EXIT_ERROR


def cmd_bench(args: argparse.Namespace) -> int:
    """Run the benchmark for one variant or all, print a report or JSON."""
    from device.bench import format_text, run_bench

    manifest = load_manifest(args.manifest)
    variants = list(manifest.variants) if args.variant == "all" else [args.variant]
    config = camera_config(args, manifest)
    results = []
    for v in variants:
        r = run_bench(manifest, v, args.source, args.runs, args.warmup, args.threads, args.runtime, args.invert, config,
                      args.hardware_root, progress=not args.json, xnnpack=args.xnnpack)
        results.append(r)
        if not args.json:
            print(format_text(r), flush=True)
    if args.json:
        print(json.dumps({"results": [r.to_json() for r in results]}, indent=1))
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    """Measure every configuration, print the table (or JSON) and the choice."""
    from device.sweep import run_sweep
    from device.tuning import choose, format_table

    manifest = load_manifest(args.manifest)
    variants = args.variant or [v for v in manifest.variants if manifest.model_path(v).is_file()]
    report = run_sweep(manifest, variants, args.threads, args.xnnpack, args.frames, args.warmup, args.rounds,
                       args.golden_count, args.runtime, args.gate_points, args.hardware_root,
                       progress=None if args.json else lambda m: print(m, file=sys.stderr, flush=True))
    choice = choose(report, args.tie_pct)
    if args.json:
        print(json.dumps({"report": report.to_json(), "choice": choice.to_json() if choice else None}, indent=1))
    else:
        print(format_table(report, choice))
        if choice is None:
            print("no configuration passed the accuracy gate")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point: parse, dispatch, turn errors into one clear line and an exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "run":
            return cmd_run(args)
        if args.command == "collect":
            return cmd_collect(args)
        if args.command == "sweep":
            return cmd_sweep(args)
        return cmd_bench(args)
    except DeviceError as e:
        print(f"edgekit-device: error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except ValueError as e:
        print(f"edgekit-device: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as e:  # an unwritable --results / --status-file, a missing golden set, ...
        print(f"edgekit-device: error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
