"""Mixed bfloat16 against float32 on the same seeds, side by side: does bf16 training cost accuracy?

    python bench/precision_parity.py                      # seeds 42 7 1 2 3, default epochs, both precisions
    python bench/precision_parity.py --seeds 42 7 --json > a.json
    python bench/precision_parity.py --reuse a.json b.json   # the table of saved runs, their seeds pooled
    python bench/precision_parity.py --quick              # 1 epoch on 2,000 images, one seed: checks it runs

Each (seed, precision) is one `bench/host_pipeline.py` run in its own process, so each gets a
fresh TensorFlow: float32 with oneDNN capped at ``--float32-isa`` (AVX2 by default, as on a CPU
without AVX-512 or bf16 units), mixed bfloat16 uncapped. The goal (issue 12): bf16 within 0.2
points of float32 on the official test split. One seed cannot tell: float32 alone moves about
0.4 points from seed to seed. So the script prints the paired differences, their mean and a 95 %
interval for that mean (Student's t over the seeds), and says whether the interval lies within
±0.2 points, overlaps it, or lies outside it.

On a CPU without bf16 units Keras emulates bfloat16, slowly, and a full run would say nothing
about the CPUs that have them: the script refuses unless ``--quick``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
GOAL_POINTS = 0.2
# two-sided 95 % Student's t quantiles by degrees of freedom (scipy is not a dependency)
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
       12: 2.179, 15: 2.131, 20: 2.086, 30: 2.042}


def t95(dof: int) -> float:
    """The two-sided 95 % t quantile for ``dof`` degrees of freedom (the next tabulated one below, so never too narrow)."""
    return T95[max(k for k in T95 if k <= dof)] if dof < 30 else 1.96 if dof > 120 else T95[30]


def paired_summary(diffs_points: list[float]) -> dict[str, Any]:
    """Mean of the paired differences (bf16 minus float32, points), its 95 % interval and the verdict against ±0.2."""
    n = len(diffs_points)
    mean = sum(diffs_points) / n
    if n < 2:
        return {"n": n, "mean": mean, "sd": None, "ci95": None, "verdict": "one seed: no interval"}
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs_points) / (n - 1))
    half = t95(n - 1) * sd / math.sqrt(n)
    lo, hi = mean - half, mean + half
    if lo >= -GOAL_POINTS and hi <= GOAL_POINTS:
        verdict = f"met: the whole interval lies within ±{GOAL_POINTS}"
    elif hi < -GOAL_POINTS or lo > GOAL_POINTS:
        verdict = f"missed: the whole interval lies outside ±{GOAL_POINTS}"
    else:
        verdict = f"not settled: the interval overlaps ±{GOAL_POINTS}; more seeds would narrow it"
    return {"n": n, "mean": mean, "sd": sd, "ci95": half, "low": lo, "high": hi, "verdict": verdict}


def run_one(seed: int, precision: str, isa: str | None, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """One bench/host_pipeline.py run; its JSON figures."""
    cmd = [sys.executable, str(HERE / "host_pipeline.py"), "--json", "--seed", str(seed), "--precision", precision,
           "--out", str(work / f"{precision}-{seed}")]
    if isa:
        cmd += ["--onednn-isa", isa]
    if args.quick:
        cmd.append("--quick")
    if args.epochs:
        cmd += ["--epochs", str(args.epochs)]
    if args.data_dir:
        cmd += ["--data-dir", str(args.data_dir)]
    print(f"  seed {seed}, {precision}{f' (oneDNN cap {isa})' if isa else ''} ...", file=sys.stderr, flush=True)
    p = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(HERE.parent)})
    if p.returncode not in (0, 3):  # 3: ran, but some target of host_pipeline was missed
        tail = (p.stderr.strip().splitlines() or ["no output"])[-1]
        raise SystemExit(f"error: seed {seed} {precision} failed (exit {p.returncode}): {tail}")
    f = json.loads(p.stdout)
    return {"accuracy": f["variants"]["float32"]["accuracy"], "int8_accuracy": f["variants"]["int8"]["accuracy"],
            "train_seconds": f["train_seconds"], "epochs_run": f["epochs_run"], "precision": f["precision"],
            "load_average_1min": f["load_average_1min"]}


def main(argv: list[str] | None = None) -> int:
    """Train every seed in both precisions and print the paired comparison."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[42, 7, 1, 2, 3], help="training seeds (default: 42 7 1 2 3)")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default: the recipe's)")
    p.add_argument("--float32-isa", default="AVX2", metavar="ISA",
                   help="ONEDNN_MAX_CPU_ISA for the float32 runs (default AVX2; 'none' leaves oneDNN uncapped)")
    p.add_argument("--data-dir", type=Path, default=None, help="folder with the Fashion-MNIST IDX .gz files")
    p.add_argument("--keep", type=Path, default=None, metavar="DIR",
                   help="keep each run's output folder in DIR as PRECISION-SEED (default: a temporary folder, removed)")
    p.add_argument("--reuse", type=Path, nargs="+", default=None, metavar="JSON",
                   help="print the figures of saved --json runs instead of training (their seeds pooled)")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.add_argument("--quick", action="store_true", help="1 epoch on 2,000 images, the first seed only: checks that it runs")
    args = p.parse_args(argv)
    if args.reuse:
        out = reuse(args.reuse)
        if args.json:
            print(json.dumps(out, indent=2))
        else:
            print_table(out)
        return 0
    # only here, not at import: the tests import this module, and tests/vm has a `machine` module of its own
    sys.path[:0] = [str(HERE), str(HERE.parent)]
    from machine import line as machine_line

    from host.cpu import cpu_has_bf16

    if not cpu_has_bf16() and not args.quick:
        print("error: this CPU has no bfloat16 units (avx512_bf16 / amx_bf16), so Keras would emulate bf16: "
              "run this on a CPU that has them (or --quick to check the script)", file=sys.stderr)
        return 2
    seeds = args.seeds[:1] if args.quick else args.seeds
    isa = None if args.float32_isa.lower() == "none" else args.float32_isa
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgekit-parity-") as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        for seed in seeds:
            f32 = run_one(seed, "float32", isa, args, work)
            bf16 = run_one(seed, "mixed_bfloat16", None, args, work)
            rows.append({"seed": seed, "float32": f32, "mixed_bfloat16": bf16,
                         "diff_points": 100 * (bf16["accuracy"] - f32["accuracy"])})
    out = summarize(rows, machine_line(), isa, args.quick)
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print_table(out)
    return 0


