"""What a training step of the CNN costs, stage by stage, and what other shapes of it would cost.

    python bench/model_cost.py --onednn-isa AVX2          # as on a CPU without AVX-512 / bf16 (float32)
    python bench/model_cost.py --quick --json

Measured side by side in one process, interleaved (the cores may be shared), with the recipe's
optimiser and loss (``host.train.compiled_model``) on a fixed batch of 256, so only the model's
compute is timed (``bench/train_speed.py`` times the input pipeline and the epoch around it):

- the recipe's model cut after each of its pooling stages, each cut with the recipe's head on what
  it leaves: the differences between the cuts are what each stage costs a training step;
- candidate shapes (``CANDIDATES``), each as a ``host.model.ModelConfig``, against the recipe's.

Each row gives the parameters, the forward multiply-adds per image (``ModelConfig.multiply_adds``),
the fastest and the median step in microseconds per image over the rounds, and the fastest step
as a ratio to the recipe's. Training time per epoch follows the step time (``train_speed``: model
compute is about 70 % of an epoch); accuracy does not, and needs full runs of each shape.

How close a step comes to what the CPU can compute: a step does about ``6 x multiply-adds`` FLOPs
per image (forward, the gradient of the input and the gradient of the weights; batch norm, pooling
and the optimiser left out), and a large float32 matmul (``MATMUL`` square, TensorFlow's own
kernel under the same oneDNN cap) is timed in the same rounds as what the cores reach on dense
work. A step near that figure has no kernel-level speed left in it: only fewer multiply-adds make
it faster.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

BATCH = 256
MATMUL = 1024  # the side of the square float32 matmul timed as the CPU's dense-work ceiling
TRAIN_FLOPS_PER_MAC = 6  # forward, input gradient and weight gradient: two FLOPs per multiply-add each
# shapes that move compute out of the 14x14 stage, which costs about half a step (see the README)
CANDIDATES: dict[str, dict[str, Any]] = {
    "one conv at 14x14 (40)": {"conv_filters": (16, 40, 64, 64), "pool_after": (True, True, False, True)},
    "narrower 14x14 (24, 32)": {"conv_filters": (16, 24, 32, 64, 64)},
    "strided stem, recipe rest": {"stem_stride": 2, "pool_after": (False, False, True, False, True)},
    "strided stem, one 32 at 14x14": {"conv_filters": (16, 32, 64, 64), "pool_after": (False, True, False, True), "stem_stride": 2},
}


def shapes() -> list[tuple[str, str, Any]]:
    """(kind, name, ModelConfig) for every row: the recipe's cuts, then the candidates."""
    from host.model import ModelConfig

    recipe = ModelConfig()
    rows: list[tuple[str, str, Any]] = []
    cuts = [i + 1 for i, pool in enumerate(recipe.pool_after) if pool]
    for k, n in enumerate(cuts, 1):
        cut = replace(recipe, conv_filters=recipe.conv_filters[:n], pool_after=recipe.pool_after[:n])
        rows.append(("stage", f"stage{'s 1-' if k > 1 else ' '}{k} (convs 1-{n})", cut))
    for name, fields in CANDIDATES.items():
        rows.append(("candidate", name, replace(recipe, **fields)))
    return rows


def measure(rounds: int, steps: int) -> dict[str, Any]:
    """Interleaved step timing of every row; returns the figures."""
    import numpy as np

    from host.model import INPUT_SHAPE, NUM_CLASSES
    from host.recipe import fashion_mnist
    from host.train import compiled_model

    rng = np.random.default_rng(0)
    x = rng.random((BATCH, *INPUT_SHAPE), dtype=np.float32)
    y = np.eye(NUM_CLASSES, dtype=np.float32)[rng.integers(0, NUM_CLASSES, BATCH)]
    rows = []
    for kind, name, config in shapes():
        train_config = fashion_mnist(precision="float32", model=config)
        model, _ = compiled_model(train_config, INPUT_SHAPE, NUM_CLASSES, 100)
        for _ in range(3):  # trace and warm up
            model.train_on_batch(x, y)
        rows.append({"kind": kind, "name": name, "model": model, "params": int(model.count_params()),
                     "multiply_adds": config.multiply_adds(),
                     "times": []})
    matmul_s = []
    for _ in range(rounds):
        for r in rows:
            for _ in range(steps):
                t0 = time.perf_counter()
                r["model"].train_on_batch(x, y)
                r["times"].append(time.perf_counter() - t0)
        matmul_s += matmul_seconds(steps)
    matmul_gflops = 2 * MATMUL**3 / min(matmul_s) / 1e9
    out = []
    for r in rows:
        t = np.array(r.pop("times")) * 1e6 / BATCH
        r.pop("model")
        gflops = TRAIN_FLOPS_PER_MAC * r["multiply_adds"] / float(t.min()) / 1e3
        out.append({**r, "step_us_per_image_min": float(t.min()), "step_us_per_image_median": float(np.median(t)),
                    "step_gflops": gflops, "share_of_matmul": gflops / matmul_gflops})
    recipe_min = [r for r in out if r["kind"] == "stage"][-1]["step_us_per_image_min"]  # the last cut: the whole model
    for r in out:
        r["ratio_to_recipe"] = r["step_us_per_image_min"] / recipe_min
    return {"batch": BATCH, "rounds": rounds, "steps_per_round": steps, "rows": out, "matmul_size": MATMUL,
            "matmul_gflops": matmul_gflops, "load_average_1min": os.getloadavg()[0]}


