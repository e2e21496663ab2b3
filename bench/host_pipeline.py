"""Run the whole host pipeline and print its figures against the targets, side by side.

    python bench/host_pipeline.py                  # full run with the default epochs, in a temp folder
    python bench/host_pipeline.py --precision float32 --onednn-isa AVX2   # as on a CPU without bf16 / AVX-512
    python bench/host_pipeline.py --epochs 5 --seed 7 --json
    python bench/host_pipeline.py --reuse artifacts  # figures of an existing `host run` output
    python bench/host_pipeline.py --quick          # 1 epoch on 2,000 images: checks the script runs

Targets (official Fashion-MNIST test split): float32 ≥ 93.5 % with ≤ 100,000 parameters,
trained in ≤ 600 s; int8 within 0.3 points of float32; int8 file ≤ 0.30x the float32 file;
int8 on camera-like frames within 1 point of the same interpreter on the same raw images.

Every figure is printed with the machine it came from: CPU model, its avx2 / avx512f /
avx512_bf16 / amx_bf16 flags, the oneDNN ISA cap (ONEDNN_MAX_CPU_ISA) and the ISA oneDNN
really used, the training precision, and the load average (the cores may be shared).
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
TARGETS = {
    "float_accuracy_min": 0.935, "params_max": 100_000, "train_seconds_max": 600.0, "int8_drop_points_max": 0.3,
    "int8_size_ratio_max": 0.30, "camera_gap_points_max": 1.0,
}


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
            "camera_like_accuracy": ev.get(name, {}).get("camera_like_accuracy"),
            "camera_like_raw_accuracy": ev.get(name, {}).get("camera_like_raw_accuracy"),
        }
        for name, d in v.items()
    }
    training = json.loads((out / "training.json").read_text()) if (out / "training.json").is_file() else {}
    cam = rows["int8"]
    cam_gap = None
    ci = model.get("camera_like", {}).get("variants", {}).get("int8", {}).get("gap_ci95_points")
    cam_ci = "" if ci is None else f" ± {ci:.2f} (95 %)"
    if cam["camera_like_accuracy"] is not None and cam["camera_like_raw_accuracy"] is not None:
        cam_gap = 100 * (cam["camera_like_raw_accuracy"] - cam["camera_like_accuracy"])
    checks = {
        "float_accuracy": (f32["accuracy"] >= TARGETS["float_accuracy_min"], f"{100 * f32['accuracy']:.2f} % >= 93.5 %"),
        "params": (model["params"] <= TARGETS["params_max"], f"{model['params']:,} <= 100,000"),
        "train_seconds": (float(model["train_seconds"]) <= TARGETS["train_seconds_max"], f"{float(model['train_seconds']):.0f} s <= 600 s"),
        "int8_drop": (abs(rows["int8"]["delta_points"]) <= TARGETS["int8_drop_points_max"] or rows["int8"]["delta_points"] > 0, f"{rows['int8']['delta_points']:+.2f} points (within 0.3)"),
        "int8_size_ratio": (rows["int8"]["size_ratio"] <= TARGETS["int8_size_ratio_max"], f"{rows['int8']['size_ratio']:.3f} <= 0.30"),
        "camera_gap": (
            cam_gap is not None and cam_gap <= TARGETS["camera_gap_points_max"],
            "not measured" if cam_gap is None else f"int8 {100 * cam['camera_like_accuracy']:.2f} % camera-like vs {100 * cam['camera_like_raw_accuracy']:.2f} % raw: gap {cam_gap:+.2f}{cam_ci} points <= 1",
        ),
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
        "precision": training.get("precision", model.get("precision")),
        "seed": training.get("config", {}).get("seed"),
        "camera_fraction": training.get("config", {}).get("augment", {}).get("camera_fraction"),
        "cpu": training.get("cpu", model.get("cpu")),
        "camera_like": model.get("camera_like"),
        "interpreter": f"{model.get('interpreter')} {model.get('interpreter_version')}",
        "variants": rows,
        "targets": {k: {"ok": ok, "figure": text} for k, (ok, text) in checks.items()},
    }


def machine_line(f: dict[str, Any]) -> str:
    """CPU model, flags, oneDNN cap and ISA in use, precision: what a training figure needs beside it."""
    cpu = f.get("cpu") or {}
    flags = " ".join(k for k, on in (cpu.get("flags") or {}).items() if on) or "none of avx2/avx512f/avx512_bf16/amx_bf16"
    cap = cpu.get("onednn_isa_cap") or "none"
    isa = f.get("onednn_isa") or "not probed"
    return (f"machine: {cpu.get('model', '?')}, {cpu.get('cores', '?')} cores; flags: {flags}; oneDNN cap: {cap}; "
            f"oneDNN ISA in use: {isa}; training precision: {f.get('precision') or '?'}")


def print_table(f: dict[str, Any]) -> None:
    """Human-readable figures: one row per variant, then the targets."""
    print(machine_line(f))
    wall = "reused" if f["wall_seconds"] is None else f"{f['wall_seconds']:.0f} s"
    print(f"model: {f['params']:,} parameters; {f['epochs_run']}/{f['epochs']} epochs in {float(f['train_seconds']):.0f} s "
          f"(whole pipeline {wall}; {f['cpu_count']} CPUs, load now {f['load_average_1min']:.1f}); "
          f"Keras {100 * f['keras_accuracy']:.2f} %; interpreter {f['interpreter']}")
    print(f"{'variant':8} {'accuracy':>9} {'Δ pts':>6} {'seed test':>9} {'=Keras':>7} {'bytes':>9} {'vs f32':>6} {'p50 µs':>7} {'p99 µs':>7} {'camera':>8} {'raw':>8} {'gap':>6}")
    for name, r in f["variants"].items():
        cam, raw = r.get("camera_like_accuracy"), r.get("camera_like_raw_accuracy")
        camera = f"{100 * cam:7.2f}% {100 * raw:7.2f}% {100 * (raw - cam):+6.2f}" if cam is not None and raw is not None else f"{'-':>8} {'-':>8} {'-':>6}"
        print(f"{name:8} {100 * r['accuracy']:8.2f}% {r['delta_points']:+6.2f} {100 * (r['seed_test_accuracy'] or 0):8.2f}% "
              f"{100 * (r['keras_agreement'] or 0):6.2f}% {r['bytes']:9,} {r['size_ratio']:6.3f} "
              f"{1000 * (r['latency_p50_ms'] or 0):7.1f} {1000 * (r['latency_p99_ms'] or 0):7.1f} {camera}")
    if f.get("camera_like"):
        c = f["camera_like"]
        print(f"camera: {c.get('count')} official test images as camera-like frames (crop {c.get('crop')}, seed {c.get('seed')}); raw: the same images as stored")
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
    p.add_argument("--precision", default="auto", choices=("auto", "float32", "mixed_bfloat16"), help="training precision (auto: mixed_bfloat16 where the CPU has bf16 units)")
    p.add_argument("--seed", type=int, default=42, help="training seed (the split and the recipe stay the same)")
    p.add_argument("--camera-fraction", type=float, default=None, metavar="F",
                   help="share of each batch given the camera effects (default: the recipe's)")
    p.add_argument("--onednn-isa", default=None, metavar="ISA", help="set ONEDNN_MAX_CPU_ISA (e.g. AVX2) before TensorFlow loads: measure as on a CPU without AVX-512 / bf16")
    p.add_argument("--quick", action="store_true",
                   help=f"1 epoch on {QUICK_TRAIN_LIMIT:,} training images: checks that it runs (the targets are not the point)")
    args = p.parse_args(argv)
    if args.onednn_isa:
        os.environ["ONEDNN_MAX_CPU_ISA"] = args.onednn_isa
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from host.cpu import onednn_isa_in_use

    wall = None
    isa = None
    if args.reuse:
        out = args.reuse
    else:
        from host.pipeline import run_pipeline
        from host.train import DEFAULT_EPOCHS

        isa = onednn_isa_in_use()
        out = args.out or Path(tempfile.mkdtemp(prefix="edgekit-bench-")) / "out"
        epochs, limit = (1, QUICK_TRAIN_LIMIT) if args.quick else (args.epochs or DEFAULT_EPOCHS, None)
        from host.errors import HostError

        t0 = time.perf_counter()
        try:
            run_pipeline(out, epochs, args.data_dir, limit, precision=args.precision, seed=args.seed,
                         camera_fraction=args.camera_fraction, progress=sys.stderr.isatty())
        except HostError as e:  # bad input: one line, as `python -m host run` gives it
            print(f"error: {e}", file=sys.stderr)
            return 2
        wall = time.perf_counter() - t0
    if not (out / "manifest.json").is_file():
        print(f"error: {out} has no manifest.json; run `python -m host run --out {out}` first", file=sys.stderr)
        return 1
    f = figures(out, wall)
    f["onednn_isa"] = isa
    if args.json:
        print(json.dumps(f, indent=2))
    else:
        print_table(f)
    return 0 if args.quick or all(t["ok"] for t in f["targets"].values()) else 3


if __name__ == "__main__":
    raise SystemExit(main())
