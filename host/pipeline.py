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
from host.convert import (
    REPRESENTATIVE_COUNT,
    convert_all,
    model_filename,
    representative_images,
    resolve_optimization,
)
from host.data import LABELS, Splits, load_splits
from host.distribute import STRATEGIES, barrier, multi_worker_strategy, read_tf_config
from host.errors import ConfigError, OutputError
from host.evaluate import VariantEval, evaluate_variant, host_runtime, keras_predictions
from host.evaluate_camera import CAMERA_LIKE_COUNT, CAMERA_LIKE_SEED, evaluate_camera_like
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
    result = train(splits.train_x, splits.train_y, splits.val_x, splits.val_y, config, progress=progress)
    save_training(result, config, folder, train_images=len(splits.train_x), data_source=splits.source, workers=workers)


def _require_saved_model(folder: Path) -> Path:
    saved = folder / SAVED_MODEL
    if not (saved / "saved_model.pb").is_file():
        raise OutputError(f"no SavedModel at {saved}; run `python -m host train --out {folder}` first")
    return saved


def convert_into(
    folder: Path, train_x: np.ndarray, optimization: str, seed: int, progress: bool = True, write_to: Optional[Path] = None
) -> None:
    """Convert folder/saved_model/1 into the four .tflite files in ``write_to`` (default ``folder``)."""
    saved = _require_saved_model(folder)
    dst = Path(write_to) if write_to is not None else folder
    convert_all(saved, dst, representative_images(train_x, REPRESENTATIVE_COUNT, seed), optimization, progress=progress)


def evaluate_into(folder: Path, splits: Splits, progress: bool = True, write_to: Optional[Path] = None) -> Manifest:
    """Evaluate every .tflite in ``folder``; write golden.npz, report.md, confusion_int8.png and manifest.json.

    They go into ``write_to`` (default ``folder``), which must end up beside the models.
    """
    dst = Path(write_to) if write_to is not None else folder
    import keras
    from tqdm import tqdm

    missing = [model_filename(v) for v in VARIANTS if not (folder / model_filename(v)).is_file()]
    if missing:
        raise OutputError(f"{folder} lacks {', '.join(missing)}; run `python -m host convert --out {folder}` first")
    if not (folder / KERAS_MODEL).is_file():
        raise OutputError(f"{folder} lacks {KERAS_MODEL}; run `python -m host train --out {folder}` first")
    info = _training_info(folder)
    model = keras.models.load_model(folder / KERAS_MODEL)
    kpred = keras_predictions(model, splits.test_x)
    runtime = host_runtime()
    evals: list[VariantEval] = []
    sha256: dict[str, str] = {}
    for v in tqdm(VARIANTS, desc="evaluating", unit="model", disable=not progress, leave=False):
        data = (folder / model_filename(v)).read_bytes()
        sha256[v] = sha256_bytes(data)
        evals.append(
            evaluate_variant(v, data, splits.test_x, splits.test_y, splits.seed_test_x, splits.seed_test_y, kpred, runtime)
        )
    contract = Preprocess()
    cameras = evaluate_camera_like(
        {e.variant: folder / model_filename(e.variant) for e in evals}, {e.variant: e.official_raw for e in evals},
        splits.test_x, splits.test_y, contract, runtime,
    )
    n = min(GOLDEN_COUNT, len(splits.test_x))
    golden = write_golden(dst, splits.test_x[:n], splits.test_y[:n], {e.variant: e.official_raw[:n] for e in evals})
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
        "interpreter": runtime.name,
        "interpreter_version": runtime.version,
        "evaluation": {
            e.variant: {
                "seed_test_accuracy": e.seed_test_accuracy,
                "keras_agreement": e.keras_agreement,
                "per_class_accuracy": list(e.per_class_accuracy),
                "latency_p50_ms": e.latency_p50_ms,
                "latency_p99_ms": e.latency_p99_ms,
                "camera_like_accuracy": cameras[e.variant].accuracy,
                "camera_like_raw_accuracy": cameras[e.variant].raw_accuracy,
            }
            for e in evals
        },
        "camera_like": {"count": CAMERA_LIKE_COUNT, "seed": CAMERA_LIKE_SEED, "crop": contract.crop},
    }
    write_report(dst, evals, LABELS, model_info, list(cameras.values()))
    variants = {
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
        labels=LABELS,
        input=TensorSpec((1, 28, 28, 1), "float32"),
        preprocess=contract,
        variants=variants,
        root=folder,
        model=model_info,
        golden=golden,
    )
    manifest.write(dst)
    return manifest


