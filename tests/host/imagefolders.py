"""Test helpers: image folders made from real Fashion-MNIST images (the Debian IDX files), and camera-like bursts.

Every image written here is a real photograph of a garment from Fashion-MNIST; RGB folders tint
and frame them on a canvas of some other size and aspect, as a camera would deliver them.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Optional

import numpy as np
import pytest

from host import data

IDX = data.DEFAULT_IDX_DIR
needs_idx = pytest.mark.skipif(not (IDX / data.IDX_FILES["test_labels"]).is_file(), reason="dataset-fashion-mnist not installed")
SAFE_NAMES = ("tshirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle-boot")
TINTS = {0: (1.0, 0.45, 0.35), 1: (0.35, 0.55, 1.0), 7: (0.45, 1.0, 0.5), 8: (1.0, 0.9, 0.3), 5: (0.8, 0.4, 1.0)}


def fashion(split: str = "test") -> tuple[np.ndarray, np.ndarray]:
    """Real Fashion-MNIST images uint8 [N, 28, 28] and labels, from the Debian package's IDX files."""
    prefix = "t10k" if split == "test" else "train"
    return (
        data.read_idx(IDX / f"{prefix}-images-idx3-ubyte.gz"),
        data.read_idx(IDX / f"{prefix}-labels-idx1-ubyte.gz").astype(np.int64),
    )


def pick(classes: Iterable[int], per_class: int, split: str = "test", start: int = 0) -> dict[int, np.ndarray]:
    """The first ``per_class`` images of each class (from index ``start``)."""
    x, y = fashion(split)
    return {c: x[start:][y[start:] == c][:per_class] for c in classes}


def framed_rgb(img: np.ndarray, cls: int, rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    """A 28x28 garment tinted for its class, scaled up into a (width, height) canvas, as a camera photo would frame it."""
    from PIL import Image

    w, h = size
    side = min(w, h)
    tint = np.asarray(TINTS.get(cls, (0.7, 0.7, 0.7)), dtype=np.float32)
    rgb = np.clip(img[..., None].astype(np.float32) * tint * 0.85 + 25, 0, 255).astype(np.uint8)
    big = np.asarray(Image.fromarray(rgb).resize((side, side), Image.BILINEAR))
    canvas = np.full((h, w, 3), 25, dtype=np.uint8)
    y0, x0 = (h - side) // 2, (w - side) // 2
    canvas[y0 : y0 + side, x0 : x0 + side] = big
    noise = rng.normal(0, 3, canvas.shape)
    return np.clip(canvas + noise, 0, 255).astype(np.uint8)


def write_images(folder: Path, images: Iterable[np.ndarray], fmt: str = "png", prefix: str = "img", first: int = 0) -> list[Path]:
    """Write uint8 images (grey [H, W] or RGB [H, W, 3]) as files; returns their paths."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, img in enumerate(images, start=first):
        p = folder / f"{prefix}{i:05d}.{fmt}"
        Image.fromarray(np.asarray(img)).save(p, quality=92) if fmt == "jpg" else Image.fromarray(np.asarray(img)).save(p)
        paths.append(p)
    return paths


def grey_folder(root: Path, classes: Iterable[int] = (0, 1, 7), per_class: int = 40, start: int = 0) -> Path:
    """DIR/<name>/imgNNNNN.png: real 28x28 grey Fashion-MNIST images."""
    for c, imgs in pick(classes, per_class, start=start).items():
        write_images(root / SAFE_NAMES[c], imgs)
    return root


def rgb_folder(
    root: Path, classes: Iterable[int] = (0, 1, 7), per_class: int = 40, seed: int = 0, sizes: Optional[list[tuple[int, int]]] = None
) -> Path:
    """DIR/<name>/imgNNNNN.jpg: tinted garments framed in RGB photos of mixed sizes and aspects."""
    rng = np.random.default_rng(seed)
    sizes = sizes or [(120, 90), (90, 120), (100, 100), (160, 120)]
    for c, imgs in pick(classes, per_class).items():
        write_images(root / SAFE_NAMES[c], [framed_rgb(x, c, rng, sizes[i % len(sizes)]) for i, x in enumerate(imgs)], fmt="jpg")
    return root


def burst(img: np.ndarray, frames: int, rng: np.random.Generator, scale: int = 4) -> list[np.ndarray]:
    """Camera-like frames of one still garment: upscaled, sensor noise (sigma 4), exposure +-5 %, jitter of <= 1 px."""
    from PIL import Image

    big = np.asarray(Image.fromarray(img).resize((28 * scale, 28 * scale), Image.BILINEAR)).astype(np.float32)
    out = []
    for _ in range(frames):
        dy, dx = rng.integers(-1, 2, 2)
        f = np.roll(big, (int(dy), int(dx)), axis=(0, 1)) * rng.uniform(0.95, 1.05) + rng.normal(0, 4, big.shape)
        out.append(np.clip(f, 0, 255).astype(np.uint8))
    return out