def matmul_seconds(repeats: int) -> list[float]:
    """Seconds of each of ``repeats`` float32 MATMUL x MATMUL matmuls (after a warm-up one)."""
    import tensorflow as tf

    a = tf.random.stateless_uniform([MATMUL, MATMUL], seed=[1, 2])
    b = tf.random.stateless_uniform([MATMUL, MATMUL], seed=[3, 4])
    tf.linalg.matmul(a, b).numpy()
    seconds = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        tf.linalg.matmul(a, b).numpy()
        seconds.append(time.perf_counter() - t0)
    return seconds


def print_table(f: dict[str, Any]) -> None:
    """The rows, human-readable."""
    print(f"machine: {f['machine']} ; oneDNN ISA in use: {f['onednn_isa'] or 'unknown'} ; float32, batch {f['batch']}, "
          f"{f['rounds']} round(s) of {f['steps_per_round']} steps, interleaved; load average {f['load_average_1min']:.1f}")
    print(f"{'':36}{'params':>8}{'M MACs':>8}{'min µs/img':>12}{'median':>8}{'vs recipe':>10}{'GFLOP/s':>9}{'of matmul':>10}")
    previous = 0.0
    for r in f["rows"]:
        extra = ""
        if r["kind"] == "stage":
            extra = f"   (+{r['step_us_per_image_min'] - previous:.0f} µs/img for this stage)"
            previous = r["step_us_per_image_min"]
        print(f"{r['name']:36}{r['params']:8,d}{r['multiply_adds'] / 1e6:8.2f}{r['step_us_per_image_min']:12.1f}"
              f"{r['step_us_per_image_median']:8.1f}{r['ratio_to_recipe']:10.2f}{r['step_gflops']:9.1f}"
              f"{100 * r['share_of_matmul']:9.0f}%{extra}")
    print("the last stage row is the recipe's model; the stage rows carry the recipe's head on what each cut leaves")
    print(f"GFLOP/s: {TRAIN_FLOPS_PER_MAC} x multiply-adds per image over the fastest step; of matmul: against a "
          f"{f['matmul_size']}x{f['matmul_size']} float32 matmul timed in the same rounds ({f['matmul_gflops']:.1f} GFLOP/s)")


def main(argv: list[str] | None = None) -> int:
    """Parse flags, set the oneDNN cap before TensorFlow loads, measure, print."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--onednn-isa", default=None, metavar="ISA", help="set ONEDNN_MAX_CPU_ISA (e.g. AVX2) to measure as on a CPU without AVX-512 / bf16")
    p.add_argument("--rounds", type=int, default=6, help="interleaved rounds (default 6)")
    p.add_argument("--steps", type=int, default=10, help="timed steps per shape per round (default 10)")
    p.add_argument("--quick", action="store_true", help="1 round of 2 steps: checks that it runs")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = p.parse_args(argv)
    if args.rounds < 1 or args.steps < 1:
        print("error: --rounds and --steps must be positive integers", file=sys.stderr)
        return 2
    if args.onednn_isa:
        os.environ["ONEDNN_MAX_CPU_ISA"] = args.onednn_isa
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from host.cpu import onednn_isa_in_use, read_cpu

    isa = onednn_isa_in_use()
    f = measure(1 if args.quick else args.rounds, 2 if args.quick else args.steps)
    cpu = read_cpu()
    f.update(machine=cpu.describe(), cpu_info=cpu.to_json(), onednn_isa=isa, quick=args.quick)
    if args.json:
        print(json.dumps(f, indent=2))
    else:
        print_table(f)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
