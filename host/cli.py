"""Command line: `python -m host run|train|convert|evaluate` (also installed as `edgekit-host`)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, Optional

from host.errors import HostError

EPILOG = """\
steps:
  run       data → train → saved_model/1 → four .tflite → evaluation → manifest.json, report.md
  train     data → train → OUT/saved_model/1, OUT/model.keras, OUT/training.json
  convert   OUT/saved_model/1 → OUT/model_{float32,dynamic,float16,int8}.tflite
  evaluate  OUT/*.tflite → OUT/manifest.json, golden.npz, report.md, confusion_int8.png

data: Fashion-MNIST via tensorflow_datasets. Without network it is ingested once from the
official IDX files (/usr/share/datasets/fashion-mnist from the Debian package
dataset-fashion-mnist, or --data-dir) into the tfds data dir ($TFDS_DATA_DIR or
~/tensorflow_datasets).

examples:
  python -m host run --out artifacts
  python -m host run --out artifacts --epochs 5 --force --json
  python -m host train --out work && python -m host convert --out work && python -m host evaluate --out work
  TF_CONFIG='{"cluster": {"worker": ["10.0.0.1:12345", "10.0.0.2:12345"]}, "task": {"type": "worker", "index": 0}}' \
    python -m host train --out work --strategy multi-worker      # on each machine, with its own index
"""


def positive_int(text: str) -> int:
    """argparse type: an integer ≥ 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer. Got: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer. Got: {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with its four subcommands."""
    from host.convert import OPTIMIZATIONS
    from host.distribute import STRATEGIES
    from host.train import DEFAULT_EPOCHS, PRECISIONS

    fmt = argparse.ArgumentDefaultsHelpFormatter
    p = argparse.ArgumentParser(
        prog="python -m host",
        description="Train the Fashion-MNIST CNN, convert it to four TFLite variants and evaluate them in the TFLite interpreter.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="{run,train,convert,evaluate}")

    def common(sp: argparse.ArgumentParser, out_help: str) -> None:
        sp.add_argument("--out", type=Path, required=True, metavar="DIR", help=out_help)
        sp.add_argument("--data-dir", type=Path, default=None, metavar="DIR", help="folder with the four Fashion-MNIST IDX .gz files, ingested when tfds has not prepared the data yet; None means download, else /usr/share/datasets/fashion-mnist")
        sp.add_argument("--tfds-dir", type=Path, default=None, metavar="DIR", help="tfds data dir; None means $TFDS_DATA_DIR or ~/tensorflow_datasets")
        sp.add_argument("--offline", action="store_true", help="never try the tfds download; use local IDX files only")
        sp.add_argument("--json", action="store_true", help="print a JSON summary on stdout (progress goes to stderr)")
        sp.add_argument("--quiet", action="store_true", help="no progress output")

    def training(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--epochs", type=positive_int, default=DEFAULT_EPOCHS, metavar="N", help="maximum training epochs (early stopping on validation may stop sooner)")
        sp.add_argument("--train-limit", type=positive_int, default=None, metavar="N", help="train on the first N images of train[:80%%] only (quick runs)")
        sp.add_argument("--seed", type=int, default=42, help="random seed (same seed, same model)")
        sp.add_argument("--force", action="store_true", help="replace a non-empty --out (the old folder stays until the new run succeeds)")
        sp.add_argument("--precision", default="auto", choices=PRECISIONS, help="auto: mixed_bfloat16 where the CPU has bfloat16 units (AMX / AVX512-BF16), else float32")

    def optimization(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--optimization", default="DEFAULT", choices=OPTIMIZATIONS, help="tf.lite.Optimize for the quantised variants; the other two are deprecated aliases of DEFAULT")

    sp = sub.add_parser("run", help="the whole pipeline into a new folder", formatter_class=fmt, description="Data → train → SavedModel → four TFLite variants → evaluation, written to --out atomically.")
    common(sp, "output folder; must not exist or be empty (see --force)")
    training(sp)
    optimization(sp)
    sp = sub.add_parser("train", help="train and write the SavedModel", formatter_class=fmt, description="Train the CNN and write OUT/saved_model/1, OUT/model.keras and OUT/training.json.")
    common(sp, "output folder; must not exist or be empty (see --force)")
    training(sp)
    sp.add_argument("--strategy", default="default", choices=STRATEGIES, help="multi-worker: one of the workers named in TF_CONFIG (tf.distribute.MultiWorkerMirroredStrategy); run the same command on every worker, worker 0 writes --out")
    sp = sub.add_parser("convert", help="SavedModel → four .tflite files", formatter_class=fmt, description="Convert OUT/saved_model/1 to float32, dynamic-range, float16 and full-integer int8 .tflite files.")
    common(sp, "folder written by `train`")
    optimization(sp)
    sp = sub.add_parser("evaluate", help="evaluate the .tflite files, write manifest and report", formatter_class=fmt, description="Run every .tflite in the TFLite interpreter on the official and seed test splits; write manifest.json, golden.npz, report.md and confusion_int8.png.")
    common(sp, "folder written by `convert`")
    return p


def _quiet_tensorflow() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("ABSL_MIN_LOG_LEVEL", "2")
    logging.getLogger("absl").setLevel(logging.ERROR)


def summary(out: Path) -> dict[str, Any]:
    """What a run produced, for --json."""
    from device.manifest import MANIFEST_NAME

    d: dict[str, Any] = {"out": str(out)}
    m = out / MANIFEST_NAME
    if m.is_file():
        man = json.loads(m.read_text())
        model = man.get("model", {})
        d.update(
            params=model.get("params"),
            keras_accuracy=model.get("keras_accuracy"),
            train_seconds=model.get("train_seconds"),
            variants={k: {"accuracy": v["accuracy"], "bytes": v["bytes"], "path": v["path"]} for k, v in man["variants"].items()},
        )
    else:
        d["files"] = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    return d


def main(argv: Optional[list[str]] = None) -> int:
    """Entry point; returns the exit status (0 ok, 1 error, 2 usage, 130 interrupted)."""
    args = build_parser().parse_args(argv)
    _quiet_tensorflow()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    from device.errors import DeviceError
    from host import pipeline

    progress = not args.quiet
    common: dict[str, Any] = {"tfds_dir": args.tfds_dir, "progress": progress, "allow_download": not args.offline}
    try:
        if args.command == "run":
            out = pipeline.run_pipeline(args.out, args.epochs, args.data_dir, args.train_limit, force=args.force, optimization=args.optimization, seed=args.seed, precision=args.precision, **common)
        elif args.command == "train":
            out = pipeline.train_step(args.out, args.epochs, args.data_dir, args.train_limit, force=args.force, seed=args.seed, strategy=args.strategy, precision=args.precision, **common)
        elif args.command == "convert":
            out = pipeline.convert_step(args.out, args.data_dir, optimization=args.optimization, **common)
        else:
            out = pipeline.evaluate_step(args.out, args.data_dir, **common)
    except (HostError, DeviceError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; --out was left as it was before this command", file=sys.stderr)
        return 130
    if getattr(args, "strategy", "default") == "multi-worker":
        from host.distribute import read_tf_config

        task = read_tf_config()
        if not task.is_chief:  # it saved into a temporary folder and deleted it
            msg = {"worker": task.index, "workers": task.count, "out": None}
            print(json.dumps(msg) if args.json else f"worker {task.index} of {task.count}: trained; worker 0 wrote the model")
            return 0
    if args.json:
        print(json.dumps(summary(out), indent=2))
    else:
        report = out / "report.md"
        print(f"wrote {out}" + (f" (see {report})" if report.is_file() else ""))
    return 0
