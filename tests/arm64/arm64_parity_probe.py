"""Runs INSIDE the emulated aarch64 root: the device code on the golden set, raw outputs to an .npz.

Only the standard library, numpy (1.26 there) and the ``device`` package: this is what a Pi runs.
Python 3.9+ syntax. Usage (inside the root)::

    python arm64_parity_probe.py --manifest DIR/manifest.json --variant int8 \
        --runtime tflite-runtime --out OUT.npz [--frames]

Writes ``inputs`` and ``raw`` (the model's input tensors and raw output tensors, one row per
golden image, fed as the official 28x28 images) and, with ``--frames``, ``frame_pixels``,
``frame_inputs`` and ``frame_raw`` for the same images rendered as camera frames and passed through the device's own
preprocessing. Prints one JSON line: runtime, versions, machine and EMULATED timings.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from typing import Optional

import numpy as np


def _builtin_only(runtime: str) -> None:
    """Make the runtime's Interpreter default to BUILTIN_WITHOUT_DEFAULT_DELEGATES (diagnosis only)."""
    import functools
    import importlib

    from device.runtime import RUNTIMES

    mod = importlib.import_module(RUNTIMES[runtime])
    base = mod.Interpreter
    resolver = mod.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    setattr(mod, "Interpreter", functools.partial(base, experimental_op_resolver_type=resolver))  # noqa: B010


def main(argv: Optional[list[str]] = None) -> int:
    """Run the golden set through the device engine and save raw outputs."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--manifest", required=True)
    ap.add_argument("--variant", default="int8")
    ap.add_argument("--runtime", default="auto")
    ap.add_argument("--out", required=True)
    ap.add_argument("--frames", action="store_true")
    ap.add_argument("--limit", type=int, default=0, help="first N golden images only (0 = all)")
    ap.add_argument("--no-delegates", action="store_true",
                    help="builtin kernels only (no default XNNPACK delegate), to tell kernel paths apart")
    args = ap.parse_args(argv)

    from device.engine import open_engine
    from device.manifest import load_manifest
    from device.quant import to_input

    manifest = load_manifest(args.manifest)
    golden = np.load(str(manifest.golden_path()))
    images = golden["images"]
    labels = golden["labels"]
    if args.limit:
        images, labels = images[: args.limit], labels[: args.limit]

    t0 = time.perf_counter_ns()
    if args.no_delegates:
        _builtin_only(args.runtime)
    engine = open_engine(manifest, args.variant, runtime=args.runtime)
    load_ms = (time.perf_counter_ns() - t0) / 1e6

    inputs = np.stack([to_input(img.astype(np.float32) / np.float32(255.0), engine.input_spec)[0] for img in images])
    raws = []
    invoke_ns = []
    for x in inputs:
        engine.set_input(x[None])
        t = time.perf_counter_ns()
        engine.invoke_only()
        invoke_ns.append(time.perf_counter_ns() - t)
        raws.append(engine.get_output()[0])
    out: dict[str, np.ndarray] = {"inputs": inputs, "raw": np.stack(raws)}

    frames_note = "not run"
    if args.frames:
        from arm64_frames import frame_inputs  # beside this file; adapts to the device's frame API

        pix, fin, frames_note = frame_inputs(manifest, engine.input_spec, images, labels)
        if pix is not None and fin is not None:
            out["frame_pixels"] = pix
            out["frame_inputs"] = fin
            out["frame_raw"] = np.stack([engine.run(x[None])[0] for x in fin])

    np.savez(args.out, **out)  # type: ignore[arg-type]
    inv = np.array(invoke_ns[1:] or invoke_ns, dtype=np.float64) / 1e6
    print(json.dumps({
        "runtime": engine.runtime.name,
        "runtime_version": engine.runtime.version,
        "numpy": np.__version__,
        "machine": platform.machine(),
        "python": platform.python_version(),
        "count": len(images),
        "frames": frames_note,
        "delegates": "none (builtin kernels)" if args.no_delegates else "default (XNNPACK)",
        "emulated_load_ms": round(load_ms, 2),
        "emulated_first_invoke_ms": round(invoke_ns[0] / 1e6, 3),
        "emulated_invoke_p50_ms": round(float(np.percentile(inv, 50)), 3),
        "emulated_invoke_p90_ms": round(float(np.percentile(inv, 90)), 3),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
