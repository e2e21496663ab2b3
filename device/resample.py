"""Area resampling: integer block sums where the factor is whole, exact running integrals where not.

A ``Reducer`` is made once per frame geometry and plane. Per axis it either sums whole blocks
of f pixels (the window shrinks, centred, to a whole multiple of the output when that loses
less than one output pixel) or, where the factor is not whole (640x480 → 96x96 stretched:
6.67 pixels per model pixel across), integrates: an integer cumulative sum along the axis,
read at the output cells' fractional edges (``C(e) = C[floor e] + frac(e) * P[floor e]``, exact
for pixels that are constant over their area). That is the exact box filter, where block
sums at the whole factor below followed by area weights would smear a hard edge by up to a
block (up to half the contrast in one output pixel, measured). The cumulative sums run on
integers (uint32); floats touch only arrays of the output's size along the integrated axis.
The planned edges, indices and buffers are made once per geometry.

For blocks of 2..4 pixels a plain 2-D strided add costs one numpy inner loop per row, which
on a few-thousand-pixel lores plane is most of the time. ``RunningSums`` therefore adds over
the plane's flat memory instead (any row stride, any pixel step, so the padded Y plane, the
U and V planes of a YUV420 buffer and interleaved B,G,R all qualify) and reads the block sums
back through one strided view made once.
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np


class Axis:
    """How one axis of a window [lo, hi) of ``n_px`` pixels becomes ``n_out`` cells: whole blocks, or an integral."""

    def __init__(self, lo: float, hi: float, n_px: int, n_out: int):
        span = hi - lo
        f = max(1, math.floor(span / n_out + 1e-9))
        self.n_out = n_out
        if f * n_out <= min(span + 1e-9, n_px) and span - f * n_out < span / n_out:
            start = math.floor(lo + (span - f * n_out) / 2.0 + 1e-9)
            self.start = max(0, min(start, n_px - f * n_out))
            self.stop = self.start + f * n_out
            self.block: Optional[int] = f
            self.count = float(f)  # pixels per output cell along this axis
            return
        self.block = None
        lo, hi = max(0.0, lo), min(float(n_px), hi)
        self.start = min(n_px - 1, math.floor(lo + 1e-9))
        self.stop = max(self.start + 1, min(n_px, math.ceil(hi - 1e-9)))
        edges = lo + (hi - lo) * np.arange(n_out + 1, dtype=np.float64) / n_out - self.start
        n = self.stop - self.start
        self.idx = np.minimum(np.floor(edges).astype(np.intp), n - 1)
        self.frac = (edges - self.idx).astype(np.float64)
        self.count = (hi - lo) / n_out

    def integrate(self, x: np.ndarray, axis: int) -> np.ndarray:
        """Sums of ``x`` over each output cell's fractional extent along ``axis`` (float64)."""
        x = np.moveaxis(x, axis, 0)
        n = x.shape[0]
        big = x.dtype.kind == "f" or n * float(np.iinfo(x.dtype).max) >= 2.0**32
        cum = np.empty((n + 1, *x.shape[1:]), dtype=np.float64 if big else np.uint32)
        cum[0] = 0
        np.cumsum(x, axis=0, dtype=cum.dtype, out=cum[1:])
        shape = (-1,) + (1,) * (x.ndim - 1)
        at = cum[self.idx].astype(np.float64) + self.frac.reshape(shape) * x[self.idx]
        return np.moveaxis(np.diff(at, axis=0), 0, axis)


def block_sums(region: np.ndarray, fy: int, fx: int) -> np.ndarray:
    """Sums of fy x fx blocks of a [ny*fy, nx*fx(, C)] region, as integers (the general path).

    Strided adds, one per row and column of a block: for 2x2 blocks of a 192x256 plane 50x
    faster here than ``reshape(...).sum(axis)``, for 17x17 blocks of a 476x476x3 frame 1.7x.
    """
    if fy == fx == 1:
        return region
    ny, nx = region.shape[0] // fy, region.shape[1] // fx
    top = fy * fx * float(np.iinfo(region.dtype).max)
    acc = np.uint16 if top <= 0xFFFF else np.uint32 if top <= 0xFFFFFFFF else np.uint64
    rows = np.add(region[0 : ny * fy : fy], region[1 : ny * fy : fy], dtype=acc) if fy > 1 else region.astype(acc)
    for i in range(2, fy):
        rows += region[i : ny * fy : fy]
    if fx == 1:
        return rows
    out = np.add(rows[:, 0 : nx * fx : fx], rows[:, 1 : nx * fx : fx])
    for j in range(2, fx):
        out += rows[:, j : nx * fx : fx]
    return out


