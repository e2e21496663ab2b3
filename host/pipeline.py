"""The whole host job and its three steps, each writing its output whole or not at all.

``run_pipeline`` builds everything in a temporary folder beside ``out`` and renames it into
place at the end, so a failed or interrupted run never leaves a half-written ``out``.
The steps (``train_step`` → ``convert_step`` → ``evaluate_step``) each read what the previous
one wrote in ``out`` and publish their own files by rename.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

import numpy as np

from device.manifest import VARIANTS, Manifest, Preprocess, TensorSpec, Variant, sha256_bytes
from host.augment import AugmentConfig
from host.choose import AUTO, ModelChoice, choose_model
from host.convert import (
    REPRESENTATIVE_COUNT,
    convert_all,
    model_filename,
    representative_images,
    resolve_optimization,
)
from host.data import FASHION_MNIST, Splits, load_data
from host.distribute import STRATEGIES, barrier, multi_worker_strategy, read_tf_config
from host.errors import ConfigError, OutputError
from host.evaluate import (
    DEFAULT_CONTRACT,
    VariantEval,
    evaluate_variant,
    host_runtime,
    keras_predictions,
)
from host.evaluate_camera import (
    CAMERA_LIKE_COUNT,
    CAMERA_LIKE_SEED,
    CameraEval,
    evaluate_camera_like,
)
from host.golden import GOLDEN_COUNT, write_golden
from host.recipe import fashion_mnist
from host.report import write_report
from host.train import DEFAULT_EPOCHS, TrainConfig, save_training, train

log = logging.getLogger(__name__)

SAVED_MODEL = Path("saved_model") / "1"
KERAS_MODEL = "model.keras"
TRAINING_JSON = "training.json"


# ---------------------------------------------------------------- output folders


def _writable_parent(out: Path) -> Path:
    parent = out.resolve().parent
    while not parent.exists():
        parent = parent.parent
    return parent


def check_output(out: Path, force: bool = False) -> None:
    """Refuse an --out that is a file, non-empty (without ``force``) or not writable; before any work."""
    if out.exists() and not out.is_dir():
        raise OutputError(f"--out {out} is a file, not a folder; choose a folder path")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise OutputError(
            f"--out {out} already exists and is not empty; choose a new folder, or pass --force to replace it "
            "(the old folder is kept until the new run has succeeded)"
        )
    parent = _writable_parent(out)
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write into {parent} (permission denied); choose an --out in a writable place")


@contextlib.contextmanager
def staged_output(out: Path, force: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside ``out``; on success it replaces ``out``, on failure it is removed."""
    out = Path(out)
    check_output(out, force)
    try:
        out.resolve().parent.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.resolve().parent))
    except OSError as e:
        raise OutputError(f"cannot create a folder beside {out}: {e}; choose an --out in a writable place") from e
    try:
        yield stage
        check_output(out, force)  # someone may have filled it while we worked
        if out.exists():
            trash = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.resolve().parent))
            out.rename(trash / "old")
            stage.rename(out)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            stage.rename(out)
    finally:
        if stage.exists():
            shutil.rmtree(stage, ignore_errors=True)


