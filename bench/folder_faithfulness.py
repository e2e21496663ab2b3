"""Is the folder path faithful? Fashion-MNIST written out as PNG folders and trained with ``--data folder:``, vs the tfds path.

    python bench/folder_faithfulness.py [--quick] [--json] [--folder DIR] [--keep DIR]

1. Fashion-MNIST's 60,000 training images (tfds ``train``, the tfds path's own source) are
   written as 28x28 grey PNGs, one folder per class; ``T-shirt/top`` becomes ``T-shirt-top``
   (a label must be a file name on the Pi).
2. ``python -m host run --data folder:DIR`` trains on it (split 80 / 10 / 10 by content hash,
   duplicates and bursts handled, ``host/split.py``), and ``python -m host run`` trains the
   tfds path (``train[:80%]`` / ``train[80%:90%]``), each in its own process with the defaults.
3. Both models' four variants run on the official 10,000 test images through the same device
   path (``device.preprocess.model_input`` → ``LiteRTEngine``), the folder model's labels
   (alphabetical) mapped back to Fashion-MNIST's order by name.

Goal: the folder-trained accuracy within 0.5 points of the tfds path's (float32 and int8).
``--quick``: 200 training images per class written, both paths trained 10 epochs on about 1,600
images and compared on the first 2,000 official test images: it exercises everything; its
figures are not the goal's. Prints the machine (CPU model,
flags, cores) and the training precision beside the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

import machine
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
GOAL_POINTS = 0.5
QUICK_PER_CLASS, QUICK_EPOCHS, QUICK_TEST_IMAGES = 200, 10, 2_000  # 10: fewer steps leave batch norm unsettled (3 epochs of 1,600 images at batch 256 gave 12-38 %)


def safe_label(name: str) -> str:
    """A Fashion-MNIST label as a folder name on the Pi."""
    return name.replace("/", "-")


def write_folder(folder: Path, images: np.ndarray, labels: np.ndarray, names: tuple[str, ...], per_class: Optional[int]) -> int:
    """Write the images as DIR/<label>/<index>.png (the first ``per_class`` of each class); returns how many."""
    from PIL import Image

    count = 0
    seen = np.zeros(len(names), dtype=np.int64)
    for i, (img, y) in enumerate(zip(images, labels)):
        if per_class is not None and seen[y] >= per_class:
            continue
        seen[y] += 1
        d = folder / safe_label(names[int(y)])
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img.reshape(28, 28)).save(d / f"{i:05d}.png")
        count += 1
    return count


def host_run(args: list[str], out: Path) -> dict[str, Any]:
    """``python -m host run ARGS --out OUT --json`` in its own process; progress passes through on stderr."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "host", "run", *args, "--out", str(out), "--json", "--quiet"],
                       cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    if p.returncode != 0:
        raise SystemExit(f"bench: `host run {' '.join(args)}` failed (exit {p.returncode})")
    summary: dict[str, Any] = json.loads(p.stdout)
    summary["wall_seconds"] = time.perf_counter() - t0
    return summary


def official_accuracy(out: Path, test_x: np.ndarray, test_y: np.ndarray, fashion_labels: tuple[str, ...]) -> dict[str, float]:
    """Accuracy of every variant in ``out`` on the official test images, labels mapped to Fashion-MNIST's by name."""
    from device.engine import open_engine
    from device.manifest import load_manifest
    from host.evaluate import host_runtime, run_images

    m = load_manifest(out)
    to_fashion = np.asarray([[safe_label(x) for x in fashion_labels].index(safe_label(name)) for name in m.labels])
    acc = {}
    for v in m.variants:
        engine = open_engine(m, v, runtime=host_runtime().name)
        pred = run_images(engine, test_x, m.preprocess).predictions
        acc[v] = float(np.mean(to_fashion[pred] == test_y))
    return acc


