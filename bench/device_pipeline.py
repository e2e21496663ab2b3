"""Per-frame cost of the device pipeline, side by side in one run, as ratios.

1. Full pipeline (capture → preprocess → invoke → postprocess) on the lores YUV420 stream of a
   640x480 camera, against invoke alone. Goal: total per-frame CPU time ≤ 1.5x invoke (int8).
   The same pipeline on the full 640x480 B,G,R main frame is shown for contrast.
2. The daemon's pipeline (interpreter built once) against the common pattern of building a new
   interpreter for every frame. Goal: ≥ 20x faster.

CPU time is the thread's own (``time.thread_time_ns``), so other processes on the machine do
not inflate it; the variants are interleaved round by round and the median round is reported.

    python bench/device_pipeline.py --manifest ARTIFACTS/manifest.json [--variant int8] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from typing import Callable

import numpy as np

from device.engine import open_engine, read_model_bytes
from device.frames import CameraConfig, SyntheticSource
from device.manifest import load_manifest
from device.pipeline import Pipeline
from device.preprocess import Preprocessor
from device.runtime import load_runtime


def per_frame_ns(fn: Callable[[], object], n: int) -> tuple[float, float]:
    """(CPU ns, wall ns) per call of ``fn`` over ``n`` calls."""
    c0, w0 = time.thread_time_ns(), time.perf_counter_ns()
    for _ in range(n):
        fn()
    return (time.thread_time_ns() - c0) / n, (time.perf_counter_ns() - w0) / n


def main() -> int:
    """Measure and print the ratios."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--manifest", required=True, help="manifest.json or its folder")
    ap.add_argument("--variant", default="int8")
    ap.add_argument("--frames", type=int, default=2000, help="frames per round for the cheap paths")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    m = load_manifest(args.manifest)
    engine = open_engine(m, args.variant, threads=args.threads)
    pre = Preprocessor(m.preprocess, engine.input_spec)
    lores = SyntheticSource.from_golden(m.golden_path(), CameraConfig(stream="lores"), limit=200)
    main_src = SyntheticSource.from_golden(m.golden_path(), CameraConfig(stream="main"), limit=16)
    p_lores = Pipeline(lores, engine, pre, m.labels)
    p_main = Pipeline(main_src, engine, pre, m.labels)
    x = np.zeros(engine.input_spec.shape, dtype=np.dtype(engine.input_spec.dtype))
    model_path = m.model_path(args.variant)
    runtime = load_runtime("auto")
    read_model_bytes(model_path, m.variant(args.variant).sha256)

    def invoke_only() -> None:
        engine.invoke_only()

    def fresh_interpreter() -> None:  # what many camera examples do: a new interpreter per frame
        f = lores.read()
        it = runtime.interpreter_class(model_path=str(model_path), num_threads=args.threads)
        it.allocate_tensors()
        buf = np.zeros_like(x)
        pre.into(f.pixels, f.fmt, f.size, buf)
        it.set_tensor(it.get_input_details()[0]["index"], buf)
        it.invoke()
        int(np.argmax(it.get_tensor(it.get_output_details()[0]["index"])))

    paths: dict[str, tuple[Callable[[], object], int]] = {
        "invoke alone": (invoke_only, args.frames),
        "pipeline, lores YUV420": (p_lores.step, args.frames),
        "pipeline, main 640x480 BGR": (p_main.step, max(50, args.frames // 10)),
        "new interpreter per frame": (fresh_interpreter, max(20, args.frames // 50)),
    }
    engine.set_input(x)
    for fn, n in paths.values():  # warm-up, out of the figures
        per_frame_ns(fn, max(10, n // 10))
    rounds: dict[str, list[tuple[float, float]]] = {k: [] for k in paths}
    for _ in range(args.rounds):
        for name, (fn, n) in paths.items():
            engine.set_input(x)
            rounds[name].append(per_frame_ns(fn, n))
    cpu = {k: statistics.median(c for c, _ in v) for k, v in rounds.items()}
    wall = {k: statistics.median(w for _, w in v) for k, v in rounds.items()}
    inv = cpu["invoke alone"]
    ratios = {
        "pipeline_lores_over_invoke": cpu["pipeline, lores YUV420"] / inv,
        "pipeline_main_over_invoke": cpu["pipeline, main 640x480 BGR"] / inv,
        "fresh_interpreter_over_pipeline": cpu["new interpreter per frame"] / cpu["pipeline, lores YUV420"],
    }
    goals = {
        "pipeline_lores_over_invoke": ("<=", 1.5),
        "fresh_interpreter_over_pipeline": (">=", 20.0),
    }
    ok = {k: (ratios[k] <= g if op == "<=" else ratios[k] >= g) for k, (op, g) in goals.items()}
    if args.json:
        print(json.dumps({"variant": args.variant, "runtime": runtime.name, "threads": args.threads,
                          "cpu_us_per_frame": {k: v / 1e3 for k, v in cpu.items()},
                          "wall_us_per_frame": {k: v / 1e3 for k, v in wall.items()},
                          "ratios": ratios, "goals_met": ok}, indent=1))
    else:
        print(f"{args.variant} model, runtime {runtime.name} {runtime.version}, {args.threads} thread(s); "
              f"median of {args.rounds} interleaved rounds")
        print(f"{'path':<30}{'CPU µs/frame':>14}{'wall µs/frame':>15}{'x invoke':>10}")
        for k in paths:
            print(f"{k:<30}{cpu[k] / 1e3:>14.1f}{wall[k] / 1e3:>15.1f}{cpu[k] / inv:>10.2f}")
        print(f"pipeline (lores) / invoke alone      = {ratios['pipeline_lores_over_invoke']:.2f}x  "
              f"(goal ≤ 1.5x: {'met' if ok['pipeline_lores_over_invoke'] else 'NOT met'})")
        print(f"pipeline (main 640x480) / invoke     = {ratios['pipeline_main_over_invoke']:.2f}x  (why the lores stream)")
        print(f"new interpreter per frame / pipeline = {ratios['fresh_interpreter_over_pipeline']:.1f}x  "
              f"(goal ≥ 20x: {'met' if ok['fresh_interpreter_over_pipeline'] else 'NOT met'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
