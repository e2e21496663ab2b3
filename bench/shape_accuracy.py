"""What the cheaper shapes of the CNN score: full float32 trainings of the recipe and the candidates.

    python bench/shape_accuracy.py                                   # every shape, seed 42, the recipe's epochs
    python bench/shape_accuracy.py --shapes recipe "strided stem, recipe rest" --seeds 42 7 --jobs 2 --json > a.json
    python bench/shape_accuracy.py --reuse a.json b.json             # the table of saved runs, pooled
    python bench/shape_accuracy.py --shapes recipe --train batch_size=128 --seeds 42 7   # the recipe with another batch size
    python bench/shape_accuracy.py --quick                           # 1 epoch on 2,000 images: checks it runs

``bench/model_cost.py`` says what a training step of each shape costs; this says what the shape
scores, so the two together are the cost-accuracy trade. The shapes are ``recipe`` and the names of
``model_cost.CANDIDATES``. Each (shape, seed) trains in its own process with the Fashion-MNIST
recipe (``host.recipe``: augmentation, schedule, epochs, early stopping) in float32, with oneDNN
capped at ``--onednn-isa`` (AVX2 by default, as on a CPU without AVX-512 or bf16 units), and is
scored by Keras on the official test split. ``--jobs 2`` trains two at once: the accuracy is the
same as alone, the seconds are then shared-core seconds. Where the recipe ran on the same seeds,
each shape also gets its mean paired difference from it (for the same number of epochs).
``--train FIELD=VALUE`` changes a number of the training config (``host.train.TrainConfig``: batch
size, peak rate, warm-up, weight decay, label smoothing, patience) for every shape run; such rows are
named with the change and compared with the recipe as it is.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RECIPE = "recipe"
TRAIN_FIELDS = ("batch_size", "peak_lr", "warmup_fraction", "weight_decay", "label_smoothing", "patience_epochs", "optimizer")


def parse_train(items: list[str]) -> dict[str, Any]:
    """``FIELD=VALUE`` pairs as TrainConfig overrides, each VALUE of its field's type; ValueError names what is wrong."""
    sys.path.insert(0, str(HERE.parent))
    from host.errors import ConfigError
    from host.train import TrainConfig

    out: dict[str, Any] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or name not in TRAIN_FIELDS:
            raise ValueError(f"--train takes FIELD=VALUE with FIELD one of {', '.join(TRAIN_FIELDS)}. Got: {item!r}")
        kind = type(getattr(TrainConfig(), name))
        try:
            out[name] = kind(value)
        except ValueError:
            raise ValueError(f"--train {name} needs {'an integer' if kind is int else 'a number'}. Got: {value!r}") from None
    try:
        replace(TrainConfig(), **out)
    except ConfigError as e:
        raise ValueError(f"--train: {e}") from None
    return out


def label(shape: str, train: dict[str, Any]) -> str:
    """A row's name: the shape, and the training changes when there are any."""
    return ", ".join([shape, *(f"{k}={v}" for k, v in train.items())])


