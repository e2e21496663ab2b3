"""Image-folder datasets: ``DIR/<label>/*.jpg|png`` → uint8 images at model size, through Keras's own loader.

``keras.utils.image_dataset_from_directory`` lists the class folders (hidden ones skipped), the
image files in them (any depth), decodes them and resizes them with ``crop_to_aspect_ratio``
(the largest centred window of the model's aspect) and ``interpolation="area"``: what the
device's ``crop: center`` + ``resize: area`` do to a camera frame.

Unreadable or truncated files are **skipped and counted, not refused**: one broken file among
hundreds (an interrupted copy, a zero-byte file, a ``._`` file from a Mac) should not stop a
training run, and nothing is silent: each is named in a warning and counted in report.md and
the manifest. The loader runs as one tf.data pipeline with ``ignore_errors``; every element
carries its index, so the indices missing from the output name the files that failed. A file
the system cannot open at all (permissions, a dangling link, an I/O error) is refused instead:
that is a problem with the folder, not with one picture.

Then ``host.split`` drops duplicates, groups bursts and splits 80 / 10 / 10 by content hash.
"""

from __future__ import annotations

import hashlib
import io
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from device.manifest import Normalize, Preprocess
from host.data import Splits
from host.errors import DataError
from host.labels import check_labels
from host.split import SplitPlan, plan_split

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png")  # what image_dataset_from_directory reads
COLORS = ("rgb", "grayscale")
AUTO_SIZE_MAX = 96  # a folder of one square size up to this trains at that size; anything else at DEFAULT_SIZE
DEFAULT_SIZE = 96
MIN_SIZE, MAX_SIZE = 8, 512
IMBALANCE_WARN = 3.0
CROPS = ("center", "none")  # what the loader can do as the device does: crop_to_aspect_ratio on or off
Size = Union[int, tuple[int, int]]
_GREY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"})
_EXIF_ORIENTATION = 0x0112


@dataclass(frozen=True)
class FileInfo:
    """What the header scan learns about one file (no decoding)."""

    name: str  # path relative to the data folder: <label>/.../<file>
    sha256: str  # of the file's bytes
    size: Optional[tuple[int, int]]  # (width, height), None when the header is unreadable
    grey: Optional[bool]
    exif_rotated: bool


@dataclass(frozen=True)
class FolderData:
    """Every readable image of a folder at model size, with what was set aside."""

    root: Path
    class_names: tuple[str, ...]
    images: np.ndarray  # uint8 [N, S, S, C], R,G,B order for C = 3
    labels: np.ndarray  # int64 [N]
    names: tuple[str, ...]
    sha256: tuple[str, ...]
    skipped: tuple[tuple[str, str], ...]  # (name, reason) of unreadable files
    exif_rotated: tuple[str, ...]
    size: tuple[int, int]  # [H, W]
    color: str
    files: int
    crop: str = "center"


def parse_folder_spec(spec: str) -> Path:
    """``folder:DIR`` → DIR (checked to be a folder)."""
    text = spec[len("folder:") :] if spec.startswith("folder:") else spec
    if not text:
        raise DataError("--data folder: needs a folder, e.g. --data folder:photos (one subfolder per class)")
    root = Path(text).expanduser()
    if not root.exists():
        raise DataError(f"--data folder:{root}: {root} does not exist; pass a folder with one subfolder per class")
    if not root.is_dir():
        raise DataError(f"--data folder:{root}: {root} is a file, not a folder; pass a folder with one subfolder per class")
    return root


def class_folders(root: Path) -> list[str]:
    """The class folder names, as the Keras loader sees them (sorted, hidden ones skipped)."""
    try:
        return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError as e:
        raise DataError(f"cannot list {root}: {e}") from e