def window_integral(x: np.ndarray, lo: float, hi: float, n_out: int, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Sums of ``x`` over ``n_out`` equal cells splitting [lo, hi) along ``axis`` (in x's cells), and each cell's length inside x.

    The part of a cell outside x sums to nothing (the caller fills it, e.g. with the background).
    Exact for values constant over their cell: cumulative sums read at fractional edges, no
    matrix products (``crop: object`` makes these per frame).
    """
    n = x.shape[axis]
    edges = np.clip(lo + (hi - lo) * np.arange(n_out + 1, dtype=np.float64) / n_out, 0.0, float(n))
    inside = np.diff(edges)
    c0 = min(n - 1, math.floor(edges[0]))
    c1 = max(c0 + 1, min(n, math.ceil(edges[-1])))
    sel: list[slice] = [slice(None)] * x.ndim
    sel[axis] = slice(c0, c1)
    part = x[tuple(sel)]
    e = edges - c0
    idx = np.minimum(e.astype(np.intp), c1 - c0 - 1)
    shape = [1] * x.ndim
    shape[axis] = -1
    frac = (e - idx).astype(np.float32).reshape(shape)
    # integers: exact uint32 running sums (a column of 4096 pixels of 16-bit sums would not fit: float64);
    # floats (the second axis): float32, whose error on these sums is far below a grey level
    exact = part.dtype.kind == "u" and part.dtype.itemsize <= 2 and part.shape[axis] * 65535.0 < 2.0**32
    cum_shape = list(part.shape)
    cum_shape[axis] += 1
    cum = np.empty(cum_shape, dtype=np.uint32 if exact else np.float32 if part.dtype.kind == "f" else np.float64)
    sel[axis] = slice(0, 1)
    cum[tuple(sel)] = 0
    sel[axis] = slice(1, None)
    np.cumsum(part, axis=axis, dtype=cum.dtype, out=cum[tuple(sel)])
    at = np.take(cum, idx, axis=axis).astype(np.float32, copy=False)
    at += frac * np.take(part, idx, axis=axis)
    return np.diff(at, axis=axis), inside


class RunningSums:
    """fy x fx block sums of a plane as running sums over its flat memory (2 <= f <= 4).

    The plane starts at ``start`` in the flat buffer, its rows are ``stride`` elements apart,
    its pixels ``step`` apart with ``channels`` interleaved samples each. ``across[n]`` sums fx
    neighbours along the buffer, ``down[n]`` sums fy of those one row apart, and the sum of
    block (i, j), channel c, sits at ``down[fy*i*stride + fx*j*step + c]``: a strided view,
    made once. Sums are also computed at offsets that are not block corners (about
    stride/width times more adds than needed), which is cheaper than per-row loops.
    """

    def __init__(self, start: int, stride: int, step: int, channels: int, fy: int, fx: int, ny: int, nx: int):
        self.fy, self.fx, self.step, self.stride = fy, fx, step, stride
        self.start = start
        n_down = fy * (ny - 1) * stride + fx * (nx - 1) * step + channels
        n_across = n_down + (fy - 1) * stride
        n_wide = n_across + (fx - 1) * step
        self.stop = start + n_wide
        self.wide = np.empty(n_wide, dtype=np.uint16)  # 16 * 255 fits
        self.across = np.empty(n_across, dtype=np.uint16)
        self.down = np.empty(n_down, dtype=np.uint16)
        self.wide_shift = [self.wide[q * step : q * step + n_across] for q in range(fx)]
        self.across_shift = [self.across[r * stride : r * stride + n_down] for r in range(fy)]
        item = self.down.itemsize
        shape: tuple[int, ...] = (ny, nx) if channels == 1 else (ny, nx, channels)
        strides: tuple[int, ...] = (fy * stride * item, fx * step * item) + ((item,) if channels > 1 else ())
        self.out = np.lib.stride_tricks.as_strided(self.down, shape=shape, strides=strides, writeable=False)

    def __call__(self, flat: np.ndarray) -> np.ndarray:
        """Block sums [ny, nx(, C)] (uint16) of the plane in ``flat`` (the frame's 1-D buffer)."""
        ws, acs, across, down = self.wide_shift, self.across_shift, self.across, self.down
        np.copyto(self.wide, flat[self.start : self.stop])  # one widening copy
        if self.fx == 1:
            np.copyto(across, ws[0])
        else:
            np.add(ws[0], ws[1], out=across)
            for q in range(2, self.fx):
                np.add(across, ws[q], out=across)
        if self.fy == 1:
            np.copyto(down, acs[0])
        else:
            np.add(acs[0], acs[1], out=down)
            for r in range(2, self.fy):
                np.add(down, acs[r], out=down)
        return self.out


class Reducer:
    """One plane of one frame geometry → its [out_h, out_w(, C)] area sums.

    ``count`` is the number of pixels summed into each value (divide by it for the mean; not
    a whole number where an axis is integrated). ``reduce(view, flat)`` takes the plane's
    strided view and, where the frame is one contiguous buffer, that buffer flattened (for
    ``RunningSums``). ``rows``/``cols`` are the plane region read; ``fy``/``fx`` the pixels per
    output cell along each axis.
    """

    def __init__(
        self,
        window: tuple[float, float, float, float],
        plane_hw: tuple[int, int],
        out_hw: tuple[int, int],
        flat_layout: Optional[tuple[int, int, int, int]] = None,
    ):
        y0, y1, x0, x1 = window
        h, w = plane_hw
        self.ay, self.ax = Axis(y0, y1, h, out_hw[0]), Axis(x0, x1, w, out_hw[1])
        self.rows, self.cols = slice(self.ay.start, self.ay.stop), slice(self.ax.start, self.ax.stop)
        self.fy, self.fx = self.ay.count, self.ax.count
        self.count = self.fy * self.fx
        self.exact = self.ay.block is not None and self.ax.block is not None
        self.running: Optional[RunningSums] = None
        fy, fx = self.ay.block or 0, self.ax.block or 0
        if self.exact and flat_layout is not None and max(fy, fx) >= 2 and fy <= 4 and fx <= 4:
            start, stride, step, channels = flat_layout
            self.running = RunningSums(start + self.ay.start * stride + self.ax.start * step, stride, step, channels,
                                       fy, fx, out_hw[0], out_hw[1])

    def reduce(self, view: Optional[np.ndarray], flat: Optional[np.ndarray]) -> np.ndarray:
        """Block sums (integers) when both axes are whole, else the area sums (float32).

        ``view`` may be None when ``running`` is set and ``flat`` is given (the fast path).
        """
        if self.running is not None and flat is not None:
            return self.running(flat)
        assert view is not None
        region = view[self.rows, self.cols]
        by, bx = self.ay.block, self.ax.block
        if by is not None and bx is not None:
            return block_sums(region, by, bx)
        if by is not None:  # whole blocks down, integral across
            rows = block_sums(region, by, 1) if by > 1 else region
            return self.ax.integrate(rows, 1).astype(np.float32)
        out = self.ay.integrate(region, 0)
        out = block_sums_f(out, bx, axis=1) if bx is not None else self.ax.integrate(out, 1)
        return out.astype(np.float32)


def block_sums_f(x: np.ndarray, f: int, axis: int) -> np.ndarray:
    """Sums of f consecutive values along ``axis`` of a float array (its length a multiple of f)."""
    if f == 1:
        return x
    x = np.moveaxis(x, axis, 0)
    return np.moveaxis(x.reshape((x.shape[0] // f, f, *x.shape[1:])).sum(axis=1), 0, axis)
