"""``python -m device`` / ``edgekit-device``: run the daemon, or benchmark the pipeline.

The one place where parts are chosen: source, runtime, engine, preprocessor, daemon.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

from device.daemon import default_stale_after_s
from device.errors import DeviceError
from device.frames import DEFAULT_CAMERA, CameraConfig, FrameSource, parse_size
from device.manifest import VARIANTS, Manifest, load_manifest
from device.runtime import RUNTIMES

EXIT_USAGE = 2
EXIT_ERROR = 1


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--manifest", required=True, type=Path, help="manifest.json (or its folder) written by `python -m host run`")
    p.add_argument("--runtime", default="auto", choices=["auto", *RUNTIMES], help="TFLite runtime to use; auto takes the first importable of tflite-runtime, ai-edge-litert, tensorflow")
    p.add_argument("--threads", type=int, default=None, metavar="N", help="interpreter threads (None: the runtime's own choice)")
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
    sub = parser.add_subparsers(dest="command", required=True, metavar="{run,bench}")
    run = sub.add_parser(
        "run",
        help="classify camera frames until stopped, serving the live page / and /healthz /stats /metrics /latest on 127.0.0.1",
        description="Run the classifier daemon. SIGTERM/SIGINT exit 0 after closing the camera and flushing results; "
        "after --max-failures source failures in a row it exits 3 so a supervisor restarts it.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    _common(run)
    run.add_argument("--variant", default="int8", choices=VARIANTS, help="model variant from the manifest")
    run.add_argument("--source", default="picamera2",
                     help="picamera2 | fake-picamera2[:stall-after=N] (a stand-in camera; with stall-after it stops "
                     "delivering after N frames, as a loose cable does) | folder:DIR | synthetic")
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
    return parser


def _source_factory(args: argparse.Namespace, manifest_golden: Optional[Path], config: CameraConfig):  # type: ignore[no-untyped-def]
    spec: str = args.source
    if spec == "picamera2":
        from device.pi_camera import PiCameraSource

        return lambda: PiCameraSource(config)
    if spec == "fake-picamera2" or spec.startswith("fake-picamera2:"):
        import numpy as np

        from device.fake_picamera2 import FakePicamera2
        from device.pi_camera import PiCameraSource

        stall_after = _fake_camera_options(spec)
        images = None
        if manifest_golden is not None:
            with np.load(manifest_golden, allow_pickle=False) as z:
                images = z["images"]
        return lambda: PiCameraSource(config, factory=lambda: FakePicamera2(images=images, stall_after=stall_after))
    if spec == "synthetic":
        from device.frames import SyntheticSource

        if manifest_golden is None:
            raise DeviceError("--source synthetic needs the golden set named in the manifest; re-run `python -m host run`")
        return lambda: SyntheticSource.from_golden(manifest_golden, config, loop=True, fps=args.fps)
    if spec.startswith("folder:"):
        from device.frames import FolderSource

        return lambda: FolderSource(spec[len("folder:") :], loop=args.loop)
    raise DeviceError(f"unknown --source {spec!r}; use picamera2, fake-picamera2, folder:DIR or synthetic")


def _fake_camera_options(spec: str) -> Optional[int]:
    """``fake-picamera2[:stall-after=N]`` → N (None: never stalls)."""
    _, _, opts = spec.partition(":")
    if not opts:
        return None
    key, _, value = opts.partition("=")
    if key != "stall-after" or not value.isdigit():
        raise ValueError(f"--source fake-picamera2 takes one option, stall-after=N (frames before the camera stalls). Got: {spec!r}")
    return int(value)


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
    engine = open_engine(manifest, args.variant, args.runtime, args.threads, isolate=True)
    pre = Preprocessor(manifest.preprocess, engine.input_spec, args.invert)
    v = manifest.variant(args.variant)
    info = {
        "variant": args.variant,
        "model_path": str(manifest.model_path(args.variant)),
        "sha256": v.sha256,
        "runtime": engine.runtime.name,
        "runtime_version": engine.runtime.version,
        "threads": args.threads,
        "source": args.source,
        "labels": list(manifest.labels),
        # what the fps alert compares with: the camera's frame rate, the synthetic pacing, or 0 (unpaced)
        "target_fps": config.frame_rate if args.source in ("picamera2", "fake-picamera2") else (args.fps if args.source == "synthetic" else 0.0),
    }

    def make_pipeline(source: FrameSource) -> Pipeline:
        return Pipeline(source, engine, pre, manifest.labels)

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
    )
    daemon.install_signal_handlers()
    return daemon.run()


def cmd_bench(args: argparse.Namespace) -> int:
    """Run the benchmark for one variant or all, print a report or JSON."""
    from device.bench import format_text, run_bench

    manifest = load_manifest(args.manifest)
    variants = list(manifest.variants) if args.variant == "all" else [args.variant]
    config = camera_config(args, manifest)
    results = []
    for v in variants:
        r = run_bench(manifest, v, args.source, args.runs, args.warmup, args.threads, args.runtime, args.invert, config,
                      args.hardware_root, progress=not args.json)
        results.append(r)
        if not args.json:
            print(format_text(r), flush=True)
    if args.json:
        print(json.dumps({"results": [r.to_json() for r in results]}, indent=1))
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point: parse, dispatch, turn errors into one clear line and an exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "run":
            return cmd_run(args)
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
