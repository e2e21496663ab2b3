"""Frame → model input, following the manifest's preprocessing contract. Vectorised numpy only.

Steps: take the grey plane (the Y plane of a YUV420 buffer, honouring its row stride; or the
B,G,R / R,G,B channels), centre-crop the largest square that is a whole multiple of the model
size, area-resize by integer block sums (no float64 means), convert to grey after the resize
(both are linear, so the order does not matter and grey costs 784 pixels, not 300k), decide
polarity (``invert=auto`` looks at the border's corners: a light border means a photo of a dark garment
on a light background, the opposite of Fashion-MNIST), stretch to the normalisation range, then
quantise with the model's own scale and zero point (``device.quant``).

The host calls ``preprocess`` (or ``Preprocessor.image``) to evaluate "as the device sees it".

Per-frame cost: on the 112x84 lores Y plane the model input costs about a dozen numpy calls on
arrays of a few thousand elements, so call overhead, not arithmetic, is what is left. ``into``
therefore keeps a plan per frame geometry (crop window, block factor, preallocated buffers and
their strided views) and reuses it while frames keep the same format, shape and size. Every
plan gives the same block sums as the general path, whatever the frame's memory layout, so
``into`` writes the same bits for the same picture; float outputs equal ``tensor``'s bit for bit,
quantised ones are within one count (``into`` folds the scale into one multiply-add, so a
rounding tie can land one count away: about 1 element in 3,000 on random frames). The tests
check all three.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from device.errors import FrameError, ManifestError
from device.manifest import Preprocess, TensorSpec
from device.quant import to_input

PIXEL_FORMATS = ("GRAY", "RGB", "BGR", "RGBX", "BGRX", "YUV420")
INVERT_MODES = ("auto", "on", "off")
DEFAULT_CONTRACT = Preprocess()
# ITU-R BT.601 luma weights, indexed by channel position for each memory order.
_LUMA = {"RGB": (0.299, 0.587, 0.114), "BGR": (0.114, 0.587, 0.299)}
_LUMA["RGBX"], _LUMA["BGRX"] = _LUMA["RGB"], _LUMA["BGR"]
_CHANNELS = {"RGB": 3, "BGR": 3, "RGBX": 4, "BGRX": 4}


def gray_plane(pixels: np.ndarray, fmt: str, size: Optional[tuple[int, int]] = None) -> np.ndarray:
    """A view of the pixels to sample: [H, W] grey (Y plane for YUV420) or [H, W, C] colour.

    Raises FrameError for a wrong dtype or shape, naming what was expected.
    """
    if not isinstance(pixels, np.ndarray) or pixels.dtype != np.uint8:
        got = f"dtype {pixels.dtype}" if isinstance(pixels, np.ndarray) else type(pixels).__name__
        raise FrameError(f"a {fmt} frame must be a uint8 numpy array. Got: {got}")
    shape = pixels.shape
    if fmt == "YUV420":
        if size is None:
            raise FrameError("a YUV420 frame needs its (width, height); the buffer rows are padded")
        w, h = size
        if w < 1 or h < 1:
            raise FrameError(f"a YUV420 frame needs a positive (width, height). Got: {size}")
        if len(shape) != 2 or shape[0] != h * 3 // 2 or shape[1] < w:
            raise FrameError(f"a {w}x{h} YUV420 buffer must be [{h * 3 // 2}, stride >= {w}]. Got: shape {shape}")
        return pixels[:h, :w]
    if len(shape) >= 2 and 0 in shape[:2]:
        raise FrameError(f"a {fmt} frame must be at least 1x1 pixels. Got: shape {shape}")
    if fmt == "GRAY":
        if len(shape) == 3 and shape[2] == 1:
            return pixels[:, :, 0]
        if len(shape) != 2:
            raise FrameError(f"a GRAY frame must be [H, W]. Got: shape {shape}")
        return pixels
    channels = _CHANNELS.get(fmt)
    if channels is None:
        raise FrameError(f"unknown pixel format {fmt!r}; use one of {', '.join(PIXEL_FORMATS)}")
    if len(shape) != 3 or shape[2] != channels:
        raise FrameError(f"a {fmt} frame must be [H, W, {channels}]. Got: shape {shape}")
    return pixels[:, :, :3]


def _block_sums(plane: np.ndarray, out_h: int, out_w: int) -> tuple[np.ndarray, int]:
    """Centre-crop to a whole multiple of (out_h, out_w) and sum each fxf block (integers)."""
    h, w = plane.shape[:2]
    f = min(h // out_h, w // out_w)
    if f == 0:  # smaller than the model input: nearest-neighbour upscale of the centred square
        side = min(h, w)
        y0, x0 = (h - side) // 2, (w - side) // 2
        rows = y0 + (np.arange(out_h) * side) // out_h
        cols = x0 + (np.arange(out_w) * side) // out_w
        return plane[rows[:, None], cols[None, :]].astype(np.uint16), 1
    ch, cw = out_h * f, out_w * f
    y0, x0 = (h - ch) // 2, (w - cw) // 2
    crop = plane[y0 : y0 + ch, x0 : x0 + cw]
    if f == 1:
        return crop.astype(np.uint16), 1
    acc_t = np.uint16 if f * f * 255 <= 0xFFFF else np.uint32
    if f <= 4:  # a few strided adds beat a reduction over tiny axes
        rows = np.add(crop[0::f], crop[1::f], dtype=acc_t)
        for i in range(2, f):
            rows += crop[i::f]
        out = np.add(rows[:, 0::f], rows[:, 1::f])
        for j in range(2, f):
            out += rows[:, j::f]
        return out, f * f
    tail = crop.shape[2:]
    rows = crop.reshape((out_h, f, cw, *tail)).sum(axis=1, dtype=acc_t)
    return rows.reshape((out_h, out_w, f, *tail)).sum(axis=2, dtype=acc_t), f * f


class Preprocessor:
    """The contract's preprocessing, set up once per model; call ``into`` per frame."""

    def __init__(self, contract: Preprocess = DEFAULT_CONTRACT, spec: Optional[TensorSpec] = None, invert: str = "auto"):
        if invert not in INVERT_MODES:
            raise ValueError(f"invert must be one of {', '.join(INVERT_MODES)}. Got: {invert!r}")
        unsupported = [
            f"{k}={v!r}"
            for k, v, ok in (
                ("color", contract.color, "grayscale"),
                ("crop", contract.crop, "center"),
                ("resize", contract.resize, "area"),
                ("contrast", contract.contrast, "border"),
                ("normalize", "mean/std" if contract.normalize.range is None else "range", "range"),
            )
            if v != ok
        ] + ([f"polarity={contract.polarity!r}"] if contract.polarity == "any" else [])
        if unsupported:
            raise ManifestError(
                f"this device build preprocesses grayscale / center / area / border contrast / a normalize range only; "
                f"the manifest asks for {', '.join(unsupported)}. Update the device package to the host's version"
            )
        self.contract = contract
        self.spec = spec
        self.invert = invert
        self.out_h, self.out_w = int(contract.size[0]), int(contract.size[1])
        self.light_on_dark = contract.polarity == "light_on_dark"
        assert contract.normalize.range is not None
        lo, hi = contract.normalize.range
        self.norm_lo, self.norm_span = float(lo), float(hi) - float(lo)
        self._buf = np.empty((self.out_h, self.out_w), dtype=np.float32)
        self.quantized = bool(spec is not None and spec.quantized)
        if spec is not None and spec.quantized:
            info = np.iinfo(np.dtype(spec.dtype))
            self._qscale = 1.0 / float(spec.scale or 1.0)
            self._zp = float(spec.zero_point or 0)
            self._qmin, self._qmax = float(info.min), float(info.max)
            # values past the background reference are clipped to the normalisation range, and
            # that range to what the integer type holds
            ends = sorted(round(self._zp + x * self._qscale) for x in (self.norm_lo, self.norm_lo + self.norm_span))
            self._qmin, self._qmax = max(self._qmin, float(ends[0])), min(self._qmax, float(ends[1]))
        self.last_inverted = False
        self._plan_key: Optional[tuple[object, ...]] = None
        self._plan: Optional[_Plan] = None
        self._out_obj: Optional[np.ndarray] = None
        self._out_view: Optional[np.ndarray] = None

    def _gray_sums(self, pixels: np.ndarray, fmt: str, size: Optional[tuple[int, int]]) -> np.ndarray:
        plane = gray_plane(pixels, fmt, size)
        sums, _ = _block_sums(plane, self.out_h, self.out_w)
        if sums.ndim == 3:  # colour: grey after the resize, on out_h x out_w pixels
            return sums @ np.asarray(_LUMA[fmt], dtype=np.float32)
        return sums

    def _affine(self, sums: np.ndarray) -> tuple[float, float]:
        """(k, c) with value = sums * k + c, to be clipped to the normalisation range; sets last_inverted.

        The background (the four corner cells) is the reference: it maps to the contract's
        background end (0 for light_on_dark) and the garment's far end to the other. Using the
        darkest or lightest cell as the reference instead lets vignetting and noise lift the
        whole background off zero: on synthetic frames that cost 6 points of accuracy against
        0.6 with the border as reference.
        """
        lo, hi = float(sums.min()), float(sums.max())
        border = (float(sums[0, 0]) + float(sums[0, -1]) + float(sums[-1, 0]) + float(sums[-1, -1])) / 4.0
        if self.invert == "auto":
            # a light border means a photo of a dark garment on a light background
            inverted = (border > (lo + hi) / 2.0) == self.light_on_dark
        else:
            inverted = self.invert == "on"
        self.last_inverted = inverted
        frame_bg_light = self.light_on_dark == inverted  # the contract's background is light iff dark_on_light
        extreme = lo if frame_bg_light else hi
        # garment-ness d = (sums - border) * a; a frame flat to within float rounding (colour sums
        # differ by an ulp from cell to cell) has no garment: stretching that noise gave 0 or 1 at random
        a = 1.0 / (extreme - border) if abs(extreme - border) > 1e-4 * max(1.0, abs(border)) else 0.0
        span = self.norm_span
        if self.light_on_dark:  # background → norm_lo, garment → norm_lo + span
            return span * a, self.norm_lo - span * a * border
        return -span * a, self.norm_lo + span + span * a * border

    def image(self, pixels: np.ndarray, fmt: str = "GRAY", size: Optional[tuple[int, int]] = None) -> np.ndarray:
        """Float32 [out_h, out_w] image in the normalisation range, as the model is meant to see it."""
        sums = self._gray_sums(pixels, fmt, size)
        k, c = self._affine(sums)
        out = (sums * np.float32(k) + np.float32(c)).astype(np.float32)
        return np.clip(out, self.norm_lo, self.norm_lo + self.norm_span, out=out)

    def tensor(self, pixels: np.ndarray, fmt: str = "GRAY", size: Optional[tuple[int, int]] = None) -> np.ndarray:
        """The model's input tensor (quantised for int8/uint8 models)."""
        if self.spec is None:
            raise ValueError("Preprocessor was made without a TensorSpec; use image() or pass spec")
        return to_input(self.image(pixels, fmt, size), self.spec)

    def into(self, pixels: np.ndarray, fmt: str, size: Optional[tuple[int, int]], out: np.ndarray) -> None:
        """Write the model input for one frame into ``out`` (e.g. the interpreter's input buffer).

        Same arithmetic as ``tensor`` with scale folded into one multiply-add, in float32.
        """
        try:
            key = (fmt, pixels.dtype, pixels.shape, size)
        except AttributeError:  # not an array: let the general path say what is wrong
            key = None
        if key is not None and key == self._plan_key:
            plan = self._plan  # None: this geometry takes the general path
        else:
            plan = self._make_plan(pixels, fmt, size)
            self._plan_key, self._plan = key, plan
        sums = plan.sums(pixels) if plan is not None else self._gray_sums(pixels, fmt, size)
        k, c = self._affine(sums)
        buf = self._buf
        if out is not self._out_obj:
            view = out.reshape(buf.shape)
            self._out_obj, self._out_view = out, (view if np.shares_memory(view, out) else None)
        dest = self._out_view
        if self.quantized:  # q = rint(x / scale) + zp = rint(x / scale + zp), zp being an integer
            np.multiply(sums, np.float32(k * self._qscale), out=buf)
            buf += np.float32(c * self._qscale + self._zp)
            np.clip(buf, self._qmin, self._qmax, out=buf)
            if dest is not None:  # round straight into the integer tensor: one call less
                np.rint(buf, out=dest, casting="unsafe")
                return
            np.rint(buf, out=buf)
        else:
            np.multiply(sums, np.float32(k), out=buf)
            buf += np.float32(c)
            np.clip(buf, self.norm_lo, self.norm_lo + self.norm_span, out=buf)
        if dest is not None:
            np.copyto(dest, buf, casting="unsafe")
        else:  # a non-contiguous ``out``: reshape made a copy, so write through the original
            out[...] = buf.reshape(out.shape)

    def _make_plan(self, pixels: np.ndarray, fmt: str, size: Optional[tuple[int, int]]) -> Optional[_Plan]:
        """A reusable plan for this frame geometry, or None where the general path is as cheap."""
        plane = gray_plane(pixels, fmt, size)  # validates dtype and shape, raising FrameError
        if plane.ndim != 2 or pixels.ndim != 2:
            return None
        h, w = plane.shape
        f = min(h // self.out_h, w // self.out_w)
        if not 2 <= f <= 4:
            return None
        y0, x0 = (h - self.out_h * f) // 2, (w - self.out_w * f) // 2  # plane = pixels[:h, :w]: same indices
        if pixels.flags.c_contiguous:
            return _RunningSumPlan(y0, x0, f, self.out_h, self.out_w, pixels.shape[1])
        return _StridedPlan(y0, x0, f, self.out_h, self.out_w)


class _Plan:
    """Integer f x f block sums (f = 2..4) of the centred crop of a 2-D grey plane, into reused buffers."""

    def sums(self, pixels: np.ndarray) -> np.ndarray:
        """[out_h, out_w] block sums, the same values as ``_block_sums``."""
        raise NotImplementedError


class _StridedPlan(_Plan):
    """Strided adds over the crop: any row stride."""

    def __init__(self, y0: int, x0: int, f: int, out_h: int, out_w: int):
        self.f = f
        self.rows = slice(y0, y0 + out_h * f)
        self.cols = slice(x0, x0 + out_w * f)
        self.row_sums = np.empty((out_h, out_w * f), dtype=np.uint16)  # f*f*255 <= 4080 fits
        self.out = np.empty((out_h, out_w), dtype=np.uint16)
        self.col_views = [self.row_sums[:, j::f] for j in range(f)]

    def sums(self, pixels: np.ndarray) -> np.ndarray:
        """[out_h, out_w] block sums, the same values as ``_block_sums``."""
        f, rs, cv, out = self.f, self.row_sums, self.col_views, self.out
        crop = pixels[self.rows, self.cols]
        np.add(crop[0::f], crop[1::f], out=rs, dtype=np.uint16)
        for i in range(2, f):
            np.add(rs, crop[i::f], out=rs)
        np.add(cv[0], cv[1], out=out)
        for j in range(2, f):
            np.add(out, cv[j], out=out)
        return out


class _RunningSumPlan(_Plan):
    """Block sums of a C-contiguous plane as running sums over its flat memory.

    A 2-D strided add iterates row by row (a numpy inner loop per row); over the flat buffer
    every add is one contiguous 1-D loop. ``across[n]`` sums f neighbours along the flat
    buffer, ``down[n]`` sums f of those one row stride apart, and the block sum of output
    (i, j) sits at ``down[f*i*stride + f*j]``: a strided view, made once. Running sums are also
    computed at offsets that are not block corners (about stride/width times more adds than
    needed), which is cheaper than the per-row loops they replace.
    """

    def __init__(self, y0: int, x0: int, f: int, out_h: int, out_w: int, stride: int):
        self.f = f
        self.start = y0 * stride + x0
        n_down = f * (out_h - 1) * stride + f * (out_w - 1) + 1
        n_across = n_down + (f - 1) * stride
        self.stop = self.start + n_across + f - 1  # one past the crop's last pixel
        self.wide = np.empty(n_across + f - 1, dtype=np.uint16)
        self.across = np.empty(n_across, dtype=np.uint16)
        self.down = np.empty(n_down, dtype=np.uint16)
        self.wide_shift = [self.wide[q : q + n_across] for q in range(f)]
        self.across_shift = [self.across[r * stride : r * stride + n_down] for r in range(f)]
        item = self.down.itemsize
        self.out = np.lib.stride_tricks.as_strided(
            self.down, shape=(out_h, out_w), strides=(f * stride * item, f * item), writeable=False
        )

    def sums(self, pixels: np.ndarray) -> np.ndarray:
        """[out_h, out_w] block sums, the same values as ``_block_sums``."""
        ws, acs, across, down = self.wide_shift, self.across_shift, self.across, self.down
        np.copyto(self.wide, pixels.reshape(-1)[self.start : self.stop])  # one widening copy
        np.add(ws[0], ws[1], out=across)
        for q in range(2, self.f):
            np.add(across, ws[q], out=across)
        np.add(acs[0], acs[1], out=down)
        for r in range(2, self.f):
            np.add(down, acs[r], out=down)
        return self.out

def preprocess(
    pixels: np.ndarray,
    fmt: str = "GRAY",
    contract: Preprocess = DEFAULT_CONTRACT,
    spec: Optional[TensorSpec] = None,
    invert: str = "auto",
    size: Optional[tuple[int, int]] = None,
) -> np.ndarray:
    """One frame → the model input tensor (with ``spec``) or the float image (without)."""
    p = Preprocessor(contract, spec, invert)
    return p.tensor(pixels, fmt, size) if spec is not None else p.image(pixels, fmt, size)
