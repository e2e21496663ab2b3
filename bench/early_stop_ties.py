"""Early stopping on a small folder set: Keras's first-of-a-tie rule vs the tie broken by validation loss.

    python bench/early_stop_ties.py [--seeds N] [--collect N] [--eval N] [--quick] [--json]

The loop test's data, without the camera: ``device.tabletop`` renders ``--collect`` frames of
each object (a red ball, a blue box, a green star; scene seeds 10-12, as ``deploy collect``
saw them) as 80x60 PNGs in class folders, and ``host.pipeline.train_config`` trains the folder
recipe on them at 32x32 RGB (its split: 80 / 10 / 10 by content hash, so about 19 validation
images). Each training seed trains twice, the same run up to where the rules part:

- ``keras``: ``keras.callbacks.EarlyStopping(monitor="val_accuracy", restore_best_weights=True)``,
  the rule before: it keeps the first epoch of the best accuracy;
- ``tie-break``: ``host.early_stop``, a tie in accuracy broken by the lower validation loss.

Both models then classify ``--eval`` fresh frames per object (scene seeds 100-102, never
trained on). Printed per seed: the epoch each kept, its validation loss, and the worst class's
accuracy on fresh frames; then the mean and the worst over seeds. Prints the machine line and
the training precision beside the figures. ``--quick``: one seed, 30 training and 15 fresh
frames per object: it exercises everything; its figures are not the comparison's.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

OBJECTS = (("red ball", "ball", 10, 100), ("blue box", "box", 11, 101), ("green star", "star", 12, 102))
SIZE = (80, 60)


def write_frames(root: Path, frames: int, seed_of: int) -> None:
    """``frames`` tabletop frames of each object as PNGs in one folder per label."""
    from PIL import Image

    from device import tabletop

    for label, obj, collect_seed, eval_seed in OBJECTS:
        seed = (collect_seed, eval_seed)[seed_of]
        d = root / label
        d.mkdir(parents=True)
        scene = tabletop.Scene(obj, seed)
        for i in range(frames):
            rgb = tabletop.render(scene, i, SIZE[0], SIZE[1], SIZE)
            Image.fromarray(np.clip(rgb + 0.5, 0, 255).astype(np.uint8)).save(d / f"{i:04d}.png")  # float 0..255


def keras_rule(patience: int, start_from_epoch: int = 0) -> Any:
    import keras

    return keras.callbacks.EarlyStopping(monitor="val_accuracy", patience=patience, restore_best_weights=True, mode="max",
                                         start_from_epoch=start_from_epoch)


def one_seed(train_dir: Path, eval_dir: Path, seed: int) -> dict[str, Any]:
    from host import early_stop, train
    from host.choose import AUTO
    from host.data import load_data
    from host.folder import load_folder
    from host.pipeline import train_config

    splits = load_data(f"folder:{train_dir}", image_size=32, color="rgb", progress=False)
    config = train_config(splits, None, seed, AUTO)
    fresh = load_folder(eval_dir, image_size=32, color="rgb", progress=False)
    assert list(fresh.class_names) == list(splits.labels)
    out: dict[str, Any] = {"seed": seed, "validation_images": len(splits.val_y), "train_images": len(splits.train_x)}
    for rule, factory in (("keras", keras_rule), ("tie-break", early_stop.callback)):
        original = early_stop.callback
        early_stop.callback = factory  # the one place host.train takes its early stopping from
        try:
            t0 = time.perf_counter()
            result = train.train(splits.train_x, splits.train_y, splits.val_x, splits.val_y, config, progress=False,
                                 num_classes=len(splits.labels))
            seconds = time.perf_counter() - t0
        finally:
            early_stop.callback = original
        if rule == "keras":  # Keras's best_epoch is the first of the best accuracy
            best = int(np.argmax(result.history["val_accuracy"]))
        else:
            best = result.best_epoch - 1
        pred = np.argmax(result.model.predict(fresh.images / 255.0, verbose=0), axis=1)
        per_class = {name: float(np.mean(pred[fresh.labels == k] == k)) for k, name in enumerate(fresh.class_names)}
        out[rule] = {"epochs_run": result.epochs_run, "kept_epoch": best + 1, "val_loss": result.history["val_loss"][best],
                     "val_accuracy": result.history["val_accuracy"][best], "fresh_worst_class": min(per_class.values()),
                     "fresh_mean": float(np.mean(pred == fresh.labels)), "per_class": per_class, "train_s": round(seconds, 1),
                     "precision": result.precision}
    return out


def main(argv: list[str] | None = None) -> int:
    from host.cli import positive_int

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=positive_int, default=5, help="training seeds (42, 43, ...); default 5")
    ap.add_argument("--collect", type=positive_int, default=60, help="training frames per object (the loop test's 60)")
    ap.add_argument("--eval", type=positive_int, default=60, help="fresh frames per object to classify")
    ap.add_argument("--quick", action="store_true", help="one seed, 30 training and 15 fresh frames per object (a smoke run)")
    ap.add_argument("--json", action="store_true", help="one JSON object on stdout instead of the table")
    args = ap.parse_args(argv)
    if args.quick:
        args.seeds, args.collect, args.eval = 1, 30, 15
    import machine  # bench/machine.py

    with tempfile.TemporaryDirectory(prefix="edgekit-ties-") as tmp:
        train_dir, eval_dir = Path(tmp) / "train", Path(tmp) / "eval"
        write_frames(train_dir, args.collect, 0)
        write_frames(eval_dir, args.eval, 1)
        rows = []
        for seed in range(42, 42 + args.seeds):
            rows.append(one_seed(train_dir, eval_dir, seed))
            if not args.json:
                r = rows[-1]
                print(f"seed {seed}: " + "; ".join(
                    f"{rule} kept epoch {r[rule]['kept_epoch']}/{r[rule]['epochs_run']} (val loss {r[rule]['val_loss']:.3f}), "
                    f"fresh worst class {r[rule]['fresh_worst_class']:.1%}, mean {r[rule]['fresh_mean']:.1%}"
                    for rule in ("keras", "tie-break")), flush=True)
    summary = {rule: {"worst_class_mean": float(np.mean([r[rule]["fresh_worst_class"] for r in rows])),
                      "worst_class_min": float(min(r[rule]["fresh_worst_class"] for r in rows)),
                      "fresh_mean": float(np.mean([r[rule]["fresh_mean"] for r in rows]))} for rule in ("keras", "tie-break")}
    report = {"machine": machine.line(), "precision": rows[0]["keras"]["precision"], "collect": args.collect, "eval": args.eval,
              "seeds": rows, "summary": summary}
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        print(f"machine: {report['machine']}; training precision {report['precision']}; "
              f"{args.collect} training / {args.eval} fresh frames per object, {rows[0]['validation_images']} validation images")
        for rule, s in summary.items():
            print(f"{rule:>9}: worst class on fresh frames {s['worst_class_mean']:.1%} mean over {len(rows)} seeds, "
                  f"{s['worst_class_min']:.1%} worst; all fresh frames {s['fresh_mean']:.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
