"""The data sets: Fashion-MNIST through tensorflow_datasets (the default), or a folder of your images.

``load_data("fashion_mnist" | "folder:DIR", ...)`` gives the same ``Splits`` either way; a folder
goes through ``host.folder`` (Keras's loader) and ``host.split`` (80 / 10 / 10 by content hash).

Fashion-MNIST is downloaded where possible, else ingested from IDX files.

The seed's split strings are kept exactly: ``train[:80%]`` / ``train[80%:90%]`` /
``train[90%:]`` for train / validation / test-from-train, plus the official ``test`` split
(10,000 images) where the headline accuracy is reported.

Without network, the official IDX ``.gz`` files (Debian ``dataset-fashion-mnist`` installs them
in ``/usr/share/datasets/fashion-mnist``) are ingested into the tfds data dir as the dataset
``fashion_mnist`` version 3.0.1, keyed by record index like the upstream builder. tfds orders
records by a hash of (split, key), so the split strings select the same images either way.
"""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import logging
import os
import socket
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from device.manifest import Preprocess
from host.errors import ConfigError, DataError

log = logging.getLogger(__name__)

DATASET = "fashion_mnist"
VERSION = "3.0.1"
LABELS: tuple[str, ...] = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
SEED_SPLITS = ("train[:80%]", "train[80%:90%]", "train[90%:]")
OFFICIAL_TEST = "test"
DEFAULT_IDX_DIR = Path("/usr/share/datasets/fashion-mnist")
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}
EXPECTED = {"train": 60_000, "test": 10_000}
DOWNLOAD_HOST = ("fashion-mnist.s3-website.eu-central-1.amazonaws.com", 80)


FASHION_MNIST = DATASET
# What Fashion-MNIST is: 28x28 grey, a light garment on a dark background, [0, 1], each garment
# trimmed to its bounding box and its longer side resized to fill the frame, centred: the device
# frames a camera frame the same way (crop: object, device.framing).
FASHION_MNIST_CONTRACT = Preprocess(crop="object")


@dataclass(frozen=True)
class Splits:
    """Train / validation / test as uint8 images [N, H, W, C] and int64 labels, with what they are.

    ``test`` is where the headline accuracy is measured (Fashion-MNIST: the official test split;
    a folder: its held-out 10 %); ``seed_test`` is a second test split where there is one
    (Fashion-MNIST: the seed's ``train[90%:]``).
    """

    train_x: np.ndarray
    train_y: np.ndarray
    val_x: np.ndarray
    val_y: np.ndarray
    seed_test_x: Optional[np.ndarray]
    seed_test_y: Optional[np.ndarray]
    test_x: np.ndarray
    test_y: np.ndarray
    source: str
    labels: tuple[str, ...] = LABELS
    preprocess: Preprocess = FASHION_MNIST_CONTRACT
    test_name: str = "the official Fashion-MNIST test split"
    seed_test_name: str = "the seed's `train[90%:]` split"
    data: dict[str, Any] = field(default_factory=lambda: {"kind": FASHION_MNIST})


def default_tfds_dir() -> Path:
    """The tfds data dir: $TFDS_DATA_DIR or ~/tensorflow_datasets, as tfds itself resolves it."""
    return Path(os.environ.get("TFDS_DATA_DIR", "~/tensorflow_datasets")).expanduser()


def read_idx(path: Path) -> np.ndarray:
    """Parse one gzipped IDX file (ubyte images or labels) into a uint8 array."""
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise DataError(f"cannot read IDX file {path}: {e}. Reinstall it (`apt-get install --reinstall dataset-fashion-mnist`)") from e
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(f"{path} is not an unsigned-byte IDX file (header {raw[:4].hex()}); expected magic 0x0000080N")
    ndim = raw[3]
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    body = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise DataError(f"{path}: header says {dims} ({int(np.prod(dims))} bytes) but it holds {body.size}: the file is truncated")
    return body.reshape(dims)


def check_counts(labels: np.ndarray, split: str, expected_total: int, num_classes: int = 10) -> None:
    """Fashion-MNIST is balanced: the total and every class count must be exact."""
    if labels.shape[0] != expected_total:
        raise DataError(f"the {split} split has {labels.shape[0]} labels, Fashion-MNIST has {expected_total}: wrong or damaged files")
    counts = np.bincount(labels.astype(np.int64), minlength=num_classes)
    per_class = expected_total // num_classes
    if counts.size != num_classes or np.any(counts != per_class):
        raise DataError(f"the {split} split has per-class counts {counts.tolist()}, expected {per_class} each: wrong or damaged files")