def training_facts(out: Path) -> dict[str, Any]:
    info = json.loads((out / "training.json").read_text())
    return {k: info.get(k) for k in ("train_images", "epochs_run", "best_epoch", "train_seconds", "precision")}


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--quick", action="store_true", help=f"{QUICK_PER_CLASS} images per class, {QUICK_EPOCHS} epochs, {QUICK_TEST_IMAGES:,} test images: a smoke run")
    p.add_argument("--json", action="store_true", help="print the figures as JSON on stdout")
    p.add_argument("--folder", type=Path, default=None, help="write (or reuse, if it holds PNGs) the image folder here")
    p.add_argument("--keep", type=Path, default=None, help="keep both runs' outputs in this folder (default: a temporary one)")
    args = p.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from host.data import LABELS, load_splits

    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="faithfulness-"))
    work.mkdir(parents=True, exist_ok=True)
    s = load_splits(allow_download=False)  # the tfds path's own data: prepares it if need be
    train_x = np.concatenate([s.train_x, s.val_x, s.seed_test_x if s.seed_test_x is not None else s.val_x[:0]])
    train_y = np.concatenate([s.train_y, s.val_y, s.seed_test_y if s.seed_test_y is not None else s.val_y[:0]])
    folder = Path(args.folder) if args.folder else work / "fashion_mnist_png"
    per_class = QUICK_PER_CLASS if args.quick else None
    if not (folder.is_dir() and any(folder.rglob("*.png"))):
        t0 = time.perf_counter()
        n = write_folder(folder, train_x, train_y, LABELS, per_class)
        print(f"bench: wrote {n} PNGs into {folder} in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    quick = ["--epochs", str(QUICK_EPOCHS), "--train-limit", str(int(0.8 * QUICK_PER_CLASS * len(LABELS)))] if args.quick else []
    print("bench: training the tfds path ...", file=sys.stderr)
    tfds_run = host_run([*quick, "--offline"], work / "tfds")
    print("bench: training the folder path ...", file=sys.stderr)
    # the recipe's share of camera-effect images (a folder's own default is none): the same training, only the loader differs
    from host.recipe import FASHION_AUGMENT

    same_augment = ["--camera-fraction", str(FASHION_AUGMENT.camera_fraction)]
    folder_run = host_run(["--data", f"folder:{folder}", *same_augment, *([] if not args.quick else ["--epochs", str(QUICK_EPOCHS)])],
                          work / "folder")
    n_test = QUICK_TEST_IMAGES if args.quick else len(s.test_y)
    test_x, test_y = s.test_x[:n_test], s.test_y[:n_test]
    tfds_acc = official_accuracy(work / "tfds", test_x, test_y, LABELS)
    folder_acc = official_accuracy(work / "folder", test_x, test_y, LABELS)
    folder_data = json.loads((work / "folder" / "manifest.json").read_text())["model"]["data"]
    delta = {v: 100 * (folder_acc[v] - tfds_acc[v]) for v in tfds_acc}
    result = {
        "quick": args.quick,
        "machine": machine.describe(),
        "official_test_images": len(test_y),
        "tfds": {"accuracy": tfds_acc, **training_facts(work / "tfds"), "wall_seconds": tfds_run["wall_seconds"]},
        "folder": {"accuracy": folder_acc, **training_facts(work / "folder"), "wall_seconds": folder_run["wall_seconds"],
                   "data": {k: folder_data.get(k) for k in ("files", "train", "validation", "test", "duplicates", "conflicts",
                                                          "unreadable", "grouped_images", "multi_groups", "largest_group")}},
        "delta_points": delta,
        "goal_points": GOAL_POINTS,
        "goal_met": all(abs(delta[v]) <= GOAL_POINTS for v in ("float32", "int8")),
        "out": str(work),
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"machine: {machine.line()}; training precision {result['tfds']['precision']} (tfds) / {result['folder']['precision']} (folder)")
    print(f"official Fashion-MNIST test split, {len(test_y):,} images{' (QUICK: not the goal figures)' if args.quick else ''}")
    print(f"{'variant':<9} {'tfds path':>10} {'folder path':>12} {'Δ points':>9}")
    for v in tfds_acc:
        print(f"{v:<9} {100 * tfds_acc[v]:>9.2f}% {100 * folder_acc[v]:>11.2f}% {delta[v]:>+9.2f}")
    for name in ("tfds", "folder"):
        r = result[name]
        print(f"{name}: {r['train_images']:,} training images, {r['epochs_run']} epochs (best {r['best_epoch']}), "
              f"training {r['train_seconds']:.0f} s, whole run {r['wall_seconds']:.0f} s")
    d = result["folder"]["data"]
    print(f"folder split: {d['train']:,} / {d['validation']:,} / {d['test']:,}; duplicates {d['duplicates']}, conflicts {d['conflicts']}, "
          f"{d['grouped_images']} images in {d['multi_groups']} near-identical groups (largest {d['largest_group']})")
    print(f"goal |Δ| <= {GOAL_POINTS} points (float32 and int8): {'met' if result['goal_met'] else 'NOT met'}; outputs in {work}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
