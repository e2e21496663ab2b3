"""Command line: `python -m host run|train|convert|evaluate|import` (also installed as `edgekit-host`)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, Callable, Optional, TypeVar

from host.errors import HostError

EPILOG = """\
steps:
  run       data → train → saved_model/1 → four .tflite → evaluation → manifest.json, report.md
  train     data → train → OUT/saved_model/1, OUT/model.keras, OUT/training.json
  convert   OUT/saved_model/1 → OUT/model_{float32,dynamic,float16,int8}.tflite
  evaluate  OUT/*.tflite → OUT/manifest.json, golden.npz, report.md, confusion_int8.png
  import    your SavedModel / .keras / .h5 / .tflite + labels.txt → the same artifacts as run

data (--data): fashion_mnist (the default) via tensorflow_datasets; without network it is
ingested once from the official IDX files (/usr/share/datasets/fashion-mnist from the Debian
package dataset-fashion-mnist, or --data-dir) into the tfds data dir ($TFDS_DATA_DIR or
~/tensorflow_datasets). Or folder:DIR, one subfolder per class (the folder name is the label),
jpg/png of any size: split 80/10/10 by content hash, duplicates counted once, bursts of
near-identical frames kept in one split, unreadable files skipped and named.

network (--network auto): below 64 pixels the small CNN, from 64 pixels the MobileNet-style
network built from scratch (--width); --base mobilenet_v2 fine-tunes Keras's ImageNet
MobileNetV2 (downloaded), --base-weights FILE the same from a local weights file.

examples:
  python -m host run --out artifacts
  python -m host run --out artifacts --epochs 5 --force --json
  python -m host run --data folder:photos --out mine                     # 96x96 RGB, MobileNet-style
  python -m host run --data folder:photos --out mine --image-size 128 --base-weights mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_128_no_top.h5
  python -m host import --model keras_model.h5 --labels labels.txt --calibration folder:photos --out tm --preprocess '{"normalize": [-1, 1]}'
  python -m host train --out work && python -m host convert --out work && python -m host evaluate --out work
  TF_CONFIG='{"cluster": {"worker": ["10.0.0.1:12345", "10.0.0.2:12345"]}, "task": {"type": "worker", "index": 0}}' \
    python -m host train --out work --strategy multi-worker      # on each machine, with its own index
"""


T = TypeVar("T", int, float)


def _bounded(cast: Callable[[str], T], ok: Callable[[T], bool], what: str) -> Callable[[str], T]:
    """argparse type: ``cast(text)`` that ``ok`` accepts, else "must be WHAT" with what was given."""

    def parse(text: str) -> T:
        try:
            value = cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {what}. Got: {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"must be {what}. Got: {value}")
        return value

    return parse


positive_int = _bounded(int, lambda v: v >= 1, "a positive integer")
positive_float = _bounded(float, lambda v: v > 0, "a positive number")
non_negative_int = _bounded(int, lambda v: v >= 0, "an integer >= 0")
fraction = _bounded(float, lambda v: 0.0 <= v <= 1.0, "a number from 0 to 1")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults in the options' help, and the epilog's lines as written."""


def run_epilog() -> str:
    """`run --help`'s explanation of folder data: the rules and every bad-input line, from their home modules."""
    from host.choose import MOBILENET_MIN_SIZE
    from host.folder import (
        AUTO_SIZE_MAX,
        DEFAULT_SIZE,
        IMAGE_EXTENSIONS,
        IMBALANCE_WARN,
        MAX_SIZE,
        MIN_SIZE,
    )
    from host.split import MIN_IMAGES_PER_CLASS

    exts = ", ".join(e.lstrip(".") for e in IMAGE_EXTENSIONS)
    return f"""\
folder data (--data folder:DIR):
  one subfolder per class, named for its label, holding {exts} images of any size,
  read by keras.utils.image_dataset_from_directory. Images are centre-cropped and area-resized to
  --image-size (as the device does); without it: their own size when all are one square size up
  to {AUTO_SIZE_MAX} px, else {DEFAULT_SIZE}.
  Split 80/10/10 (train/validation/test) by content hash: the same picture twice counts once, the
  same picture in two classes is left out and reported, near-identical frames (a burst) stay in
  one split. Accuracy, per-class accuracy and the confusion matrix come from the held-out 10 %.

model: below {MOBILENET_MIN_SIZE} px the small CNN; from {MOBILENET_MIN_SIZE} px a MobileNet-style depthwise-separable network
  from scratch (--width); --base mobilenet_v2 fine-tunes MobileNetV2 with ImageNet weights
  (downloaded by Keras); --base-weights FILE does the same offline from a local _no_top weights file.

refused with one `error:` line, exit 1, --out untouched:
  no class folders or no images; one class only; fewer than {MIN_IMAGES_PER_CLASS} distinct images in a class (named);
  a class folder name that is not a valid file name on the Pi (white space at either end, a
  leading '.', control characters, over 255 bytes, not UTF-8); --image-size outside {MIN_SIZE}..{MAX_SIZE};
  a file that cannot be opened at all (permissions, dangling link); a --base-weights file that is
  missing or does not fit.
warned about, and counted in report.md and manifest.json:
  unreadable or truncated images (skipped and named), duplicates, conflicts, class imbalance
  beyond {IMBALANCE_WARN:g}x, EXIF-rotated photos.

examples:
  python -m host run --data folder:photos --out mine
  python -m host run --data folder:photos --out mine --image-size 128 --base-weights mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_128_no_top.h5
"""


IMPORT_EPILOG = """\
what is written: as `run` (four variants converted from a Keras model or SavedModel, int8
calibrated on DIR's training 90 %; a .tflite is kept as the one variant it is), report.md with
per-class accuracy on DIR's held-out 10 %, confusion matrix, golden set and manifest.json.

refused with one `error:` line, exit 1, --out untouched:
  labels that do not match the model's output size; an input the device cannot feed (it feeds
  one NHWC image: [1, H, W, 3] RGB or [1, H, W, 1] grey, float32, uint8 or int8); Flex
  (select-TF) or custom ops the Pi's TFLite runtime cannot run; Keras custom layers whose code is
  not here; a float model whose normalisation is not stated (--preprocess); a damaged model file;
  calibration class folders that are not labels; every bad folder that `run` refuses.

examples:
  python -m host import --model keras_model.h5 --labels labels.txt --calibration folder:photos --out tm --preprocess '{"normalize": [-1, 1]}'
  python -m host import --model model_uint8.tflite --labels labels.txt --calibration folder:photos --out mine
"""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with its five subcommands."""
    from host.choose import BASES, DEFAULT_BASE_WIDTH, DEFAULT_WIDTH, MODEL_KINDS
    from host.convert import OPTIMIZATIONS
    from host.distribute import STRATEGIES
    from host.folder import COLORS, DEFAULT_SIZE
    from host.train import DEFAULT_EPOCHS, PRECISIONS

    fmt = _HelpFormatter
    p = argparse.ArgumentParser(
        prog="python -m host",
        description="Train an image classifier (Fashion-MNIST by default, or your own folder of images) or import yours, "
        "convert it to four TFLite variants and evaluate them in the TFLite interpreter through the device's code.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="{run,train,convert,evaluate,import}")

    def common(sp: argparse.ArgumentParser, out_help: str) -> None:
        sp.add_argument("--out", type=Path, required=True, metavar="DIR", help=out_help)
        sp.add_argument("--data-dir", type=Path, default=None, metavar="DIR", help="folder with the four Fashion-MNIST IDX .gz files, ingested when tfds has not prepared the data yet; None means download, else /usr/share/datasets/fashion-mnist")
        sp.add_argument("--tfds-dir", type=Path, default=None, metavar="DIR", help="tfds data dir; None means $TFDS_DATA_DIR or ~/tensorflow_datasets")
        sp.add_argument("--offline", action="store_true", help="never try the tfds download; use local IDX files only")
        sp.add_argument("--json", action="store_true", help="print a JSON summary on stdout (progress goes to stderr)")
        sp.add_argument("--quiet", action="store_true", help="no progress output")

    def training(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--data", default="fashion_mnist", metavar="fashion_mnist|folder:DIR", help="the data set: Fashion-MNIST, or a folder with one subfolder of images per class (the folder name is the label)")
        sp.add_argument("--image-size", type=positive_int, default=None, metavar="N", help=f"folder data: train at NxN (centre crop, area resize); None means the images' own size when they all are one square size up to 96, else {DEFAULT_SIZE}")
        sp.add_argument("--color", choices=COLORS, default=None, help="folder data: None means grayscale when every image is single-channel, else rgb")
        sp.add_argument("--epochs", type=positive_int, default=None, metavar="N", help=f"maximum training epochs (early stopping on validation may stop sooner); None means {DEFAULT_EPOCHS}, and for folder data at least enough for 200 steps")
        sp.add_argument("--train-limit", type=positive_int, default=None, metavar="N", help="train on the first N training images only (quick runs)")
        sp.add_argument("--seed", type=int, default=42, help="random seed (same seed, same model)")
        sp.add_argument("--force", action="store_true", help="replace a non-empty --out (the old folder stays until the new run succeeds)")
        sp.add_argument("--precision", default="auto", choices=PRECISIONS, help="auto: mixed_bfloat16 where the CPU has bfloat16 units (AMX / AVX512-BF16), else float32")
        sp.add_argument("--network", choices=MODEL_KINDS, default="auto", help="auto: the small CNN below 64 pixels, the MobileNet-style network from 64 pixels")
        sp.add_argument("--width", type=positive_float, default=None, metavar="W", help=f"width multiplier of the MobileNet networks; None means {DEFAULT_WIDTH} from scratch, {DEFAULT_BASE_WIDTH} with --base")
        sp.add_argument("--base", choices=BASES, default=None, help="fine-tune Keras's MobileNetV2 with ImageNet weights (Keras downloads them into ~/.keras/models)")
        sp.add_argument("--base-weights", default=None, metavar="FILE", help="the same from a local MobileNetV2 weights file without top (.h5 or .weights.h5), for machines without network")
        sp.add_argument("--fine-tune-layers", type=non_negative_int, default=0, metavar="N", help="with --base: also train the base's top N layers (batch norm stays frozen); 0 trains the new head only")
        sp.add_argument("--camera-fraction", type=fraction, default=None, metavar="F",
                        help="share of each training batch that gets camera effects (sub-pixel shift and scale, blur, tone curve, uneven light, sensor noise; host.augment); "
                             "default 0.5 for Fashion-MNIST, 0 for a folder")
        sp.add_argument("--no-flip", dest="flip", action="store_false", help="no random horizontal flips in training (for classes that differ by direction, e.g. left/right arrows)")

    def optimization(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--optimization", default="DEFAULT", choices=OPTIMIZATIONS, help="tf.lite.Optimize for the quantised variants; the other two are deprecated aliases of DEFAULT")

    sp = sub.add_parser("run", help="the whole pipeline into a new folder", formatter_class=fmt, epilog=run_epilog(),
                        description="Data → train → SavedModel → four TFLite variants → evaluation, written to --out atomically.")
    common(sp, "output folder; must not exist or be empty (see --force)")
    training(sp)
    optimization(sp)
    sp = sub.add_parser("train", help="train and write the SavedModel", formatter_class=fmt, description="Train the CNN and write OUT/saved_model/1, OUT/model.keras and OUT/training.json.")
    common(sp, "output folder; must not exist or be empty (see --force)")
    training(sp)
    sp.add_argument("--strategy", default="default", choices=STRATEGIES, help="multi-worker: one of the workers named in TF_CONFIG (tf.distribute.MultiWorkerMirroredStrategy); run the same command on every worker, worker 0 writes --out")
    reuse = "the data OUT was trained on (its training.json); None means that"
    sp = sub.add_parser("convert", help="SavedModel → four .tflite files", formatter_class=fmt, description="Convert OUT/saved_model/1 to float32, dynamic-range, float16 and full-integer int8 .tflite files.")
    common(sp, "folder written by `train`")
    sp.add_argument("--data", default=None, metavar="fashion_mnist|folder:DIR", help=reuse)
    optimization(sp)
    sp = sub.add_parser("evaluate", help="evaluate the .tflite files, write manifest and report", formatter_class=fmt, description="Run every .tflite in the TFLite interpreter on the test split (and Fashion-MNIST's seed test split); write manifest.json, golden.npz, report.md and confusion_int8.png.")
    common(sp, "folder written by `convert`")
    sp.add_argument("--data", default=None, metavar="fashion_mnist|folder:DIR", help=reuse)
    sp = sub.add_parser(
        "import", help="your model + labels → the same artifacts as run", formatter_class=fmt,
        description="Take a SavedModel folder, a .keras / .h5 file (e.g. Teachable Machine's) or a .tflite, with its labels: "
        "a Keras model or SavedModel is converted to the four variants (int8 calibrated on the folder), a .tflite is checked "
        "and taken as is; accuracy comes from the folder's held-out 10 %.",
        epilog=IMPORT_EPILOG,
    )
    sp.add_argument("--model", type=Path, required=True, metavar="PATH", help="SavedModel folder, .keras / .h5 file or .tflite")
    sp.add_argument("--labels", type=Path, required=True, metavar="FILE", help="one label per line, in the model's output order (Teachable Machine's '0 name' lines are fine)")
    sp.add_argument("--calibration", required=True, metavar="folder:DIR", help="images of (some of) the classes, one subfolder per label: int8 calibration and held-out accuracy")
    sp.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder; must not exist or be empty (see --force)")
    sp.add_argument("--preprocess", default=None, metavar="JSON|FILE", help="the preprocessing contract's fields the model cannot tell, e.g. '{\"normalize\": [-1, 1]}' (see device/manifest.py); None means: from the model's input, centre crop, area resize, no contrast stretch, any polarity")
    sp.add_argument("--force", action="store_true", help="replace a non-empty --out (the old folder stays until the import succeeds)")
    sp.add_argument("--seed", type=int, default=42, help="seed of the int8 representative draw")
    sp.add_argument("--json", action="store_true", help="print a JSON summary on stdout (progress goes to stderr)")
    sp.add_argument("--quiet", action="store_true", help="no progress output")
    optimization(sp)
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


def _pipeline_step(args: argparse.Namespace, progress: bool) -> Path:
    from host import pipeline
    from host.choose import ModelChoice

    common: dict[str, Any] = {"tfds_dir": args.tfds_dir, "progress": progress, "allow_download": not args.offline}
    if args.command in ("run", "train"):
        choice = ModelChoice(kind=args.network, width=args.width, base=args.base, base_weights=args.base_weights, fine_tune_layers=args.fine_tune_layers)
        common.update(data=args.data, image_size=args.image_size, color=args.color, choice=choice, flip=args.flip, force=args.force, seed=args.seed,
                      precision=args.precision, camera_fraction=args.camera_fraction)
        if args.command == "run":
            return pipeline.run_pipeline(args.out, args.epochs, args.data_dir, args.train_limit, optimization=args.optimization, **common)
        return pipeline.train_step(args.out, args.epochs, args.data_dir, args.train_limit, strategy=args.strategy, **common)
    if args.command == "convert":
        return pipeline.convert_step(args.out, args.data_dir, optimization=args.optimization, data=args.data, **common)
    return pipeline.evaluate_step(args.out, args.data_dir, data=args.data, **common)


def main(argv: Optional[list[str]] = None) -> int:
    """Entry point; returns the exit status (0 ok, 1 error, 2 usage, 130 interrupted)."""
    args = build_parser().parse_args(argv)
    _quiet_tensorflow()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    from device.errors import DeviceError

    progress = not args.quiet
    try:
        if args.command == "import":
            from host.importer import import_model

            out = import_model(args.model, args.labels, args.calibration, args.out, preprocess=args.preprocess, force=args.force,
                               optimization=args.optimization, seed=args.seed, progress=progress)
        else:
            out = _pipeline_step(args, progress)
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