def load_idx_folder(folder: Path) -> dict[str, np.ndarray]:
    """Read and check the four official IDX files from ``folder``."""
    missing = [n for n in IDX_FILES.values() if not (folder / n).is_file()]
    if missing:
        raise DataError(f"{folder} lacks {', '.join(missing)}: pass --data-dir with the four Fashion-MNIST IDX .gz files")
    arrays = {k: read_idx(folder / n) for k, n in IDX_FILES.items()}
    for split, total in EXPECTED.items():
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.shape != (total, 28, 28):
            raise DataError(f"{folder / IDX_FILES[split + '_images']}: images are {images.shape}, expected ({total}, 28, 28)")
        check_counts(labels, split, total)
    return arrays


def _network_reachable(host: tuple[str, int], timeout_s: float) -> bool:
    """Can we open a TCP connection to ``host`` within ``timeout_s`` (DNS included)?"""
    ok: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection(host, timeout=timeout_s):
                ok.append(True)
        except OSError:
            pass

    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(timeout_s)  # getaddrinfo ignores socket timeouts, so the join bounds it
    return bool(ok)


@contextlib.contextmanager
def _lock(tfds_dir: Path) -> Iterator[None]:
    tfds_dir.mkdir(parents=True, exist_ok=True)
    with open(tfds_dir / f".edgekit-{DATASET}.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _builder(tfds_dir: Path) -> Any:
    import tensorflow_datasets as tfds

    return tfds.builder(f"{DATASET}:{VERSION}", data_dir=str(tfds_dir))


def is_prepared(tfds_dir: Path) -> bool:
    """True when fashion_mnist 3.0.1 is ready in ``tfds_dir``."""
    return bool(_builder(tfds_dir).is_prepared())


def _idx_builder_class() -> Any:
    import tensorflow_datasets as tfds

    class IdxBuilder(tfds.dataset_builders.AdhocBuilder, skip_registration=True):  # type: ignore[call-arg]
        """AdhocBuilder whose info carries the (image, label) supervised keys, as upstream's does."""

        def _info(self) -> Any:
            info = super()._info()
            return tfds.core.DatasetInfo(
                builder=self,
                description=info.description,
                features=info.features,
                supervised_keys=("image", "label"),
                homepage=info.homepage,
            )

    return IdxBuilder


def ingest_idx(folder: Path, tfds_dir: Path) -> None:
    """Store the IDX files as the tfds dataset fashion_mnist:3.0.1 in ``tfds_dir``."""
    import tensorflow_datasets as tfds

    arrays = load_idx_folder(folder)
    features = tfds.features.FeaturesDict(
        {"image": tfds.features.Image(shape=(28, 28, 1)), "label": tfds.features.ClassLabel(names=list(LABELS))}
    )

    def examples(split: str) -> Iterator[tuple[int, dict[str, Any]]]:
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        for i in range(images.shape[0]):  # index keys, like the upstream builder
            yield i, {"image": images[i][..., None], "label": int(labels[i])}

    builder = _idx_builder_class()(
        name=DATASET,
        version=VERSION,
        features=features,
        split_datasets={"train": examples("train"), "test": examples("test")},
        data_dir=str(tfds_dir),
        description=f"Fashion-MNIST ingested by edgekit from the official IDX files in {folder}.",
        homepage="https://github.com/zalandoresearch/fashion-mnist",
    )
    builder.download_and_prepare()


def prepare(data_dir: Optional[Path] = None, tfds_dir: Optional[Path] = None, allow_download: bool = True) -> str:
    """Make fashion_mnist:3.0.1 loadable from ``tfds_dir``; returns where it came from.

    Order: already prepared → ``data_dir`` IDX files when given → tfds download when the
    download host answers within seconds → the Debian IDX folder → a DataError naming the fixes.
    """
    tfds_dir = Path(tfds_dir) if tfds_dir else default_tfds_dir()
    if data_dir is not None and not Path(data_dir).is_dir():
        raise DataError(f"--data-dir {data_dir} is not a folder; pass the folder holding the four Fashion-MNIST IDX .gz files")
    try:
        with _lock(tfds_dir):
            if is_prepared(tfds_dir):
                return f"tfds:{tfds_dir}"
            if data_dir is not None:
                ingest_idx(Path(data_dir), tfds_dir)
                return f"idx:{data_dir}"
            if allow_download and _network_reachable(DOWNLOAD_HOST, timeout_s=3.0):
                try:
                    _builder(tfds_dir).download_and_prepare()
                    return "download"
                except Exception as e:  # network went away mid-way: fall back to local files
                    log.warning("tfds download of %s failed (%s); trying local IDX files", DATASET, e)
            if all((DEFAULT_IDX_DIR / n).is_file() for n in IDX_FILES.values()):
                ingest_idx(DEFAULT_IDX_DIR, tfds_dir)
                return f"idx:{DEFAULT_IDX_DIR}"
    except PermissionError as e:
        raise DataError(f"cannot write the tfds data dir {tfds_dir}: {e}. Set TFDS_DATA_DIR to a writable folder") from e
    raise DataError(
        "no Fashion-MNIST source: tfds cannot download it (no network) and no IDX files were found in "
        f"{DEFAULT_IDX_DIR}. Either install them (`apt-get install dataset-fashion-mnist`), or pass "
        "--data-dir DIR with train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
        "t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz, or run once with network access"
    )


def load_splits(
    data_dir: Optional[Path] = None,
    tfds_dir: Optional[Path] = None,
    train_limit: Optional[int] = None,
    allow_download: bool = True,
) -> Splits:
    """Load the seed's three splits and the official test split as numpy arrays."""
    import tensorflow_datasets as tfds

    tfds_dir = Path(tfds_dir) if tfds_dir else default_tfds_dir()
    source = prepare(data_dir, tfds_dir, allow_download)
    try:
        parts = tfds.load(
            f"{DATASET}:{VERSION}",
            split=[*SEED_SPLITS, OFFICIAL_TEST],
            as_supervised=True,
            batch_size=-1,
            data_dir=str(tfds_dir),
            download=False,
        )
    except Exception as e:
        raise DataError(f"tfds could not load {DATASET} from {tfds_dir}: {e}. Delete {tfds_dir / DATASET} and run again") from e
    arrays = [(np.asarray(x, dtype=np.uint8), np.asarray(y, dtype=np.int64)) for x, y in tfds.as_numpy(parts)]
    (tx, ty), (vx, vy), (sx, sy), (ox, oy) = arrays
    if (tx.shape[0] + vx.shape[0] + sx.shape[0], ox.shape[0]) != (EXPECTED["train"], EXPECTED["test"]):
        raise DataError(f"{DATASET} in {tfds_dir} has the wrong size; delete {tfds_dir / DATASET} and run again")
    check_counts(oy, "official test", EXPECTED["test"])
    if train_limit is not None:
        tx, ty = tx[:train_limit], ty[:train_limit]
    return Splits(tx, ty, vx, vy, sx, sy, ox, oy, source)


def load_data(
    data: str = FASHION_MNIST,
    *,
    data_dir: Optional[Path] = None,
    tfds_dir: Optional[Path] = None,
    train_limit: Optional[int] = None,
    allow_download: bool = True,
    image_size: Optional[Any] = None,
    color: Optional[str] = None,
    progress: bool = True,
) -> Splits:
    """``fashion_mnist`` (tfds) or ``folder:DIR`` (one subfolder per class) as ``Splits``."""
    if data in (FASHION_MNIST, "fashion-mnist"):
        if image_size not in (None, 28) or color not in (None, "grayscale"):
            raise ConfigError("--image-size and --color apply to --data folder:DIR; Fashion-MNIST is 28x28 grayscale")
        return load_splits(data_dir, tfds_dir, train_limit, allow_download)
    if data.startswith("folder:"):
        from host.folder import folder_splits, parse_folder_spec

        size = tuple(image_size) if isinstance(image_size, (list, tuple)) else image_size
        return folder_splits(parse_folder_spec(data), size, color, train_limit, progress)
    raise ConfigError(f"--data must be fashion_mnist or folder:DIR (one subfolder per class). Got: {data!r}")