def candidates() -> dict[str, dict[str, Any]]:
    """``bench/model_cost.py``'s CANDIDATES (loaded by path: bench/ is not a package)."""
    spec = importlib.util.spec_from_file_location("model_cost", HERE / "model_cost.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return dict(module.CANDIDATES)


def train_one(shape: str, seed: int, epochs: int | None, quick: bool, changes: dict[str, Any]) -> dict[str, Any]:
    """Train one shape with one seed in this process; its figures."""
    import numpy as np

    sys.path.insert(0, str(HERE.parent))
    from host.data import load_splits
    from host.evaluate import to_float
    from host.model import ModelConfig
    from host.recipe import fashion_mnist
    from host.train import DEFAULT_EPOCHS, train

    config = ModelConfig() if shape == RECIPE else replace(ModelConfig(), **candidates()[shape])
    splits = load_splits(train_limit=2000 if quick else None, allow_download=False)
    test_x, test_y = (splits.test_x[:2000], splits.test_y[:2000]) if quick else (splits.test_x, splits.test_y)
    run = replace(fashion_mnist(epochs=1 if quick else (epochs or DEFAULT_EPOCHS), seed=seed, precision="float32", model=config), **changes)
    result = train(splits.train_x, splits.train_y, splits.val_x, splits.val_y, run, progress=False)
    scores = result.model.predict(to_float(test_x), batch_size=1000, verbose=0)
    return {"shape": shape, "train": changes, "seed": seed, "epochs": run.epochs, "params": result.params, "multiply_adds": config.multiply_adds(),
            "accuracy": float(np.mean(np.argmax(scores, axis=1) == test_y)), "test_images": len(test_y),
            "epochs_run": result.epochs_run, "best_epoch": result.best_epoch, "best_val_accuracy": result.best_val_accuracy,
            "train_seconds": result.train_seconds, "precision": result.precision, "load_average_1min": os.getloadavg()[0]}


def run_one(shape: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """One (shape, seed) in a fresh process, so each gets its own TensorFlow and oneDNN cap."""
    cmd = [sys.executable, __file__, "--one", shape, str(seed)]
    if args.epochs:
        cmd += ["--epochs", str(args.epochs)]
    if args.quick:
        cmd.append("--quick")
    if args.train:
        cmd += ["--train", *args.train]
    env = {**os.environ, "PYTHONPATH": str(HERE.parent), "TF_CPP_MIN_LOG_LEVEL": "2"}
    if args.onednn_isa != "none":
        env["ONEDNN_MAX_CPU_ISA"] = args.onednn_isa
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if p.returncode != 0:
        tail = (p.stderr.strip().splitlines() or ["no output"])[-1]
        raise SystemExit(f"error: {shape!r} seed {seed} failed (exit {p.returncode}): {tail}")
    return dict(json.loads(p.stdout))


def summarise(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (shape with its training changes, epochs): runs, mean accuracy, and the mean paired
    difference from the recipe as it is, trained for as many epochs on the same seeds."""
    named = [{**r, "row": label(r["shape"], r.get("train", {}))} for r in runs]
    recipe = {(r["epochs"], r["seed"]): r["accuracy"] for r in named if r["row"] == RECIPE}
    rows = []
    for shape, epochs in dict.fromkeys((r["row"], r["epochs"]) for r in named):
        mine = [r for r in named if (r["row"], r["epochs"]) == (shape, epochs)]
        paired = [r["accuracy"] - recipe[epochs, r["seed"]] for r in mine if (epochs, r["seed"]) in recipe]
        rows.append({"shape": shape, "epochs": epochs, "params": mine[0]["params"], "multiply_adds": mine[0]["multiply_adds"],
                     "seeds": [r["seed"] for r in mine], "accuracies": [r["accuracy"] for r in mine],
                     "mean_accuracy": sum(r["accuracy"] for r in mine) / len(mine),
                     "mean_points_from_recipe": 100 * sum(paired) / len(paired) if paired and shape != RECIPE else None})
    return rows


def print_table(f: dict[str, Any]) -> None:
    """The shapes, human-readable."""
    print(f"machine: {f['machine']} ; float32, oneDNN cap {f['onednn_isa']} ; official test ({f['runs'][0]['test_images']:,} images)")
    width = max([32, *(len(r["shape"]) + 1 for r in f["shapes"])])
    print(f"{'':{width}}{'epochs':>7}{'params':>8}{'M MACs':>8}  {'seeds':14}{'official test %':24}{'mean':>7}{'vs recipe':>10}")
    for r in f["shapes"]:
        vs = "" if r["mean_points_from_recipe"] is None else f"{r['mean_points_from_recipe']:+.2f}"
        accs = " ".join(f"{100 * a:.2f}" for a in r["accuracies"])
        print(f"{r['shape']:{width}}{r['epochs']:7d}{r['params']:8,d}{r['multiply_adds'] / 1e6:8.2f}  {' '.join(map(str, r['seeds'])):14}"
              f"{accs:24}{100 * r['mean_accuracy']:7.2f}{vs:>10}")
    seconds = ", ".join(f"{label(r['shape'], r.get('train', {}))} s{r['seed']} {r['train_seconds']:.0f} s ({r['epochs_run']} ep)" for r in f["runs"])
    print(f"training seconds (shared when --jobs > 1): {seconds}")


def main(argv: list[str] | None = None) -> int:
    """Train every (shape, seed), or read saved runs, and print the table."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", nargs="+", default=None, metavar="NAME", help="'recipe' and model_cost.CANDIDATES names (default: all)")
    p.add_argument("--seeds", type=int, nargs="+", default=[42], help="training seeds (default: 42)")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default: the recipe's)")
    p.add_argument("--onednn-isa", default="AVX2", metavar="ISA", help="ONEDNN_MAX_CPU_ISA for training (default AVX2; 'none': uncapped)")
    p.add_argument("--jobs", type=int, default=1, help="trainings at once (default 1)")
    p.add_argument("--reuse", nargs="+", type=Path, default=None, metavar="JSON", help="print the table of saved --json outputs")
    p.add_argument("--train", nargs="+", default=[], metavar="FIELD=VALUE",
                   help=f"change the training config for every run ({', '.join(TRAIN_FIELDS)})")
    p.add_argument("--quick", action="store_true", help="1 epoch on 2,000 images, the recipe and one candidate: checks it runs")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.add_argument("--one", nargs=2, metavar=("SHAPE", "SEED"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    try:
        changes = parse_train(args.train)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.one:
        print(json.dumps(train_one(args.one[0], int(args.one[1]), args.epochs, args.quick, changes)))
        return 0
    known = [RECIPE, *candidates()]
    shapes = args.shapes or (known[:2] if args.quick else known)
    unknown = [s for s in shapes if s not in known]
    if unknown:
        print(f"error: unknown shape {unknown[0]!r}; the shapes are: {', '.join(map(repr, known))}", file=sys.stderr)
        return 2
    if args.jobs < 1 or (args.epochs is not None and args.epochs < 1):
        print("error: --jobs and --epochs must be positive integers", file=sys.stderr)
        return 2
    if args.reuse:
        try:
            saved = [json.loads(path.read_text()) for path in args.reuse]
            runs = [r for f in saved for r in f["runs"]]
            machine, isa = saved[0]["machine"], saved[0]["onednn_isa"]
        except (OSError, ValueError, KeyError, TypeError, IndexError) as e:
            print(f"error: --reuse needs files this script wrote with --json ({e})", file=sys.stderr)
            return 2
    else:
        sys.path.insert(0, str(HERE.parent))
        from host.cpu import read_cpu

        jobs = [(s, seed) for s in shapes for seed in args.seeds]
        with ThreadPoolExecutor(args.jobs) as pool:
            runs = list(pool.map(lambda job: run_one(job[0], job[1], args), jobs))
        machine, isa = read_cpu().describe(), args.onednn_isa
    f = {"machine": machine, "onednn_isa": isa, "quick": args.quick, "runs": runs, "shapes": summarise(runs)}
    if args.json:
        print(json.dumps(f, indent=2))
    else:
        print_table(f)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