@contextlib.contextmanager
def staged_files(out: Path) -> Iterator[Path]:
    """Yield a temporary folder inside ``out``; on success its files are renamed into ``out``."""
    stage = Path(tempfile.mkdtemp(prefix=".stage-", dir=out))
    try:
        yield stage
        for p in sorted(stage.iterdir()):
            os.replace(p, out / p.name)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _require_folder(out: Path, step: str) -> None:
    if not out.is_dir():
        raise OutputError(f"--out {out} does not exist; run `python -m host train --out {out}` before `{step}`")
    if not os.access(out, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write into {out} (permission denied); fix its permissions or choose another --out")


# ---------------------------------------------------------------- the three steps on a folder


def train_into(folder: Path, splits: Splits, config: TrainConfig, progress: bool = True, workers: int = 1) -> None:
    """Train and write saved_model/1, model.keras and training.json into ``folder``."""
    result = train(splits.train_x, splits.train_y, splits.val_x, splits.val_y, config, progress=progress, num_classes=len(splits.labels))
    save_training(
        result, config, folder, train_images=len(splits.train_x), data_source=splits.source, data=splits.data,
        labels=list(splits.labels), preprocess=splits.preprocess.to_json(), workers=workers,
    )


MIN_FOLDER_STEPS = 200  # optimizer steps a folder run takes at least, by default
PATIENCE_STEPS = 50  # early stopping waits at least this many steps without a better validation accuracy
FOLDER_SHIFT_PX = 2  # folder data: largest whole-pixel shift in training, at any image size


def batch_size_for(train_images: int) -> int:
    """Batch size for a folder of images: 256 for large sets, down to 32 so a small set still takes a few steps an epoch."""
    return int(min(256, max(32, 2 ** round(np.log2(max(train_images, 1) / 32)))))


def train_config(
    splits: Splits, epochs: Optional[int], seed: int, choice: ModelChoice, flip: bool = True, precision: str = "auto",
    camera_fraction: Optional[float] = None,
) -> TrainConfig:
    """The training run for this data: the model chosen for its input size (host.choose), the recipe's defaults otherwise.

    Fashion-MNIST trains host.recipe's config as it is. A folder is often small (a hundred photos
    are a few steps an epoch), so its batch shrinks with it, ``epochs`` (when not given) grows to
    at least MIN_FOLDER_STEPS steps, and early stopping waits PATIENCE_STEPS steps, not 5 epochs
    of 4 steps. Both go through the one ``host.train.train``. ``camera_fraction`` None is the
    recipe's share of camera-effect images (host.recipe) for Fashion-MNIST and none for a folder.
    """
    default = TrainConfig()
    model = choose_model(choice, int(splits.preprocess.size[0]), default.model)
    if splits.data.get("kind") == FASHION_MNIST:
        return fashion_mnist(epochs or DEFAULT_EPOCHS, seed, precision, model=model, flip=flip, camera_fraction=camera_fraction)
    batch = batch_size_for(len(splits.train_x))
    steps = max(1, -(-len(splits.train_x) // batch))
    epochs = epochs or max(DEFAULT_EPOCHS, -(-MIN_FOLDER_STEPS // steps))
    patience = max(default.patience_epochs, -(-PATIENCE_STEPS // steps))
    augment = AugmentConfig(flip=flip, shift=FOLDER_SHIFT_PX / int(splits.preprocess.size[0]), fill=0.0,
                            camera_fraction=camera_fraction or 0.0)
    return TrainConfig(epochs=epochs, seed=seed, model=model, augment=augment, batch_size=batch, patience_epochs=patience,
                       precision=precision)


def _require_saved_model(folder: Path) -> Path:
    saved = folder / SAVED_MODEL
    if not (saved / "saved_model.pb").is_file():
        raise OutputError(f"no SavedModel at {saved}; run `python -m host train --out {folder}` first")
    return saved


def convert_into(
    folder: Path,
    train_x: np.ndarray,
    optimization: str,
    seed: int,
    progress: bool = True,
    write_to: Optional[Path] = None,
    contract: Preprocess = DEFAULT_CONTRACT,
) -> None:
    """Convert folder/saved_model/1 into the four .tflite files in ``write_to`` (default ``folder``)."""
    saved = _require_saved_model(folder)
    dst = Path(write_to) if write_to is not None else folder
    convert_all(saved, dst, representative_images(train_x, REPRESENTATIVE_COUNT, seed), optimization, progress=progress, contract=contract)


def evaluate_into(folder: Path, splits: Splits, progress: bool = True, write_to: Optional[Path] = None) -> Manifest:
    """Evaluate every .tflite in ``folder``; write golden.npz, report.md, confusion_int8.png and manifest.json.

    They go into ``write_to`` (default ``folder``), which must end up beside the models.
    """
    dst = Path(write_to) if write_to is not None else folder
    import keras

    missing = [model_filename(v) for v in VARIANTS if not (folder / model_filename(v)).is_file()]
    if missing:
        raise OutputError(f"{folder} lacks {', '.join(missing)}; run `python -m host convert --out {folder}` first")
    if not (folder / KERAS_MODEL).is_file():
        raise OutputError(f"{folder} lacks {KERAS_MODEL}; run `python -m host train --out {folder}` first")
    info = _training_info(folder)
    model = keras.models.load_model(folder / KERAS_MODEL, compile=False)  # inference only: no optimizer state
    kpred = keras_predictions(model, splits.test_x, splits.preprocess)
    model_info = {
        "name": model.name,
        "params": int(model.count_params()),
        "keras_accuracy": float(np.mean(kpred == splits.test_y)),
        "epochs_run": info.get("epochs_run"),
        "epochs": info.get("config", {}).get("epochs"),
        "train_seconds": info.get("train_seconds"),
        "precision": info.get("precision"),
        "cpu": info.get("cpu"),
        "train_images": info.get("train_images"),
        "data_source": info.get("data_source", splits.source),
        "representative_images": REPRESENTATIVE_COUNT,
    }
    return publish(folder, dst, splits, kpred, model_info, progress)


def camera_like(folder: Path, splits: Splits, evals: list[VariantEval], runtime: Any) -> dict[str, CameraEval]:
    """Every variant on camera-like frames of the test split (host.evaluate_camera), for Fashion-MNIST.

    The renderer draws a grey garment light on dark, which is what Fashion-MNIST is; a folder of
    the user's own photos has no such renderer, so it gets none.
    """
    if splits.data.get("kind") != FASHION_MNIST:
        return {}
    return evaluate_camera_like(
        {e.variant: folder / model_filename(e.variant) for e in evals}, {e.variant: e.official_raw for e in evals},
        splits.test_x, splits.test_y, splits.preprocess, runtime,
    )


def publish(
    folder: Path, dst: Path, splits: Splits, reference: Optional[np.ndarray], model_info: dict[str, Any], progress: bool = True,
    variants: tuple[str, ...] = VARIANTS,
) -> Manifest:
    """Evaluate the .tflite files in ``folder`` on the test split; write golden.npz, report.md, the confusion PNG and manifest.json into ``dst``.

    ``reference`` are the source model's top-1 predictions on the test split (for agreement), when there is one.
    """
    from tqdm import tqdm

    runtime = host_runtime()
    evals: list[VariantEval] = []
    sha256: dict[str, str] = {}
    for v in tqdm(variants, desc="evaluating", unit="model", disable=not progress, leave=False):
        data = (folder / model_filename(v)).read_bytes()
        sha256[v] = sha256_bytes(data)
        evals.append(
            evaluate_variant(v, data, splits.test_x, splits.test_y, splits.seed_test_x, splits.seed_test_y, reference, runtime,
                             contract=splits.preprocess, num_classes=len(splits.labels))
        )
    cameras = camera_like(folder, splits, evals, runtime)
    n = min(GOLDEN_COUNT, len(splits.test_x))
    golden = write_golden(dst, splits.test_x[:n], splits.test_y[:n], {e.variant: e.official_raw[:n] for e in evals})
    model_info = {
        **model_info,
        "test_name": splits.test_name,
        "seed_test_name": splits.seed_test_name if splits.seed_test_x is not None else None,
        "test_images": len(splits.test_x),
        "interpreter": runtime.name,
        "interpreter_version": runtime.version,
        "data": splits.data,
        "evaluation": {
            e.variant: {
                "seed_test_accuracy": e.seed_test_accuracy,
                "keras_agreement": e.keras_agreement,
                "per_class_accuracy": [None if np.isnan(a) else a for a in e.per_class_accuracy],
                "latency_p50_ms": e.latency_p50_ms,
                "latency_p99_ms": e.latency_p99_ms,
                **({"camera_like_accuracy": cameras[e.variant].accuracy, "camera_like_raw_accuracy": cameras[e.variant].raw_accuracy}
                   if e.variant in cameras else {}),
            }
            for e in evals
        },
    }
    if cameras:
        model_info["camera_like"] = {
            "count": CAMERA_LIKE_COUNT, "seed": CAMERA_LIKE_SEED, "crop": splits.preprocess.crop,
            "variants": {v: c.to_json() for v, c in cameras.items()},
        }
    write_report(dst, evals, splits.labels, model_info)
    variants_json = {
        e.variant: Variant(
            name=e.variant,
            path=model_filename(e.variant),
            sha256=sha256[e.variant],
            bytes=e.size_bytes,
            accuracy=e.accuracy,
            input=e.input,
            output=e.output,
        )
        for e in evals
    }
    manifest = Manifest(
        labels=tuple(splits.labels),
        input=TensorSpec(splits.preprocess.input_shape(), "float32"),
        preprocess=splits.preprocess,
        variants=variants_json,
        root=folder,
        model=model_info,
        golden=golden,
    )
    manifest.write(dst)
    return manifest


# ---------------------------------------------------------------- public entry points


def _check_epochs(epochs: Optional[int]) -> None:
    if epochs is None:
        return
    if not isinstance(epochs, int) or epochs < 1:
        raise ConfigError(f"--epochs must be a positive integer. Got: {epochs!r}")


def run_pipeline(
    out: Path,
    epochs: Optional[int] = None,
    data_dir: Optional[Path] = None,
    train_limit: Optional[int] = None,
    *,
    tfds_dir: Optional[Path] = None,
    force: bool = False,
    optimization: str = "DEFAULT",
    seed: int = 42,
    progress: bool = True,
    allow_download: bool = True,
    precision: str = "auto",
    data: str = FASHION_MNIST,
    image_size: Optional[int] = None,
    color: Optional[str] = None,
    choice: ModelChoice = AUTO,
    flip: bool = True,
    camera_fraction: Optional[float] = None,
) -> Path:
    """Data → train → SavedModel → four .tflite → evaluation → manifest/golden/report, all in ``out``.

    ``data`` is ``fashion_mnist`` or ``folder:DIR``; ``epochs`` None means the recipe's default
    (see ``train_config``); ``train_limit`` trains on the first N training images (for quick
    runs); evaluation always uses the whole test split. Returns ``out``.
    """
    out = Path(out)
    _check_epochs(epochs)
    optimization = resolve_optimization(optimization)  # warns once here, not again in convert_all
    check_output(out, force)
    choice.check_files()
    splits = load_data(data, data_dir=data_dir, tfds_dir=tfds_dir, train_limit=train_limit, allow_download=allow_download,
                       image_size=image_size, color=color, progress=progress)
    config = train_config(splits, epochs, seed, choice, flip, precision, camera_fraction)
    with staged_output(out, force) as stage:
        train_into(stage, splits, config, progress)
        convert_into(stage, splits.train_x, optimization, seed, progress, contract=splits.preprocess)
        evaluate_into(stage, splits, progress)
    return out


def train_step(
    out: Path,
    epochs: Optional[int] = None,
    data_dir: Optional[Path] = None,
    train_limit: Optional[int] = None,
    *,
    tfds_dir: Optional[Path] = None,
    force: bool = False,
    seed: int = 42,
    progress: bool = True,
    allow_download: bool = True,
    strategy: str = "default",
    precision: str = "auto",
    data: str = FASHION_MNIST,
    image_size: Optional[int] = None,
    color: Optional[str] = None,
    choice: ModelChoice = AUTO,
    flip: bool = True,
    camera_fraction: Optional[float] = None,
) -> Path:
    """Train only: ``out`` gets saved_model/1, model.keras and training.json (atomically).

    ``strategy="multi-worker"``: one of several workers named in TF_CONFIG (``host.distribute``);
    only the chief (worker 0) writes ``out``, the others save into a temporary folder and delete it.
    """
    out = Path(out)
    _check_epochs(epochs)
    if strategy not in STRATEGIES:
        raise ConfigError(f"--strategy must be one of {', '.join(STRATEGIES)}. Got: {strategy!r}")
    choice.check_files()

    def data_and_config() -> tuple[Splits, TrainConfig]:
        splits = load_data(data, data_dir=data_dir, tfds_dir=tfds_dir, train_limit=train_limit, allow_download=allow_download,
                           image_size=image_size, color=color, progress=progress)
        return splits, train_config(splits, epochs, seed, choice, flip, precision, camera_fraction)

    if strategy == "multi-worker":
        task = read_tf_config()  # before any work: a bad TF_CONFIG fails at once
        if task.is_chief:
            check_output(out, force)
        dist, task = multi_worker_strategy()  # before TensorFlow's first op (the data load runs ops)
        splits, config = data_and_config()
        with dist.scope():
            if task.is_chief:
                with staged_output(out, force) as stage:
                    train_into(stage, splits, config, progress, workers=task.count)
                    barrier()
            else:
                with tempfile.TemporaryDirectory(prefix=f"edgekit-worker{task.index}-") as tmp:
                    train_into(Path(tmp), splits, config, progress, workers=task.count)
                    barrier()
        return out
    check_output(out, force)
    splits, config = data_and_config()
    with staged_output(out, force) as stage:
        train_into(stage, splits, config, progress)
    return out


def _training_info(out: Path) -> dict[str, Any]:
    p = out / TRAINING_JSON
    return json.loads(p.read_text()) if p.is_file() else {}


def _data_of(info: dict[str, Any], data: Optional[str]) -> dict[str, Any]:
    """The load_data arguments that give the data ``out`` was trained on (or ``data`` when given)."""
    recorded = info.get("data") or {}
    if recorded.get("kind") == "folder":
        spec = f"folder:{recorded['dir']}"
        if data is not None and data != spec and not (data.startswith("folder:") and Path(data[7:]).resolve() == Path(recorded["dir"])):
            raise ConfigError(f"this folder was trained on --data {spec}; pass that (or no --data). Got: --data {data}")
        return {"data": spec, "image_size": recorded.get("image_size"), "color": recorded.get("color")}
    if data is not None and data not in (FASHION_MNIST, "fashion-mnist") and info:
        raise ConfigError(f"this folder was trained on --data {FASHION_MNIST}; pass that (or no --data). Got: --data {data}")
    return {"data": data or FASHION_MNIST}


def convert_step(
    out: Path,
    data_dir: Optional[Path] = None,
    *,
    tfds_dir: Optional[Path] = None,
    optimization: str = "DEFAULT",
    progress: bool = True,
    allow_download: bool = True,
    data: Optional[str] = None,
) -> Path:
    """Convert ``out``/saved_model/1 into the four .tflite files beside it (int8 calibrated on the training split)."""
    out = Path(out)
    optimization = resolve_optimization(optimization)  # warns once here, not again in convert_all
    _require_folder(out, "convert")
    _require_saved_model(out)  # before the data load
    info = _training_info(out)
    seed = int(info.get("config", {}).get("seed", 42))
    splits = load_data(**_data_of(info, data), data_dir=data_dir, tfds_dir=tfds_dir, train_limit=info.get("train_images"),
                       allow_download=allow_download, progress=progress)
    with staged_files(out) as stage:
        convert_into(out, splits.train_x, optimization, seed, progress, write_to=stage, contract=splits.preprocess)
    return out


def evaluate_step(
    out: Path,
    data_dir: Optional[Path] = None,
    *,
    tfds_dir: Optional[Path] = None,
    progress: bool = True,
    allow_download: bool = True,
    data: Optional[str] = None,
) -> Path:
    """Evaluate the .tflite files in ``out``; writes manifest.json, golden.npz, report.md, confusion_int8.png."""
    out = Path(out)
    _require_folder(out, "evaluate")
    info = _training_info(out)
    splits = load_data(**_data_of(info, data), data_dir=data_dir, tfds_dir=tfds_dir, allow_download=allow_download, progress=progress)
    with staged_files(out) as stage:
        evaluate_into(out, splits, progress, write_to=stage)
    return out