def summarize(rows: list[dict[str, Any]], machine: str, isa: str | None, quick: bool) -> dict[str, Any]:
    """The JSON figures of a set of seeds: the rows, the paired summary, float32's own spread."""
    f32_accs = [100 * r["float32"]["accuracy"] for r in rows]
    return {"machine": machine, "float32_isa_cap": isa, "quick": quick, "goal_points": GOAL_POINTS, "seeds": rows,
            "summary": paired_summary([r["diff_points"] for r in rows]),
            "float32_mean": sum(f32_accs) / len(f32_accs), "float32_spread_points": max(f32_accs) - min(f32_accs)}


def reuse(paths: list[Path]) -> dict[str, Any]:
    """The figures of saved --json runs, their seeds pooled (a seed seen twice counts once, the first time)."""
    runs = []
    for path in paths:
        try:
            runs.append(json.loads(path.read_text()))
        except (OSError, ValueError) as e:
            raise SystemExit(f"error: cannot read {path} as this script's --json output: {e}") from e
    machines = {r["machine"] for r in runs}
    if len(machines) > 1 or len({r["float32_isa_cap"] for r in runs}) > 1:
        raise SystemExit(f"error: these runs come from different machines or oneDNN caps ({'; '.join(sorted(machines))}): pool only like with like")
    rows: dict[int, dict[str, Any]] = {}
    for r in runs:
        for row in r["seeds"]:
            rows.setdefault(row["seed"], row)
    return summarize(list(rows.values()), runs[0]["machine"], runs[0]["float32_isa_cap"], any(r["quick"] for r in runs))


def print_table(out: dict[str, Any]) -> None:
    """The seeds side by side, then the paired mean, its interval and the verdict."""
    print(f"machine: {out['machine']}; float32 with oneDNN cap {out['float32_isa_cap'] or 'none'}, bf16 uncapped")
    print("official test accuracy of the exported models (both trained from the same seed; bf16 exports float32 weights)")
    print(f"{'seed':>5} {'float32':>8} {'bf16':>8} {'bf16-f32':>9} {'int8 f32':>9} {'int8 bf16':>9} {'f32 s':>6} {'bf16 s':>7}")
    for r in out["seeds"]:
        a, b = r["float32"], r["mixed_bfloat16"]
        print(f"{r['seed']:>5} {100 * a['accuracy']:7.2f}% {100 * b['accuracy']:7.2f}% {r['diff_points']:+9.2f} "
              f"{100 * a['int8_accuracy']:8.2f}% {100 * b['int8_accuracy']:8.2f}% {a['train_seconds']:6.0f} {b['train_seconds']:7.0f}")
    s = out["summary"]
    ci = "" if s["ci95"] is None else f" ± {s['ci95']:.2f} (95 %, t over {s['n']} seeds; sd {s['sd']:.2f})"
    print(f"mean bf16 - float32: {s['mean']:+.2f} points{ci}")
    print(f"float32 alone spans {out['float32_spread_points']:.2f} points over these seeds (mean {out['float32_mean']:.2f} %)")
    print(f"goal (within ±{GOAL_POINTS}): {s['verdict']}")


if __name__ == "__main__":
    raise SystemExit(main())
