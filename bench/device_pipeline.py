"""Per-frame cost of the device pipeline, side by side in one run, as ratios.

What is measured, each path on the same engine / model / frames:

* **invoke alone**: ``invoke()`` on the daemon's interpreter, input set once beforehand (no
  ``set_tensor``), in a tight loop: the floor any pipeline is compared with.
* **pipeline, lores YUV420**: ``Pipeline.step()`` exactly as the daemon runs it, on frames
  delivered the way the daemon configures the real camera (640x480 ``main`` + a 112x84 ``lores``
  YUV420 stream with padded rows; the classifier reads the lores Y plane): capture →
  preprocess → ``set_tensor`` + ``invoke`` → postprocess (top-k, dequantise) → the ``Result``.
  Goal (issue 3): total per-frame CPU time ≤ 1.5x invoke alone (int8).
* **pipeline, main 640x480 BGR**: the same on the full main stream, for contrast (why lores).
* **new interpreter per frame**: the common pattern of picamera2's TensorFlow examples
  (``examples/tensorflow/real_time_with_labels.py``: ``InferenceTensorFlow`` is called for
  every lores frame and builds ``tflite.Interpreter(model_path=model, num_threads=4)``, calls
  ``allocate_tensors()``, ``get_input_details()``, ``get_output_details()``, preprocesses,
  ``set_tensor``, ``invoke``, ``get_tensor``). Reproduced here per frame: read the same lores
  frame, ``Interpreter(model_path=<the .tflite>, num_threads=T)`` with the runtime the daemon
  uses, ``allocate_tensors()``, ``get_input_details()`` / ``get_output_details()``, the
  daemon's own preprocessing into a new input array, ``set_tensor``, ``invoke``, ``get_tensor``
  and the daemon's top-k. Nothing is added: the example's per-frame label-file read (with
  ``--label``) and its OpenCV colour conversion are left out, so the baseline is if anything
  cheaper than the example. T is ``--threads`` (the same as the pipeline's); the example's
  literal ``num_threads=4`` is shown on a second line for reference.
  Goal (issue 3): the daemon's pipeline ≥ 20x faster.

With ``--baseline-rev REV`` the same run also times the preprocessing of git revision REV
(``device/preprocess.py`` as it was there, loaded beside today's) on the same frames, alone and
inside the same pipeline: "did the grey path get slower" as a ratio measured side by side.

CPU time is the process's (``time.process_time_ns``: it includes interpreter worker threads
when ``num_threads`` > 1; with one thread it equals the caller's thread time), so other processes
on a shared machine inflate it far less than wall time; wall time is shown too. The paths
run in short batches interleaved round by round, each ratio is taken within its round (so load
that drifts between rounds cancels) and the median over rounds is reported. The per-stage split
is the median of the pipeline's own stage clocks, once with wall time (``perf_counter_ns``, as
the daemon reports it) and once with the thread's CPU clock.

    python bench/device_pipeline.py --manifest ARTIFACTS/manifest.json [--variant int8] [--json] [--quick]
        [--baseline-rev REV]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Optional

import machine  # bench/machine.py, beside this script
import numpy as np

from device.engine import open_engine
from device.frames import CameraConfig, SyntheticSource
from device.manifest import load_manifest
from device.pipeline import STAGES, Pipeline, top_k_raw
from device.preprocess import Preprocessor
from device.runtime import load_runtime

INVOKE, LORES, MAIN, FRESH, FRESH4 = (
    "invoke alone",
    "pipeline, lores YUV420",
    "pipeline, main 640x480 BGR",
    "new interpreter per frame",
    "  same, num_threads=4",
)
EXAMPLE_THREADS = 4  # what picamera2's TensorFlow examples pass
PRE_NOW, PRE_BEFORE, LORES_BEFORE = "preprocess alone", "preprocess alone, {rev}", "pipeline, lores YUV420, {rev}"
REPO = Path(__file__).resolve().parents[1]


def preprocess_at(rev: str) -> ModuleType:
    """device/preprocess.py as it was at git revision ``rev``, imported beside today's (it imports today's device.*)."""
    try:
        src = subprocess.run(["git", "-C", str(REPO), "show", f"{rev}:device/preprocess.py"], check=True,
                             capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        raise SystemExit(f"device_pipeline.py: error: cannot read device/preprocess.py at {rev!r}: {e}") from None
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(src)
    spec = importlib.util.spec_from_file_location(f"preprocess_{rev}", f.name)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up while it executes
    try:
        spec.loader.exec_module(mod)
    except ImportError as e:
        raise SystemExit(f"device_pipeline.py: error: device/preprocess.py at {rev!r} does not import beside today's "
                         f"device package ({e}); pick a revision whose imports still exist") from None
    finally:
        Path(f.name).unlink()
    return mod


class OldInto:
    """An older Preprocessor behind today's ``into`` signature (the frame's colour space is ignored, as it was)."""

    def __init__(self, old: Any):
        self.old = old

    @property
    def last_inverted(self) -> bool:
        """As the wrapped preprocessor says."""
        return bool(self.old.last_inverted)

    def into(self, pixels: Any, fmt: str, size: Any, out: Any, colour_space: Optional[str] = None) -> None:
        """The old ``into``."""
        self.old.into(pixels, fmt, size, out)


def batch_ns(fn: Callable[[], object], n: int) -> tuple[float, float]:
    """(process CPU ns, wall ns) per call of ``fn`` over ``n`` calls."""
    c0, w0 = time.process_time_ns(), time.perf_counter_ns()
    for _ in range(n):
        fn()
    return (time.process_time_ns() - c0) / n, (time.perf_counter_ns() - w0) / n


def stage_split_us(pipe: Pipeline, frames: int) -> dict[str, float]:
    """Median per-stage time in µs over ``frames`` steps, on the pipeline's own clock."""
    rows = np.array([pipe.step().stage_ns for _ in range(frames)], dtype=np.int64)
    return {s: float(np.median(rows[:, i])) / 1e3 for i, s in enumerate(STAGES)}


