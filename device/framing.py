"""``crop: object``: find the object's bounding box against the background, cheaply, per frame.

Fashion-MNIST was made by trimming each product photo's edges that were close to the
background colour, resizing the longer side to 28 pixels and centring the result. A camera
frame is not trimmed: the object sits somewhere in it, smaller or larger, on a background
that is tinted, noisy and darker in the corners. ``find_box`` reproduces the trim on a coarse
grid of the frame (the block sums the preprocessing makes anyway, a few times the model's
size), so it costs a few dozen numpy calls on a few thousand cells:

* first the background's shading is divided out (``shading_gain``): lens vignetting and a lamp
  to one side multiply the light, and on light paper they left the darker corners as a haze of
  "garment" once a dark garment was inverted (camera-like frames, issue framing: dark on light
  90.5 % against 93.2 % light on dark, and 93.1 % with the flat field);
* the background is the median of the grid's outer ring, per channel (an object touching
  one or two edges leaves most of the ring alone); the noise is the ring's spread (MAD)
  around a plane fitted to the ring, robustly: a lamp to one side lights a light background
  unevenly, and its slope read as noise raised the floor past everything but the darkest
  part of a garment (a two-tone shirt framed as its dark band, a sandal as nothing);
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

import functools
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


PLANE_REFITS = 1  # refits of the background plane without the ring cells the object covers


@functools.lru_cache(maxsize=16)
def _ring_design(h: int, w: int) -> np.ndarray:
    """[n, 3] rows (1, y, x) of the ring cells, in ``ring``'s order (planned once per grid shape)."""
    ys = np.concatenate([np.zeros(w), np.full(w, h - 1.0), np.arange(1, h - 1.0), np.arange(1, h - 1.0)])
    xs = np.concatenate([np.arange(w, dtype=np.float64), np.arange(w, dtype=np.float64), np.zeros(h - 2), np.full(h - 2, w - 1.0)])
    return np.stack([np.ones_like(ys), ys, xs], axis=1)


def _robust_ring_fit(v: np.ndarray, a: np.ndarray) -> Optional[np.ndarray]:
    """Least squares of the ring values ``v`` on the design ``a`` [n, k], without the cells an object covers.

    First the cells near the ring's median, then refitted without those that stand out from
    the fit; None when fewer than ``2 k + 2`` cells are left (a ring mostly covered).
    """
    k = a.shape[1]
    dev = np.abs(v - float(median(v[None])[0]))
    keep = dev <= 3.0 * MAD_TO_SIGMA * float(median(dev[None])[0]) + 2.0  # not the cells an object covers
    coef = np.zeros(k)
    for _ in range(PLANE_REFITS + 1):
        if int(keep.sum()) < 2 * k + 2:
            return None
        ak = a[keep]
        coef = np.linalg.solve(ak.T @ ak + 1e-9 * np.eye(k), ak.T @ v[keep])  # k x k normal equations
        res = np.abs(v - a @ coef)
        keep = res <= 3.0 * MAD_TO_SIGMA * float(median(res[keep][None])[0]) + 2.0
    return coef if int(keep.sum()) >= 2 * k + 2 else None


def background_slope(luma: np.ndarray) -> Optional[np.ndarray]:
    """The lighting gradient of the background: a plane fitted to the grid's outer ring, less its median, [h, w].

    Least squares on the ring cells that lie near its median (an object touching an edge
    covers some), refitted without those that stand out from the plane; None for a grid too
    small to have a ring or a ring mostly covered.
    """
    h, w = luma.shape
    if h < 3 or w < 3:
        return None
    a = _ring_design(h, w)
    on = ring(luma[None])[0].astype(np.float64)
    coef = _robust_ring_fit(on, a)
    if coef is None:
        return None
    level = float(median((a @ coef)[None])[0])
    return (np.float32(coef[0] - level) + np.float32(coef[1]) * np.arange(h, dtype=np.float32)[:, None]
            + np.float32(coef[2]) * np.arange(w, dtype=np.float32)[None, :])


SHADING_MIN_LEVEL = 24.0  # below this background luma, shading is a few grey levels: left alone
SHADING_GAIN = (0.5, 2.0)  # the largest correction either way (a fit gone wrong cannot blow a frame up)


@functools.lru_cache(maxsize=16)
def _shading_design(h: int, w: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """[n, 5] rows (1, y, x, y^2, x^2) of the ring cells (y, x in [-1, 1]), and the grid's y [h, 2] and x [w, 2] terms."""
    a = _ring_design(h, w)
    y, x = a[:, 1] * (2.0 / (h - 1)) - 1.0, a[:, 2] * (2.0 / (w - 1)) - 1.0
    gy, gx = np.linspace(-1.0, 1.0, h), np.linspace(-1.0, 1.0, w)
    return np.stack([a[:, 0], y, x, y * y, x * x], axis=1), np.stack([gy, gy * gy], axis=1), np.stack([gx, gx * gx], axis=1)


def shading_gain(luma: np.ndarray) -> Optional[np.ndarray]:
    """The flat field of the background: per cell, the gain that makes its light even, [h, w] float32.

    Lens shading (vignetting) and a lamp to one side multiply the light, so they scale the
    garment and the background alike; a dark garment on light paper then leaves a haze of
    "garment" in the darker corners once inverted. A quadratic in y and x (1, y, x, y^2, x^2)
    is fitted robustly to the grid's outer ring (the cells an object covers left out), and the
    gain is the ring's median level over that field. None when there is no ring to fit, the
    background is darker than ``SHADING_MIN_LEVEL`` or the field is already flat.
    """
    h, w = luma.shape
    if h < 4 or w < 4:
        return None
    a, ty, tx = _shading_design(h, w)
    coef = _robust_ring_fit(ring(luma[None])[0].astype(np.float64), a)
    if coef is None:
        return None
    level = float(median((a @ coef)[None])[0])
    if level < SHADING_MIN_LEVEL:
        return None
    field = (coef[0] + ty @ coef[[1, 3]])[:, None] + (tx @ coef[[2, 4]])[None, :]  # separable: two short vectors
    gain = np.clip(np.float32(level) / np.maximum(field.astype(np.float32), np.float32(1.0)), *SHADING_GAIN)
    return None if float(np.abs(gain - 1.0).max()) < 0.01 else gain


def find_box(
    det: np.ndarray, luma: np.ndarray, bg: np.ndarray, bg_luma: float, luma_ring: np.ndarray, flat: bool = False
) -> Optional[Box]:
    """The object's box on a detection grid, or None when nothing stands out from the background.

    ``det`` is a planar [C, h, w] grid of per-pixel means (0..255 units, the channels a model
    sees), ``luma`` [h, w] the same cells' luma, ``bg`` the background per channel [C],
    ``bg_luma`` its luma and ``luma_ring`` the luma of the ring cells (for the noise).
    The background's lighting gradient (``background_slope``) is taken out of all of them first,
    unless ``flat``: the grids were flat-fielded (``shading_gain``), which took it out already.
    """
    slope = None if flat else background_slope(luma)
    if slope is not None:
        luma = luma - slope
        det = det - slope[None]
        luma_ring = ring(luma[None])[0]
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
