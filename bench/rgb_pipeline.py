"""Per-frame cost of a 96x96 RGB int8 model on the stream the daemon configures, side by side with invoke().

The model: a small MobileNet-style network (a 3x3 stem, depthwise-separable blocks, width
multiplier ``--alpha``), built here in Keras with random weights (timing does not need
trained ones), converted full-integer int8 (int8 input and output) with a representative
set of synthetic colour photos, and written with a schema-2 manifest (``color: rgb``,
``normalize`` mean/std 127.5, i.e. [-1, 1]) and a golden set, so ``python -m device bench
--manifest OUT/manifest.json`` runs on it too (``--out OUT``).

The stream is the one ``CameraConfig.for_contract`` gives the daemon for this model: a
256x192 lores YUV420 stream (4:3 like the 640x480 main; 2x2 Y pixels and one U and V sample
per model pixel), delivered by the fake camera (``FakePicamera2`` through ``PiCameraSource``)
as picamera2 does, pre-rendered and cycled. Measured, each on the same engine and frames:

* **invoke alone**: ``invoke()`` with the input set once, in a tight loop.
* **preprocess**: ``Preprocessor.into`` from the lores buffer into the interpreter's input
  tensor (Y, U, V block sums → R,G,B at 96x96 → normalise → quantise), ``crop: center``;
  and the same with ``crop: object`` (box found on the frame, area-resampled per frame).
* **pipeline**: ``Pipeline.step()`` as the daemon runs it (capture → preprocess → set_tensor
  + invoke → top-k), for both crops, and on the 640x480 main stream (B,G,R) for contrast.

CPU time is the process's (``time.process_time_ns``); the paths run in short batches
interleaved round by round and each ratio is taken within its round, then the median over
rounds is reported (load that drifts between rounds cancels).

    python bench/rgb_pipeline.py [--quick] [--json] [--threads 1] [--out DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Optional

import machine
import numpy as np
from device_pipeline import batch_ns

from device.engine import LiteRTEngine, open_engine
from device.fake_picamera2 import FakePicamera2
from device.frames import CameraConfig
from device.manifest import (
    Golden,
    Manifest,
    Normalize,
    Preprocess,
    TensorSpec,
    Variant,
    sha256_bytes,
)
from device.pi_camera import PiCameraSource
from device.pipeline import STAGES, Pipeline
from device.preprocess import Preprocessor, model_input

SIZE = 96
LABELS = ("disc", "bar", "square", "ring")
CONTRACT = Preprocess(size=(SIZE, SIZE), color="rgb", crop="center", contrast="none", polarity="any",
                      normalize=Normalize(range=None, mean=(127.5,), std=(127.5,)))
FULL_BLOCKS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1), (512, 1), (1024, 2), (1024, 1))
QUICK_BLOCKS = ((64, 1), (128, 2), (128, 1))
INVOKE, PRE, PRE_OBJ, PIPE, PIPE_OBJ, PIPE_MAIN = (
    "invoke alone", "preprocess, crop center", "preprocess, crop object",
    "pipeline, crop center", "pipeline, crop object", "pipeline, main 640x480 BGR",
)


def photos(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` synthetic colour photos [n, 96, 96, 3] (R, G, B) of four kinds of object on plain backgrounds, and their labels."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    images = np.empty((n, SIZE, SIZE, 3), np.uint8)
    labels = np.arange(n) % len(LABELS)
    for i, k in enumerate(labels):
        img = np.empty((SIZE, SIZE, 3), np.float32)
        img[...] = rng.integers(40, 220, 3)
        img += (yy[..., None] - SIZE / 2) * rng.normal(0, 0.3, 3)  # a gentle gradient
        cy, cx, r = rng.integers(30, 66), rng.integers(30, 66), rng.integers(14, 28)
        colour = rng.integers(0, 256, 3)
        d2 = (yy - cy) ** 2 + (xx - cx) ** 2
        mask = {0: d2 < r * r, 1: (np.abs(yy - cy) < r // 3) & (np.abs(xx - cx) < r),
                2: (np.abs(yy - cy) < r) & (np.abs(xx - cx) < r), 3: (d2 < r * r) & (d2 > (r // 2) ** 2)}[int(k)]
        img[mask] = colour
        images[i] = np.clip(img, 0, 255).astype(np.uint8)
    return images, labels.astype(np.int64)


def build_model(alpha: float, blocks: tuple[tuple[int, int], ...], classes: int) -> Any:
    """A MobileNet-style classifier for 96x96x3 inputs: stem, depthwise-separable blocks, pooling, dense."""
    import tensorflow as tf

    layers = tf.keras.layers

    def bn_relu(x: Any) -> Any:
        return layers.ReLU(6.0)(layers.BatchNormalization()(x))

    inp = tf.keras.Input((SIZE, SIZE, 3))
    x = bn_relu(layers.Conv2D(max(8, int(32 * alpha)), 3, strides=2, padding="same", use_bias=False)(inp))
    for filters, stride in blocks:
        x = bn_relu(layers.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False)(x))
        x = bn_relu(layers.Conv2D(max(8, int(filters * alpha)), 1, use_bias=False)(x))
    x = layers.GlobalAveragePooling2D()(x)
    out = layers.Softmax()(layers.Dense(classes)(x))
    return tf.keras.Model(inp, out, name=f"mobilenet_style_{alpha}")


def convert_int8(model: Any, representative: np.ndarray) -> bytes:
    """Full-integer int8 conversion (int8 input and output), calibrated on model_input of ``representative``."""
    import tensorflow as tf

    real = model_input(representative, CONTRACT, TensorSpec((1, SIZE, SIZE, 3), "float32"))

    def gen() -> Any:
        for x in real:
            yield [x[None]]

    c = tf.lite.TFLiteConverter.from_keras_model(model)
    c.optimizations = [tf.lite.Optimize.DEFAULT]
    c.representative_dataset = gen
    c.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    c.inference_input_type = tf.int8
    c.inference_output_type = tf.int8
    return bytes(c.convert())


def write_artifacts(out: Path, quick: bool, alpha: float) -> Manifest:
    """Build, convert and write model_int8.tflite, golden.npz and manifest.json into ``out``."""
    import io

    model = build_model(alpha, QUICK_BLOCKS if quick else FULL_BLOCKS, len(LABELS))
    rep, _ = photos(16 if quick else 100, seed=1)
    data = convert_int8(model, rep)
    (out / "model_int8.tflite").write_bytes(data)
    engine = LiteRTEngine(data, threads=1)
    images, labels = photos(8 if quick else 64, seed=2)
    x = model_input(images, CONTRACT, engine.input_spec)
    raw = np.stack([engine.run(x[i : i + 1]).reshape(-1) for i in range(len(x))])
    buf = io.BytesIO()
    np.savez(buf, images=images, labels=labels, raw_int8=raw)
    (out / "golden.npz").write_bytes(buf.getvalue())
    variant = Variant("int8", "model_int8.tflite", sha256_bytes(data), len(data), None, engine.input_spec, engine.output_spec)
    m = Manifest(labels=LABELS, input=TensorSpec((1, SIZE, SIZE, 3), "float32"), preprocess=CONTRACT,
                 variants={"int8": variant}, root=out,
                 model={"name": model.name, "params": int(model.count_params()), "weights": "random (timing only)"},
                 golden=Golden("golden.npz", sha256_bytes(buf.getvalue()), len(images)))
    m.write(out)
    return m


def stage_split_us(pipe: Pipeline, frames: int) -> dict[str, float]:
    """Median per-stage time in µs over ``frames`` steps, on the pipeline's own (wall) clock."""
    rows = np.array([pipe.step().stage_ns for _ in range(frames)], dtype=np.int64)
    return {s: float(np.median(rows[:, i])) / 1e3 for i, s in enumerate(STAGES)}