def main(argv: Optional[list[str]] = None) -> int:
    """Measure and print the ratios."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--manifest", required=True, help="manifest.json or its folder")
    ap.add_argument("--variant", default="int8", help="model variant (default: %(default)s)")
    ap.add_argument("--frames", type=int, default=200, help="frames per round for the cheap paths (default: %(default)s)")
    ap.add_argument("--fresh-frames", type=int, default=8, help="frames per round for new-interpreter paths (default: %(default)s)")
    ap.add_argument("--rounds", type=int, default=25, help="interleaved rounds; medians are reported (default: %(default)s)")
    ap.add_argument("--threads", type=int, default=1, help="interpreter threads for the daemon's pipeline and the baseline (default: %(default)s)")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    ap.add_argument("--quick", action="store_true", help="3 rounds of short batches (for tests); the figures are rough")
    ap.add_argument("--baseline-rev", default=None, metavar="REV", help="also time device/preprocess.py of this git revision, side by side")
    args = ap.parse_args(argv)
    if args.quick:
        args.rounds, args.frames, args.fresh_frames = 3, 20, 2

    m = load_manifest(args.manifest)
    engine = open_engine(m, args.variant, threads=args.threads)
    runtime = load_runtime("auto")
    model_path = str(m.model_path(args.variant))
    lores = SyntheticSource.from_golden(m.golden_path(), CameraConfig.for_contract(m.preprocess, stream="lores"), limit=200)
    main_src = SyntheticSource.from_golden(m.golden_path(), CameraConfig.for_contract(m.preprocess, stream="main"), limit=16)
    lores.prerender()
    main_src.prerender()  # before any timing: the timed reads only hand frames out
    p_lores = Pipeline(lores, engine, Preprocessor(m.preprocess, engine.input_spec), m.labels)
    p_main = Pipeline(main_src, engine, Preprocessor(m.preprocess, engine.input_spec), m.labels)
    fresh_pre = Preprocessor(m.preprocess, engine.input_spec)
    labels = list(m.labels)

    first = lores.read()
    x = np.zeros(engine.input_spec.shape, dtype=np.dtype(engine.input_spec.dtype))
    fresh_pre.into(first.pixels, first.fmt, first.size, x, first.colour_space)  # invoke alone runs on a real frame's input

    def invoke_only() -> None:
        engine.invoke_only()

    def fresh_interpreter(threads: Optional[int]) -> Callable[[], object]:
        def one_frame() -> object:
            f = lores.read()
            it = runtime.interpreter_class(model_path=model_path, num_threads=threads)
            it.allocate_tensors()
            inp, out = it.get_input_details()[0], it.get_output_details()[0]
            buf = np.empty(inp["shape"], dtype=inp["dtype"])
            fresh_pre.into(f.pixels, f.fmt, f.size, buf, f.colour_space)
            it.set_tensor(inp["index"], buf)
            it.invoke()
            return [(labels[i], v) for i, v in top_k_raw(it.get_tensor(out["index"]), 3)]

        return one_frame

    paths: dict[str, tuple[Callable[[], object], int]] = {
        INVOKE: (invoke_only, args.frames),
        LORES: (p_lores.step, args.frames),
        MAIN: (p_main.step, max(10, args.frames // 10)),
        FRESH: (fresh_interpreter(args.threads), args.fresh_frames),
    }
    if args.threads != EXAMPLE_THREADS:
        paths[FRESH4] = (fresh_interpreter(EXAMPLE_THREADS), args.fresh_frames)
    lores_frames = [lores.read() for _ in range(len(lores))]
    pre_x = np.zeros(engine.input_spec.shape, dtype=np.dtype(engine.input_spec.dtype))

    def preprocess_only(pre: Any) -> Callable[[], object]:
        state = [0]

        def one() -> None:
            f = lores_frames[state[0] % len(lores_frames)]
            state[0] += 1
            pre.into(f.pixels, f.fmt, f.size, pre_x, f.colour_space)

        return one

    paths[PRE_NOW] = (preprocess_only(Preprocessor(m.preprocess, engine.input_spec)), args.frames)
    pre_before, lores_before = PRE_BEFORE.format(rev=args.baseline_rev), LORES_BEFORE.format(rev=args.baseline_rev)
    if args.baseline_rev:
        old = preprocess_at(args.baseline_rev)
        paths[pre_before] = (preprocess_only(OldInto(old.Preprocessor(m.preprocess, engine.input_spec))), args.frames)
        p_before = Pipeline(lores, engine, OldInto(old.Preprocessor(m.preprocess, engine.input_spec)), m.labels)  # type: ignore[arg-type]
        paths[lores_before] = (p_before.step, args.frames)

    engine.set_input(x)
    for fn, n in paths.values():  # warm-up, out of the figures
        batch_ns(fn, max(5, n // 4))
    rounds: dict[str, list[tuple[float, float]]] = {k: [] for k in paths}
    for _ in range(args.rounds):
        for name, (fn, n) in paths.items():
            engine.set_input(x)
            rounds[name].append(batch_ns(fn, n))

    def med(name: str, i: int = 0) -> float:
        return statistics.median(r[i] for r in rounds[name])

    def ratio(a: str, b: str) -> float:  # within each round, then the median
        return statistics.median(ra[0] / rb[0] for ra, rb in zip(rounds[a], rounds[b]))

    ratios = {
        "pipeline_lores_over_invoke": ratio(LORES, INVOKE),
        "pipeline_main_over_invoke": ratio(MAIN, INVOKE),
        "fresh_interpreter_over_pipeline": ratio(FRESH, LORES),
        "fresh_interpreter_over_invoke": ratio(FRESH, INVOKE),
    }
    if FRESH4 in rounds:
        ratios["fresh_interpreter_4_threads_over_pipeline"] = ratio(FRESH4, LORES)
    ratios["preprocess_over_invoke"] = ratio(PRE_NOW, INVOKE)
    if args.baseline_rev:
        ratios["preprocess_now_over_before"] = ratio(PRE_NOW, pre_before)
        ratios["pipeline_now_over_before"] = ratio(LORES, lores_before)
    goals = {"pipeline_lores_over_invoke": ("<=", 1.5), "fresh_interpreter_over_pipeline": (">=", 20.0)}
    ok = {k: (ratios[k] <= g if op == "<=" else ratios[k] >= g) for k, (op, g) in goals.items()}
    split_wall = stage_split_us(p_lores, 20 * args.frames // 2)
    split_cpu = stage_split_us(Pipeline(lores, engine, Preprocessor(m.preprocess, engine.input_spec), m.labels, clock=time.thread_time_ns), 20 * args.frames // 2)

    report: dict[str, Any] = {
        "variant": args.variant, "runtime": runtime.name, "runtime_version": runtime.version, "threads": args.threads,
        "rounds": args.rounds, "lores_size": list(lores.size or ()), "baseline_rev": args.baseline_rev,
        "machine": machine.describe(),
        "cpu_us_per_frame": {k: med(k) / 1e3 for k in paths}, "wall_us_per_frame": {k: med(k, 1) / 1e3 for k in paths},
        "stage_us_wall": split_wall, "stage_us_cpu": split_cpu, "ratios": ratios, "goals_met": ok,
    }
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    inv = med(INVOKE)
    print(f"{args.variant} model, runtime {runtime.name} {runtime.version}, {args.threads} thread(s); "
          f"median of {args.rounds} interleaved rounds; CPU = process CPU time")
    print(f"machine: {machine.line()}")
    print(f"{'path':<30}{'CPU µs/frame':>14}{'wall µs/frame':>15}{'x invoke':>10}")
    for k in paths:
        print(f"{k:<30}{med(k) / 1e3:>14.1f}{med(k, 1) / 1e3:>15.1f}{med(k) / inv:>10.2f}")
    print("stage split, lores pipeline (median µs)  " + "  ".join(f"{s} {split_wall[s]:.1f}" for s in STAGES) + "  [wall]")
    print("                                         " + "  ".join(f"{s} {split_cpu[s]:.1f}" for s in STAGES) + "  [thread CPU]")
    print(f"pipeline (lores) / invoke alone      = {ratios['pipeline_lores_over_invoke']:.2f}x  "
          f"(goal ≤ 1.5x: {'met' if ok['pipeline_lores_over_invoke'] else 'NOT met'})")
    print(f"pipeline (main 640x480) / invoke     = {ratios['pipeline_main_over_invoke']:.2f}x  (why the lores stream)")
    print(f"new interpreter per frame / pipeline = {ratios['fresh_interpreter_over_pipeline']:.1f}x  "
          f"(goal ≥ 20x: {'met' if ok['fresh_interpreter_over_pipeline'] else 'NOT met'}; "
          f"the ceiling is new interpreter / invoke alone = {ratios['fresh_interpreter_over_invoke']:.1f}x)")
    if FRESH4 in rounds:
        print(f"  with the example's num_threads=4   = {ratios['fresh_interpreter_4_threads_over_pipeline']:.1f}x")
    if args.baseline_rev:
        print(f"preprocess now / {args.baseline_rev}          = {ratios['preprocess_now_over_before']:.2f}x   "
              f"pipeline now / {args.baseline_rev} = {ratios['pipeline_now_over_before']:.2f}x  (same frames, same run)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