# ---------------------------------------------------------------- public entry points


def _check_epochs(epochs: int) -> None:
    if not isinstance(epochs, int) or epochs < 1:
        raise ConfigError(f"--epochs must be a positive integer. Got: {epochs!r}")


def run_pipeline(
    out: Path,
    epochs: int = DEFAULT_EPOCHS,
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
) -> Path:
    """Data → train → SavedModel → four .tflite → evaluation → manifest/golden/report, all in ``out``.

    ``train_limit`` trains on the first N images of ``train[:80%]`` (for quick runs); evaluation
    always uses the full official test split. Returns ``out``.
    """
    out = Path(out)
    _check_epochs(epochs)
    optimization = resolve_optimization(optimization)  # warns once here, not again in convert_all
    check_output(out, force)
    splits = load_splits(data_dir, tfds_dir, train_limit, allow_download)
    config = fashion_mnist(epochs, seed, precision)
    with staged_output(out, force) as stage:
        train_into(stage, splits, config, progress)
        convert_into(stage, splits.train_x, optimization, seed, progress)
        evaluate_into(stage, splits, progress)
    return out


def train_step(
    out: Path,
    epochs: int = DEFAULT_EPOCHS,
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
) -> Path:
    """Train only: ``out`` gets saved_model/1, model.keras and training.json (atomically).

    ``strategy="multi-worker"``: one of several workers named in TF_CONFIG (``host.distribute``);
    only the chief (worker 0) writes ``out``, the others save into a temporary folder and delete it.
    """
    out = Path(out)
    _check_epochs(epochs)
    config = fashion_mnist(epochs, seed, precision)
    if strategy == "multi-worker":
        task = read_tf_config()  # before any work: a bad TF_CONFIG fails at once
        if task.is_chief:
            check_output(out, force)
        dist, task = multi_worker_strategy()  # before TensorFlow's first op (the data load runs ops)
        splits = load_splits(data_dir, tfds_dir, train_limit, allow_download)
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
    if strategy != "default":
        raise ConfigError(f"--strategy must be one of {', '.join(STRATEGIES)}. Got: {strategy!r}")
    check_output(out, force)
    splits = load_splits(data_dir, tfds_dir, train_limit, allow_download)
    with staged_output(out, force) as stage:
        train_into(stage, splits, config, progress)
    return out


def _training_info(out: Path) -> dict[str, Any]:
    p = out / TRAINING_JSON
    return json.loads(p.read_text()) if p.is_file() else {}


def convert_step(
    out: Path,
    data_dir: Optional[Path] = None,
    *,
    tfds_dir: Optional[Path] = None,
    optimization: str = "DEFAULT",
    progress: bool = True,
    allow_download: bool = True,
) -> Path:
    """Convert ``out``/saved_model/1 into the four .tflite files beside it."""
    out = Path(out)
    optimization = resolve_optimization(optimization)  # warns once here, not again in convert_all
    _require_folder(out, "convert")
    _require_saved_model(out)  # before the data load
    info = _training_info(out)
    seed = int(info.get("config", {}).get("seed", 42))
    splits = load_splits(data_dir, tfds_dir, info.get("train_images"), allow_download)
    with staged_files(out) as stage:
        convert_into(out, splits.train_x, optimization, seed, progress, write_to=stage)
    return out


def evaluate_step(
    out: Path,
    data_dir: Optional[Path] = None,
    *,
    tfds_dir: Optional[Path] = None,
    progress: bool = True,
    allow_download: bool = True,
) -> Path:
    """Evaluate the .tflite files in ``out``; writes manifest.json, golden.npz, report.md, confusion_int8.png."""
    out = Path(out)
    _require_folder(out, "evaluate")
    splits = load_splits(data_dir, tfds_dir, None, allow_download)
    with staged_files(out) as stage:
        evaluate_into(out, splits, progress, write_to=stage)
    return out
