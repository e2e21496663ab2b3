"""Run the whole host pipeline and print its figures against the targets, side by side.

    python bench/host_pipeline.py                  # full run with the default epochs, in a temp folder
    python bench/host_pipeline.py --epochs 5 --json
    python bench/host_pipeline.py --reuse artifacts  # figures of an existing `host run` output
    python bench/host_pipeline.py --quick            # 1 epoch on 2,000 images: checks the script runs

Targets (official Fashion-MNIST test split): float32 ≥ 93.5 % with ≤ 100,000 parameters,
trained in ≤ 600 s; int8 within 0.3 points of float32; int8 file ≤ 0.30x the float32 file.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

QUICK_TRAIN_LIMIT = 2_000
TARGETS = {"float_accuracy_min": 0.935, "params_max": 100_000, "train_seconds_max": 600.0, "int8_drop_points_max": 0.3, "int8_size_ratio_max": 0.30}


def figures(out: Path, wall_seconds: float | None) -> dict[str, Any]:
    """Collect the figures of one pipeline output folder."""
    man = json.loads((out / "manifest.json").read_text())
    model = man["model"]
    ev = model.get("evaluation", {})
    v = man["variants"]
    f32 = v["float32"]
    rows = {
        name: {
            "accuracy": d["accuracy"],
            "delta_points": 100 * (d["accuracy"] - f32["accuracy"]),
            "seed_test_accuracy": ev.get(name, {}).get("seed_test_accuracy"),
            "keras_agreement": ev.get(name, {}).get("keras_agreement"),
            "bytes": d["bytes"],
            "size_ratio": d["bytes"] / f32["bytes"],
            "latency_p50_ms": ev.get(name, {}).get("latency_p50_ms"),
            "latency_p99_ms": ev.get(name, {}).get("latency_p99_ms"),
        }
        for name, d in v.items()
    }
    checks = {
        "float_accuracy": (f32["accuracy"] >= TARGETS["float_accuracy_min"], f"{100 * f32['accuracy']:.2f} % >= 93.5 %"),
        "params": (model["params"] <= TARGETS["params_max"], f"{model['params']:,} <= 100,000"),
        "train_seconds": (float(model["train_seconds"]) <= TARGETS["train_seconds_max"], f"{float(model['train_seconds']):.0f} s <= 600 s"),
        "int8_drop": (abs(rows["int8"]["delta_points"]) <= TARGETS["int8_drop_points_max"] or rows["int8"]["delta_points"] > 0, f"{rows['int8']['delta_points']:+.2f} points (within 0.3)"),
        "int8_size_ratio": (rows["int8"]["size_ratio"] <= TARGETS["int8_size_ratio_max"], f"{rows['int8']['size_ratio']:.3f} <= 0.30"),
    }
    return {
        "out": str(out),
        "params": model["params"],
        "epochs_run": model.get("epochs_run"),
        "epochs": model.get("epochs"),
        "train_seconds": model["train_seconds"],
        "keras_accuracy": model["keras_accuracy"],
        "wall_seconds": wall_seconds,
        "cpu_count": os.cpu_count(),
        "load_average_1min": os.getloadavg()[0],
        "interpreter": f"{model.get('interpreter')} {model.get('interpreter_version')}",
        "variants": rows,
        "targets": {k: {"ok": ok, "figure": text} for k, (ok, text) in checks.items()},
    }


def print_table(f: dict[str, Any]) -> None:
    """Human-readable figures: one row per variant, then the targets."""
    wall = "reused" if f["wall_seconds"] is None else f"{f['wall_seconds']:.0f} s"
    print(f"model: {f['params']:,} parameters; {f['epochs_run']}/{f['epochs']} epochs in {float(f['train_seconds']):.0f} s "
          f"(whole pipeline {wall}; {f['cpu_count']} CPUs, load now {f['load_average_1min']:.1f}); "
          f"Keras {100 * f['keras_accuracy']:.2f} %; interpreter {f['interpreter']}")
    print(f"{'variant':8} {'accuracy':>9} {'Δ pts':>6} {'seed test':>9} {'=Keras':>7} {'bytes':>9} {'vs f32':>6} {'p50 µs':>7} {'p99 µs':>7}")
    for name, r in f["variants"].items():
        print(f"{name:8} {100 * r['accuracy']:8.2f}% {r['delta_points']:+6.2f} {100 * (r['seed_test_accuracy'] or 0):8.2f}% "
              f"{100 * (r['keras_agreement'] or 0):6.2f}% {r['bytes']:9,} {r['size_ratio']:6.3f} "
              f"{1000 * (r['latency_p50_ms'] or 0):7.1f} {1000 * (r['latency_p99_ms'] or 0):7.1f}")
    print("targets:")
    for k, t in f["targets"].items():
        print(f"  {'PASS' if t['ok'] else 'MISS'}  {k:16} {t['figure']}")


def main(argv: list[str] | None = None) -> int:
    """Run (or reuse) the pipeline and print its figures."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default: the pipeline's default)")
    p.add_argument("--data-dir", type=Path, default=None, help="folder with the Fashion-MNIST IDX .gz files")
    p.add_argument("--out", type=Path, default=None, help="where to write the run (default: a temporary folder)")
    p.add_argument("--reuse", type=Path, default=None, metavar="DIR", help="print the figures of an existing output folder instead of running")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.add_argument("--quick", action="store_true",
                   help=f"1 epoch on {QUICK_TRAIN_LIMIT:,} training images: checks that it runs (the targets are not the point)")
    args = p.parse_args(argv)
    wall = None
    if args.reuse:
        out = args.reuse
    else:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        from host.pipeline import run_pipeline
        from host.train import DEFAULT_EPOCHS

        out = args.out or Path(tempfile.mkdtemp(prefix="edgekit-bench-")) / "out"
        t0 = time.perf_counter()
        if args.quick:
            run_pipeline(out, 1, args.data_dir, train_limit=QUICK_TRAIN_LIMIT, progress=False)
        else:
            run_pipeline(out, args.epochs or DEFAULT_EPOCHS, args.data_dir)
        wall = time.perf_counter() - t0
    if not (out / "manifest.json").is_file():
        print(f"error: {out} has no manifest.json; run `python -m host run --out {out}` first", file=sys.stderr)
        return 1
    f = figures(out, wall)
    if args.json:
        print(json.dumps(f, indent=2))
    else:
        print_table(f)
    return 0 if args.quick or all(t["ok"] for t in f["targets"].values()) else 3


if __name__ == "__main__":
    raise SystemExit(main())