def measure(m: Manifest, threads: int, rounds: int, frames: int) -> dict[str, Any]:
    """Run the paths interleaved and return the report."""
    engine = open_engine(m, "int8", threads=threads)
    with np.load(m.golden_path()) as z:
        images = z["images"]
    obj_contract = dataclasses.replace(CONTRACT, crop="object")
    config = CameraConfig.for_contract(CONTRACT)
    assert CameraConfig.for_contract(obj_contract).lores_size == config.lores_size

    def camera(cfg: CameraConfig, num: int) -> PiCameraSource:  # one fake camera each: a camera is held by one opener
        return PiCameraSource(cfg, factory=lambda: FakePicamera2(camera_num=num, images=images))

    sources = [camera(config, 0), camera(config, 1), camera(config.with_stream("main"), 2)]
    grabbed = [sources[0].read() for _ in range(len(images))]
    spec = engine.input_spec
    x = np.zeros(spec.shape, np.dtype(spec.dtype))
    pre, pre_obj = Preprocessor(CONTRACT, spec), Preprocessor(obj_contract, spec)
    pipes = (Pipeline(sources[0], engine, Preprocessor(CONTRACT, spec), m.labels),
             Pipeline(sources[1], engine, Preprocessor(obj_contract, spec), m.labels),
             Pipeline(sources[2], engine, Preprocessor(CONTRACT, spec), m.labels))
    f0 = grabbed[0]
    pre.into(f0.pixels, f0.fmt, f0.size, x, f0.colour_space)
    counter = [0]

    def preprocess_with(p: Preprocessor) -> Callable[[], None]:
        def one() -> None:
            f = grabbed[counter[0] % len(grabbed)]
            counter[0] += 1
            p.into(f.pixels, f.fmt, f.size, x, f.colour_space)

        return one

    paths: dict[str, tuple[Callable[[], object], int]] = {
        INVOKE: (engine.invoke_only, frames), PRE: (preprocess_with(pre), frames), PRE_OBJ: (preprocess_with(pre_obj), frames),
        PIPE: (pipes[0].step, frames), PIPE_OBJ: (pipes[1].step, frames), PIPE_MAIN: (pipes[2].step, max(3, frames // 4)),
    }
    engine.set_input(x)
    for fn, n in paths.values():  # warm-up, out of the figures
        batch_ns(fn, max(3, n // 4))
    per_round: dict[str, list[tuple[float, float]]] = {k: [] for k in paths}
    for _ in range(rounds):
        for name, (fn, n) in paths.items():
            engine.set_input(x)
            per_round[name].append(batch_ns(fn, n))

    def ratio(a: str, b: str) -> float:
        return statistics.median(ra[0] / rb[0] for ra, rb in zip(per_round[a], per_round[b]))

    split = {name: stage_split_us(p, max(20, frames)) for name, p in zip((PIPE, PIPE_OBJ, PIPE_MAIN), pipes)}
    for s in sources:
        s.close()
    return {
        "model": m.model, "input": spec.to_json(), "threads": threads, "runtime": engine.runtime.name,
        "runtime_version": engine.runtime.version, "stream": {"lores": list(config.lores_size), "main": list(config.main_size),
                                                              "format": f0.fmt, "colour_space": f0.colour_space,
                                                              "stride": int(f0.pixels.shape[1])},
        "machine": machine.describe(), "rounds": rounds, "frames_per_round": frames,
        "cpu_us_per_frame": {k: statistics.median(r[0] for r in v) / 1e3 for k, v in per_round.items()},
        "wall_us_per_frame": {k: statistics.median(r[1] for r in v) / 1e3 for k, v in per_round.items()},
        "ratios_to_invoke": {k: ratio(k, INVOKE) for k in paths if k != INVOKE},
        "stage_us_wall": split,
    }


def main(argv: Optional[list[str]] = None) -> int:
    """Build the model, measure, print."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a narrower, shallower model and 3 short rounds (for tests)")
    ap.add_argument("--alpha", type=float, default=None, help="width multiplier (default: 0.5, or 0.25 with --quick)")
    ap.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default: 15, or 3 with --quick)")
    ap.add_argument("--frames", type=int, default=None, help="frames per round and path (default: 50, or 10 with --quick)")
    ap.add_argument("--threads", type=int, default=1, help="interpreter threads (default: %(default)s)")
    ap.add_argument("--out", type=Path, default=None, help="keep the model, golden set and manifest here")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = ap.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    alpha = args.alpha or (0.25 if args.quick else 0.5)
    rounds = args.rounds or (3 if args.quick else 15)
    frames = args.frames or (10 if args.quick else 50)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="edgekit-rgb-") as tmp:
        out = args.out or Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        print(f"building and converting a {SIZE}x{SIZE} RGB int8 model (alpha {alpha}) into {out} ...", file=sys.stderr, flush=True)
        with contextlib.redirect_stdout(sys.stderr):  # TensorFlow's converter talks on stdout; --json owns it
            m = write_artifacts(out, args.quick, alpha)
        print(f"measuring ({rounds} rounds) ...", file=sys.stderr, flush=True)
        report = measure(m, args.threads, rounds, frames)
    report["seconds"] = round(time.perf_counter() - t0, 1)
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    cpu, wall, rat = report["cpu_us_per_frame"], report["wall_us_per_frame"], report["ratios_to_invoke"]
    st = report["stream"]
    print(f"{report['model']['name']} ({report['model']['params']} parameters), input {report['input']}, "
          f"{report['runtime']} {report['runtime_version']}, {args.threads} thread(s)")
    print(f"stream: lores {st['lores'][0]}x{st['lores'][1]} {st['format']} (stride {st['stride']}, {st['colour_space']}) "
          f"beside main {st['main'][0]}x{st['main'][1]}; machine: {machine.line()}")
    print(f"median of {rounds} interleaved rounds; CPU = process CPU time")
    print(f"{'path':<30}{'CPU µs/frame':>14}{'wall µs/frame':>15}{'x invoke':>10}")
    for k in cpu:
        print(f"{k:<30}{cpu[k]:>14.1f}{wall[k]:>15.1f}{(1.0 if k == INVOKE else rat[k]):>10.2f}")
    for k, split in report["stage_us_wall"].items():
        print(f"stage split, {k} (median µs, wall): " + "  ".join(f"{s} {split[s]:.1f}" for s in STAGES))
    return 0


if __name__ == "__main__":
    sys.exit(main())
