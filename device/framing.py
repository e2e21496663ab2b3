"""``crop: object``: find the object's bounding box against the background, cheaply, per frame.

Fashion-MNIST was made by trimming each product photo's edges that were close to the
background colour, resizing the longer side to 28 pixels and centring the result. A camera
frame is not trimmed: the object sits somewhere in it, smaller or larger, on a background
that is tinted, noisy and darker in the corners. ``find_box`` reproduces the trim on a coarse
grid of the frame (the block sums the preprocessing makes anyway, a few times the model's
size), so it costs a few dozen numpy calls on a few thousand cells:

* the background is the median of the grid's outer ring, per channel (an object touching
  one or two edges leaves most of the ring alone); the noise is the ring's spread (MAD);
* the object's polarity is the side of the background its luma reaches further (a dark
  garment on paper, a light one on cloth), and only deviations to that side count, per
  channel: vignetting brightens the centre of a light background against its border, which
  would otherwise read as object;
* a cell is object when it deviates by more than max(8 levels, 4 sigma of the noise, 10 % of
  the largest deviation); isolated cells (no object neighbour) are dropped as speckle;
* no cell passing the noise floor means no object: ``None``, and the caller frames the
  centred window instead (a blank frame never divides by zero).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

ABS_FLOOR = 8.0  # grey levels an object must differ from the background by, at least
NOISE_SIGMAS = 4.0
PEAK_FRACTION = 0.10  # Fashion-MNIST's trim kept pixels "not close to" the background colour
MAD_TO_SIGMA = 1.4826


@dataclass(frozen=True)
class Box:
    """An object's bounding box on the grid, [r0, r1) x [c0, c1) in cells, and its sign (+1: lighter)."""

    r0: int
    r1: int
    c0: int
    c1: int
    sign: int


def ring(grid: np.ndarray) -> np.ndarray:
    """The outer ring of cells of a planar [C, h, w] grid, as [C, n]."""
    if grid.shape[1] < 3 or grid.shape[2] < 3:
        return grid.reshape(grid.shape[0], -1)
    return np.concatenate([grid[:, 0], grid[:, -1], grid[:, 1:-1, 0], grid[:, 1:-1, -1]], axis=1)


def median(values: np.ndarray) -> np.ndarray:
    """The (upper) median along the last axis: one ``partition``, a tenth of ``np.median``'s cost here."""
    k = values.shape[-1] // 2
    return np.partition(values, k, axis=-1)[..., k]


def find_box(det: np.ndarray, luma: np.ndarray, bg: np.ndarray, bg_luma: float, luma_ring: np.ndarray) -> Optional[Box]:
    """The object's box on a detection grid, or None when nothing stands out from the background.

    ``det`` is a planar [C, h, w] grid of per-pixel means (0..255 units, the channels a model
    sees), ``luma`` [h, w] the same cells' luma, ``bg`` the background per channel [C],
    ``bg_luma`` its luma and ``luma_ring`` the luma of the ring cells (for the noise).
    """
    sigma = MAD_TO_SIGMA * float(median(np.abs(luma_ring - bg_luma))) if luma_ring.size else 0.0
    floor = max(ABS_FLOOR, NOISE_SIGMAS * sigma)
    lo, hi = float(luma.min()), float(luma.max())
    sign = 1 if hi - bg_luma >= bg_luma - lo else -1
    b = np.asarray(bg, np.float32).reshape(-1, 1, 1)
    dev = (det - b) if sign > 0 else (b - det)
    score = dev[0] if dev.shape[0] == 1 else np.maximum.reduce(dev, axis=0)  # planar: the reduction is over whole planes
    peak = float(score.max())
    if peak < floor:
        return None
    mask = score > max(floor, PEAK_FRACTION * peak)
    near = np.zeros_like(mask)
    near[1:] |= mask[:-1]
    near[:-1] |= mask[1:]
    near[:, 1:] |= mask[:, :-1]
    near[:, :-1] |= mask[:, 1:]
    mask &= near
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return Box(int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1, sign)


def frame_window(box: tuple[float, float, float, float], out_hw: tuple[int, int]) -> tuple[float, float, float, float]:
    """(y0, y1, x0, x1): the model-aspect window whose longer side is the box's, centred on it."""
    y0, y1, x0, x1 = box
    h, w = out_hw
    scale = max((y1 - y0) / h, (x1 - x0) / w)  # frame pixels per model pixel
    cy, cx = (y0 + y1) / 2.0, (x0 + x1) / 2.0
    return cy - scale * h / 2.0, cy + scale * h / 2.0, cx - scale * w / 2.0, cx + scale * w / 2.0
