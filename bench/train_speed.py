"""Where training time goes: one epoch split into input pipeline, model steps and per-step overhead.

    python bench/train_speed.py                         # this CPU, the recipe's precision
    python bench/train_speed.py --precision float32 --onednn-isa AVX2   # as on a CPU without bf16 / AVX-512
    python bench/train_speed.py --quick --json

Measured side by side in one process, on the recipe's own model, optimiser and tf.data pipeline
(``host.recipe.fashion_mnist``), over the training split (48,000 images; ``--quick``: 4,096):

- ``input``: iterating the training pipeline (gather, augmentation) with no model;
- ``epoch``: one training epoch as ``train`` runs it (pipeline + model, Keras ``fit``);
- ``epoch_cached``: the same epoch on the same batches replayed from a cache (augmentation
  replaced by a cached no-op), so ``epoch - epoch_cached`` is what the pipeline costs the epoch;
- ``step_min`` x steps: the fastest single step on a fixed batch, i.e. the model's compute with
  nothing else running; ``epoch_cached`` minus it is per-step overhead and interference.

Epochs are timed twice, interleaved, and the faster of each kept: the cores may be shared.
Wall and process CPU seconds are both printed; the load average says how busy the machine was.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _timed(fn: Any) -> tuple[float, float]:
    t0, c0 = time.perf_counter(), _cpu_s()
    fn()
    return time.perf_counter() - t0, _cpu_s() - c0


def measure(quick: bool, precision: str, epochs_for_schedule: int) -> dict[str, Any]:
    """Run the measurements; returns the figures."""
    import numpy as np

    from host.data import load_splits
    from host.recipe import fashion_mnist
    from host.train import compiled_model, make_dataset

    splits = load_splits(None, None, 4096 if quick else None, allow_download=False)
    x, y = splits.train_x, splits.train_y
    config = fashion_mnist(epochs_for_schedule, 42, precision)
    steps = -(-len(x) // config.batch_size)
    model, policy = compiled_model(config, tuple(x.shape[1:]), 10, steps)
    ds = make_dataset(x, y, config, training=True, num_classes=10)
    warnings.filterwarnings("ignore", message=".*shuffle=True.*")  # the pipeline shuffles itself
    model.fit(ds.take(3), verbose=0)  # trace the step functions before anything is timed
    cached = ds.take(steps).cache()
    for _ in cached:  # fill the cache: the same augmented batches, replayed
        pass

    def iterate() -> None:
        for _ in ds:
            pass

    input_s = _timed(iterate)
    runs: dict[str, list[tuple[float, float]]] = {"epoch": [], "epoch_cached": []}
    for _ in range(2):
        runs["epoch"].append(_timed(lambda: model.fit(ds, verbose=0)))
        runs["epoch_cached"].append(_timed(lambda: model.fit(cached, verbose=0)))
    bx, by = next(iter(cached))
    step_ms = []
    for _ in range(30):
        t0 = time.perf_counter()
        model.train_on_batch(bx, by)
        step_ms.append(1000 * (time.perf_counter() - t0))
    best = {k: min(v, key=lambda t: t[0]) for k, v in runs.items()}
    step_min = float(np.min(step_ms))
    return {
        "images": len(x),
        "batch_size": config.batch_size,
        "steps": steps,
        "precision": policy,
        "params": int(model.count_params()),
        "input_wall_s": input_s[0],
        "input_cpu_s": input_s[1],
        "epoch_wall_s": best["epoch"][0],
        "epoch_cpu_s": best["epoch"][1],
        "epoch_cached_wall_s": best["epoch_cached"][0],
        "epoch_cached_cpu_s": best["epoch_cached"][1],
        "steps_per_s": steps / best["epoch"][0],
        "step_min_ms": step_min,
        "step_median_ms": float(np.median(step_ms)),
        "model_compute_s": step_min * steps / 1000,
        "load_average_1min": os.getloadavg()[0],
    }


def print_table(f: dict[str, Any]) -> None:
    """The split of one epoch, human-readable."""
    print(f"machine: {f['cpu']} ; oneDNN ISA in use: {f['onednn_isa'] or 'unknown'} ; precision {f['precision']}")
    print(f"model: {f['params']:,} parameters; {f['images']:,} images = {f['steps']} steps of {f['batch_size']}; "
          f"load average {f['load_average_1min']:.1f} on {os.cpu_count()} CPUs")
    print(f"{'':34}{'wall s':>9}{'CPU s':>9}")
    print(f"{'input pipeline alone':34}{f['input_wall_s']:9.2f}{f['input_cpu_s']:9.2f}")
    print(f"{'training epoch':34}{f['epoch_wall_s']:9.2f}{f['epoch_cpu_s']:9.2f}   ({f['steps_per_s']:.1f} steps/s)")
    print(f"{'epoch on cached batches (no-op aug)':34}{f['epoch_cached_wall_s']:9.2f}{f['epoch_cached_cpu_s']:9.2f}")
    print(f"{'fastest step x steps (compute)':34}{f['model_compute_s']:9.2f}{'':>9}   (step min {f['step_min_ms']:.1f} ms, median {f['step_median_ms']:.1f} ms)")
    share = lambda a: 100 * a / f["epoch_wall_s"]  # noqa: E731
    pipe = max(0.0, f["epoch_wall_s"] - f["epoch_cached_wall_s"])
    over = max(0.0, f["epoch_cached_wall_s"] - f["model_compute_s"])
    print(f"split of the epoch: model compute {share(f['model_compute_s']):.0f} %, input pipeline {share(pipe):.0f} %, "
          f"per-step overhead and interference {share(over):.0f} %")


def main(argv: list[str] | None = None) -> int:
    """Parse flags, set the oneDNN cap before TensorFlow loads, measure, print."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--precision", default="auto", choices=("auto", "float32", "mixed_bfloat16"), help="training precision (auto: the recipe's choice for this CPU)")
    p.add_argument("--onednn-isa", default=None, metavar="ISA", help="set ONEDNN_MAX_CPU_ISA (e.g. AVX2) to measure as on a CPU without AVX-512 / bf16")
    p.add_argument("--epochs", type=int, default=None, help="epochs the LR schedule is laid out for (the recipe's default)")
    p.add_argument("--quick", action="store_true", help="4,096 images instead of 48,000")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = p.parse_args(argv)
    if args.onednn_isa:
        os.environ["ONEDNN_MAX_CPU_ISA"] = args.onednn_isa
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from host.cpu import onednn_isa_in_use, read_cpu
    from host.train import DEFAULT_EPOCHS

    isa = onednn_isa_in_use()
    f = measure(args.quick, args.precision, args.epochs or DEFAULT_EPOCHS)
    cpu = read_cpu()
    f.update(cpu=cpu.describe(), cpu_info=cpu.to_json(), onednn_isa=isa)
    if args.json:
        print(json.dumps(f, indent=2))
    else:
        print_table(f)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