def check_classes(root: Path) -> list[str]:
    """Refuse a folder without at least two class folders, or with a label that cannot be a folder on the Pi."""
    classes = class_folders(root)
    if not classes:
        loose = sum(1 for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        hint = f" (it holds {loose} images directly; move them into one subfolder per class)" if loose else ""
        raise DataError(
            f"{root} holds no class folders{hint}: put one subfolder per class in it, named for the label, "
            f"with {', '.join(e.lstrip('.') for e in IMAGE_EXTENSIONS)} images inside"
        )
    _warn_about_hidden(root)
    check_labels(classes, "class folder")
    if len(classes) == 1:
        raise DataError(f"{root} has one class folder ({classes[0]!r}); a classifier needs at least two: add a folder per class")
    return classes


def _warn_about_hidden(root: Path) -> None:
    """One warning naming the hidden folders (name starting with '.') that hold images: the Keras loader skips them."""
    hidden = []
    for p in sorted(root.iterdir()):
        if p.is_dir() and p.name.startswith("."):
            n = sum(1 for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS)
            if n:
                hidden.append(f"{p.name} ({n} image{'' if n == 1 else 's'})")
    if hidden:
        log.warning("skipped hidden folder%s %s: the Keras loader leaves out folders whose name starts with '.'; "
                    "rename %s to train on %s", "" if len(hidden) == 1 else "s", _examples(hidden),
                    "it" if len(hidden) == 1 else "them", "it" if len(hidden) == 1 else "them")


def _keras_listing(root: Path, classes: Sequence[str], size: tuple[int, int], color: str, crop: str = "center") -> Any:
    import keras

    try:
        return keras.utils.image_dataset_from_directory(
            str(root),
            labels="inferred",
            label_mode="int",
            class_names=list(classes),
            color_mode=color,
            batch_size=None,
            image_size=size,
            shuffle=False,
            interpolation="area",
            crop_to_aspect_ratio=crop == "center",  # none: the whole image, stretched
            verbose=False,
        )
    except ValueError as e:
        if "No images found" in str(e):
            raise DataError(
                f"the class folders in {root} hold no images ({', '.join(e.lstrip('.') for e in IMAGE_EXTENSIONS)}); "
                "put the pictures of each class in its folder"
            ) from e
        raise DataError(f"the Keras image loader cannot read {root}: {str(e).splitlines()[0]}") from e


def _scan_file(root: Path, name: str) -> FileInfo:
    from PIL import Image

    data = (root / name).read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    try:
        with Image.open(io.BytesIO(data)) as im:
            size, grey = (int(im.size[0]), int(im.size[1])), im.mode in _GREY_MODES
            if im.mode in ("P", "PA"):
                grey = _palette_is_grey(im)
            orientation = im.getexif().get(_EXIF_ORIENTATION, 1) if hasattr(im, "getexif") else 1
    except Exception:  # unreadable header: the decoder will name the problem
        return FileInfo(name, digest, None, None, False)
    return FileInfo(name, digest, size, grey, orientation not in (None, 1))


def _palette_is_grey(im: Any) -> bool:
    pal = im.getpalette() or []
    rgb = np.asarray(pal[: (len(pal) // 3) * 3], dtype=np.int64).reshape(-1, 3)
    return bool(len(rgb) and np.all(rgb[:, 0] == rgb[:, 1]) and np.all(rgb[:, 1] == rgb[:, 2]))


def scan_files(root: Path, names: Sequence[str], progress: bool = True) -> list[FileInfo]:
    """sha256 and header facts (size, grey, EXIF rotation) of every listed file."""
    from tqdm import tqdm

    out: list[FileInfo] = []
    for name in tqdm(names, desc="reading files", unit="file", disable=not progress, leave=False):
        try:
            out.append(_scan_file(root, name))
        except OSError as e:
            # not a damaged image but a file the system cannot open (permissions, a dangling link, an I/O
            # error): refused, since skipping it would hide a problem with the folder, not with one picture
            raise DataError(f"cannot open {root / name}: {e.strerror or e}; fix its permissions or link, or remove it") from e
    return out


def resolve_format(infos: Sequence[FileInfo], image_size: Optional[Size], color: Optional[str]) -> tuple[tuple[int, int], str]:
    """The model size and colour: as given, else from the files.

    Colour: grayscale when every readable file is a single-channel image, else rgb. Size: the
    files' own size when they all are one square size of at most 96 pixels (Fashion-MNIST's 28),
    else 96.
    """
    known = [i for i in infos if i.size is not None]
    if color is None:
        color = "grayscale" if known and all(i.grey for i in known) else "rgb"
    if image_size is None:
        sizes = {i.size for i in known}
        only = next(iter(sizes)) if len(sizes) == 1 else None
        image_size = only[0] if only is not None and only[0] == only[1] and MIN_SIZE <= only[0] <= AUTO_SIZE_MAX else DEFAULT_SIZE
    return as_size(image_size), color


def as_size(image_size: Size) -> tuple[int, int]:
    """N → (N, N); (H, W) stays, each checked to lie in [8, 512]."""
    h, w = (image_size, image_size) if isinstance(image_size, int) else (int(image_size[0]), int(image_size[1]))
    if not (MIN_SIZE <= h <= MAX_SIZE and MIN_SIZE <= w <= MAX_SIZE):
        raise DataError(f"the image size must be between {MIN_SIZE} and {MAX_SIZE} pixels a side. Got: {h}x{w}")
    return h, w


_TF_NOISE = re.compile(r"\{\{function_node [^}]*\}\}\s*|\s*\[Op:\w+\].*$", re.S)


def _decode_problem(path: Path, channels: int) -> str:
    """Why TensorFlow's decoder (the one the Keras loader uses) rejects a file, in a few words."""
    import tensorflow as tf

    try:
        tf.io.decode_image(tf.io.read_file(str(path)), channels=channels, expand_animations=False)
    except Exception as e:  # the decoder's own message says what is wrong
        text = _TF_NOISE.sub("", str(getattr(e, "message", e))).strip()
        return text.splitlines()[0] if text else type(e).__name__
    return "the loader failed on it"


def load_folder(
    root: Path, image_size: Optional[Size] = None, color: Optional[str] = None, progress: bool = True, crop: str = "center"
) -> FolderData:
    """Every readable image in ``root``'s class folders at model size (unreadable files skipped and named)."""
    from tqdm import tqdm

    root = Path(root)
    if color is not None and color not in COLORS:
        raise DataError(f"--color must be rgb or grayscale. Got: {color!r}")
    if crop not in CROPS:
        raise DataError(f"the folder loader crops {' or '.join(CROPS)} (as the device does). Got: crop {crop!r}")
    first = (as_size(image_size) if image_size is not None else as_size(DEFAULT_SIZE), color or "rgb")
    classes = check_classes(root)
    listing = _keras_listing(root, classes, *first, crop)
    names = [str(Path(p).relative_to(root)) for p in listing.file_paths]
    infos = scan_files(root, names, progress)
    size, color = resolve_format(infos, image_size, color)
    ds = listing if (size, color) == first else _keras_listing(root, classes, size, color, crop)
    channels = 3 if color == "rgb" else 1
    n = len(names)
    images = np.empty((n, *size, channels), dtype=np.uint8)
    labels = np.full(n, -1, dtype=np.int64)
    ok = np.zeros(n, dtype=bool)
    batches = ds.enumerate().ignore_errors(log_warning=False).batch(256)
    with tqdm(total=n, desc="decoding", unit="image", disable=not progress, leave=False) as bar:
        for idx, (x, y) in batches.as_numpy_iterator():
            images[idx] = np.clip(np.rint(x), 0, 255).astype(np.uint8)
            labels[idx] = y
            ok[idx] = True
            bar.update(len(idx))
    skipped = tuple((names[i], _decode_problem(root / names[i], channels)) for i in np.nonzero(~ok)[0])
    keep = np.nonzero(ok)[0]
    return FolderData(
        root=root,
        class_names=tuple(classes),
        images=images[keep],
        labels=labels[keep],
        names=tuple(names[i] for i in keep),
        sha256=tuple(infos[i].sha256 for i in keep),
        skipped=skipped,
        exif_rotated=tuple(infos[i].name for i in keep if infos[i].exif_rotated),
        size=size,
        color=color,
        files=n,
        crop=crop,
    )


def _examples(items: Sequence[str], limit: int = 3) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def warn_about(data: FolderData) -> None:
    """One warning line per kind of problem that did not stop the run."""
    if data.skipped:
        log.warning(
            "skipped %d unreadable image%s (counted in report.md): %s",
            len(data.skipped), "" if len(data.skipped) == 1 else "s",
            _examples([f"{n} ({why})" for n, why in data.skipped]),
        )
    if data.exif_rotated:
        log.warning(
            "%d image%s carry an EXIF rotation, which the Keras loader ignores, so they train sideways: %s; "
            "save them upright (e.g. `mogrify -auto-orient *.jpg`)",
            len(data.exif_rotated), "" if len(data.exif_rotated) == 1 else "s", _examples(list(data.exif_rotated)),
        )


def contract_for(size: tuple[int, int], color: str, crop: str = "center") -> Preprocess:
    """The preprocessing contract of a model trained on photos: what the loader did, as the device must do it."""
    return Preprocess(
        size=size,
        color=color,
        channel_order="rgb",
        crop=crop,
        resize="area",
        contrast="none",  # pixel values as the camera gives them
        polarity="any",  # photos come in any polarity: never invert
        normalize=Normalize(range=(0.0, 1.0)),  # host.train feeds pixel / 255
    )


def imbalance(per_class: dict[str, dict[str, int]]) -> Optional[tuple[float, str, str]]:
    """(largest class / smallest class, the largest's label, the smallest's), counting every split; None without classes."""
    totals = {label: sum(d.values()) for label, d in per_class.items()}
    if not totals:
        return None
    big, small = max(totals, key=lambda k: totals[k]), min(totals, key=lambda k: totals[k])
    return totals[big] / max(totals[small], 1), big, small


def _warn_about_plan(plan: SplitPlan, class_names: Sequence[str]) -> None:
    if plan.duplicates:
        log.warning(
            "%d duplicate image%s counted once: %s",
            len(plan.duplicates), "" if len(plan.duplicates) == 1 else "s",
            _examples([f"{a} = {b}" for a, b in plan.duplicates]),
        )
    if plan.conflicts:
        log.warning(
            "%d picture%s appear%s in two classes and %s left out (nobody can say which label is right): %s",
            len(plan.conflicts), "" if len(plan.conflicts) == 1 else "s", "s" if len(plan.conflicts) == 1 else "",
            "was" if len(plan.conflicts) == 1 else "were", _examples([" = ".join(n for n, _ in c) for c in plan.conflicts]),
        )
    totals = {label: sum(d.values()) for label, d in plan.per_class.items()}
    worst = imbalance(plan.per_class)
    if worst is not None and worst[0] > IMBALANCE_WARN:
        ratio, big, small = worst
        log.warning(
            "class imbalance %.1fx: %r has %d images, %r %d; the model will favour the big classes. "
            "Add images to the small ones (report.md shows per-class accuracy)",
            ratio, big, totals[big], small, totals[small],
        )
    if plan.largest_group:
        label = Path(plan.largest_group[0]).parts[0]
        n, total = len(plan.largest_group), totals.get(label, 0)
        if total and n > max(4, total // 4):
            log.warning(
                "%d of %r's %d images are near-identical frames (%s … %s), kept together in one split; "
                "pictures taken at other moments or angles teach the model more",
                n, label, total, plan.largest_group[0], plan.largest_group[-1],
            )


def folder_splits(
    root: Path, image_size: Optional[Size] = None, color: Optional[str] = None, train_limit: Optional[int] = None,
    progress: bool = True, crop: str = "center",
) -> Splits:
    """A folder of images as ``Splits``: loaded, checked, deduplicated, grouped and split 80 / 10 / 10."""
    fd = load_folder(root, image_size, color, progress, crop)
    warn_about(fd)
    plan = plan_split(fd.images, fd.labels, fd.names, fd.sha256, fd.class_names)
    _warn_about_plan(plan, fd.class_names)
    train = plan.train[:train_limit] if train_limit is not None else plan.train
    data = {
        "kind": "folder",
        "dir": str(Path(root).resolve()),
        "image_size": fd.size[0] if fd.size[0] == fd.size[1] else list(fd.size),
        "color": fd.color,
        "crop": fd.crop,
        "files": fd.files,
        "unreadable": len(fd.skipped),
        "unreadable_examples": [list(s) for s in fd.skipped[:5]],
        "exif_rotated": len(fd.exif_rotated),
        **plan.stats(),
    }
    worst = imbalance(plan.per_class)
    if worst is not None:
        data["imbalance"] = {"ratio": round(worst[0], 3), "largest": worst[1], "smallest": worst[2], "warn_above": IMBALANCE_WARN}
    x, y = fd.images, fd.labels
    return Splits(
        train_x=x[train], train_y=y[train],
        val_x=x[plan.validation], val_y=y[plan.validation],
        seed_test_x=None, seed_test_y=None,
        test_x=x[plan.test], test_y=y[plan.test],
        source=f"folder:{Path(root).resolve()}",
        labels=fd.class_names,
        preprocess=contract_for(fd.size, fd.color, fd.crop),
        test_name=f"the held-out 10 % of {Path(root).name}/, {len(plan.test)} images",
        seed_test_name="",
        data=data,
    )
