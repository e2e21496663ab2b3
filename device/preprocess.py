"""Frame → model input, following the manifest's preprocessing contract. Vectorised numpy only.

One implementation for the host (evaluation "as the device sees it") and the device (every
frame): ``Preprocessor.image`` / ``.tensor`` / ``.into`` and ``preprocess()``; ``model_input``
turns model-sized images (golden sets, test splits) into input tensors with the same
normalisation and quantisation, without framing.

Per frame, for every contract field (``device.manifest.Preprocess``):

1. **Planes.** The frame's samples as views, nothing copied: a GRAY plane; interleaved
   R,G,B / B,G,R (+X) bytes; or a YUV420 buffer's Y plane and its half-resolution U and V
   planes, each honouring the padded row stride. A grey model reads only Y (or the luma of
   R,G,B); an RGB model reads all three.
2. **crop.** ``center``: the largest centred window of the model's aspect; ``none``: the
   whole frame (stretched); ``object``: the object's bounding box against the background,
   its longer side filling the model's frame, centred on the background (``device.framing``),
   after the background's shading (vignetting, uneven light) is divided out of the grids.
3. **resize: area.** Integer block sums of each plane to the model's grid (uint16), by running
   sums over the frame's flat memory for 2..4-pixel blocks. Where the window is not a whole
   multiple of the model's size (e.g. 640x480 → 96x96 with ``crop: none``: 6.67 pixels per
   model pixel across) the axis is integrated instead: integer running sums read at the
   output cells' fractional edges, which is the exact box filter (``device.resample``). The
   alternative, block sums at the whole factor below and then small area-weight matrices,
   smears a hard edge by up to a block: measured here, up to 65 of 255 grey levels in one
   output pixel and 11 on average over a 240x320 frame → 28x28, against float32 rounding for
   the integrals. For ``object`` the window moves every frame: the planes are block-summed
   to a grid of at most 4 cells per model pixel and the box is integrated from that grid,
   with edges made per frame.
4. **color / channel_order.** Colour conversion happens after the resize, at the model's
   size: it is affine (BT.601 luma for grey from R,G,B; Y'CbCr → R,G,B with the frame's own
   matrix and range for YUV, ``device.colour``), so it commutes with area averaging, and the
   model's channel order is a row permutation of the same matrix.
5. **polarity** (``invert`` auto/on/off) and **contrast** (``border``: the background
   reference maps to the contract's background end and the object's far end to the other;
   ``none``: pixel values as they are) are one multiply-add per channel, decided per frame
   from the luma's min, max and the background (the output's corners, or the border-ring
   median that ``object`` framing found).
6. **normalize** (range or mean/std) and the variant's **quantisation** (``device.quant``)
   are folded with 4. and 5. into one matrix (one scalar for grey) and offset: per frame,
   the model's input is ``clip(rint(S @ M + b))`` on the block sums S, written straight
   into the interpreter's input tensor.

Everything per geometry (views, windows, block factors, edges, buffers and the strided views
of the running sums) is planned once and reused while frames keep the same format, shape and
size. No float64 touches a frame; floats touch only the reduced planes. Three numpy traps
are avoided on purpose (each measured on this kit's frames): OpenBLAS runs a product past
2^18 multiply-adds on several threads, which stall on busy cores (206 ms instead of 4 ms for
one frame), so per-frame products are chunked below that (``colour.mix``); an operation
broadcast over a 3-long last axis (a bias add, a per-channel clip) is about 40x slower than
the same on planar data, so colour is kept planar with a row of ones and one product writes
R,G,B interleaved with the offset applied; ``reshape(...).sum(axis)`` block sums are 50x
slower than strided adds for 2x2 blocks.

Per-frame cost, process CPU time on a shared 2-core Xeon (AVX-512 VNNI), int8, against the
same run's ``invoke()`` (README, ``bench/device_pipeline.py`` and ``bench/rgb_pipeline.py``):
28x28 grey from 112x84 lores, 17 µs (0.32x invoke; 18 µs before schema 2, same run); 96x96
RGB from 256x192 lores, crop center 110 µs (0.31x of a 622k-parameter MobileNet-style
invoke), crop object 1.3 ms (3.7x: the box is found and integrated every frame).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from device import colour, framing
from device.errors import FrameError, ManifestError
from device.manifest import (
    CHANNEL_ORDERS,
    COLORS,
    CONTRASTS,
    CROPS,
    POLARITIES,
    RESIZES,
    Preprocess,
    TensorSpec,
)
from device.quant import input_affine, to_input
from device.resample import Reducer, RunningSums, block_sums, window_integral

PIXEL_FORMATS = ("GRAY", "RGB", "BGR", "RGBX", "BGRX", "YUV420")
INVERT_MODES = ("auto", "on", "off")
DEFAULT_CONTRACT = Preprocess()
OBJECT_GRID = 4  # crop: object resamples from a grid of at most this many cells per model pixel
_SUPPORTED = (("color", COLORS), ("channel_order", CHANNEL_ORDERS), ("crop", CROPS), ("resize", RESIZES),
              ("contrast", CONTRASTS), ("polarity", POLARITIES))


def gray_plane(pixels: np.ndarray, fmt: str, size: Optional[tuple[int, int]] = None) -> np.ndarray:
    """A view of the pixels to sample: [H, W] grey (Y plane for YUV420) or [H, W, 3] colour (memory order).

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
        if len(shape) != 2 or shape[0] != h * 3 // 2 or shape[1] < w or h % 2 or w % 2 or shape[1] % 2:
            raise FrameError(f"a {w}x{h} YUV420 buffer must be [{h * 3 // 2}, even stride >= {w}], width and height even. Got: shape {shape}")
        return pixels[:h, :w]
    if len(shape) >= 2 and 0 in shape[:2]:
        raise FrameError(f"a {fmt} frame must be at least 1x1 pixels. Got: shape {shape}")
    if fmt == "GRAY":
        if len(shape) == 3 and shape[2] == 1:
            return pixels[:, :, 0]
        if len(shape) != 2:
            raise FrameError(f"a GRAY frame must be [H, W]. Got: shape {shape}")
        return pixels
    channels = colour.PIXEL_BYTES.get(fmt)
    if channels is None:
        raise FrameError(f"unknown pixel format {fmt!r}; use one of {', '.join(PIXEL_FORMATS)}")
    if len(shape) != 3 or shape[2] != channels:
        raise FrameError(f"a {fmt} frame must be [H, W, {channels}]. Got: shape {shape}")
    return pixels[:, :, :3]


@dataclass
class _Plane:
    """One plane of a frame geometry: where it is, its size and what one of its pixels covers in the frame."""

    hw: tuple[int, int]
    cell: int  # frame pixels per plane pixel (2 for YUV420 chroma)
    layout: Optional[tuple[int, int, int, int]]  # (start, row stride, pixel step, channels) in the flat buffer
    index: int  # 0: Y / grey / colour; 1: U; 2: V

    def view(self, pixels: np.ndarray, fmt: str, size: Optional[tuple[int, int]]) -> np.ndarray:
        """This plane of ``pixels`` (a view)."""
        if self.index == 0:
            return gray_plane(pixels, fmt, size)
        h, w = self.hw
        stride = pixels.shape[1] // 2
        flat = pixels.reshape(-1)
        start = pixels.shape[1] * h * 2 + (self.index - 1) * h * stride
        return flat[start : start + h * stride].reshape(h, stride)[:, :w]


@dataclass
class _Plan:
    """Everything about one frame geometry that does not change from frame to frame."""

    frame_hw: tuple[int, int]
    planes: list[_Plane]
    colour_space: Optional[str]
    collapse: Optional[np.ndarray]  # luma weights (memory order) folding interleaved colour into grey
    tm: np.ndarray  # [C, Cs]: model pixel (0..255) = tm @ source means + tv
    tv: np.ndarray  # [C]
    lw: np.ndarray  # [Cs]: luma (0..255) = lw @ source means + l0
    l0: float
    reducers: list[Reducer] = field(default_factory=list)  # per plane: to the model's grid, or (object) to a coarse grid
    counts: list[float] = field(default_factory=list)  # pixels summed per value, per source channel
    fast: Optional[RunningSums] = None  # grey model, fixed crop, running sums: the hot path
    grey_t: tuple[float, float] = (1.0, 0.0)  # grey model: pixel = t * sums + tv
    stack: Optional[np.ndarray] = None  # colour models: [Cs + 1, H*W] float32, planar, the last row ones
    result: Optional[np.ndarray] = None  # [H, W] (grey) or [H*W, C] float32
    bounds: Optional[tuple[object, np.ndarray, np.ndarray]] = None  # (bounds, lo, hi): per-channel clip bounds spelled out [H*W, C]

    @property
    def source_channels(self) -> int:
        """Cs: 1 (grey, luma or Y) or 3 (Y,U,V or the colour bytes in memory order)."""
        return int(self.tm.shape[1])


class Preprocessor:
    """The contract's preprocessing, set up once per model; call ``into`` per frame.

    ``invert``: ``auto`` decides per frame from the background (the contract's ``polarity``),
    ``on`` / ``off`` force it. ``last_inverted`` and ``last_box`` (``crop: object``: the box
    found, (x0, y0, x1, y1) in frame pixels, or None for a frame with no object, which is
    framed like ``center``) describe the last frame. Raises ManifestError for a contract or
    model input this build cannot honour, naming the field, the value and what it supports.
    """

    def __init__(self, contract: Preprocess = DEFAULT_CONTRACT, spec: Optional[TensorSpec] = None, invert: str = "auto"):
        if invert not in INVERT_MODES:
            raise ValueError(f"invert must be one of {', '.join(INVERT_MODES)}. Got: {invert!r}")
        for name, allowed in _SUPPORTED:
            value = getattr(contract, name)
            if value not in allowed:
                raise ManifestError(
                    f"preprocess.{name} is {value!r}; this device build supports {', '.join(allowed)}. "
                    "Update the device package to the host's version"
                )
        if spec is not None:
            contract.check_input(spec, "the model input")
        self.contract = contract
        self.spec = spec
        self.invert = invert
        self.out_h, self.out_w = int(contract.size[0]), int(contract.size[1])
        self.channels = contract.channels
        self.quantized = bool(spec is not None and spec.quantized)
        self._image_shape = (self.out_h, self.out_w) if self.channels == 1 else (self.out_h, self.out_w, self.channels)
        norm = contract.normalize.affine(self.channels)
        self._norm_k = [float(k) for k, _ in norm]
        self._norm_c = [float(c) for _, c in norm]
        self._real_bounds = [(min(b), max(b)) for b in contract.normalize.bounds(self.channels)]
        qm, qo, qb = input_affine(spec)
        self._quant = (qm, qo)
        if qb is None:
            self._q_bounds = self._real_bounds
        else:  # the normalisation range, quantised, within what the integer type holds
            ends = [sorted(round(qo + x * qm) for x in b) for b in self._real_bounds]
            self._q_bounds = [(max(qb[0], float(e[0])), min(qb[1], float(e[1]))) for e in ends]
        self._into_quant = self._quant if self.quantized else (1.0, 0.0)
        self._into_lo, self._into_hi = (self._q_bounds if self.quantized else self._real_bounds)[0]
        self._contract_bg_light = contract.polarity == "dark_on_light"
        self._needs_stats = contract.contrast == "border" or (invert == "auto" and contract.polarity != "any")
        self.last_inverted = False
        self.last_box: Optional[tuple[float, float, float, float]] = None
        self._plan_key: Optional[tuple[object, ...]] = None
        self._plan: Optional[_Plan] = None
        self._out_obj: Optional[np.ndarray] = None
        self._out_view: Optional[np.ndarray] = None

    # ------------------------------------------------------------------ public API

    def image(self, pixels: np.ndarray, fmt: str = "GRAY", size: Optional[tuple[int, int]] = None,
              colour_space: Optional[str] = None) -> np.ndarray:
        """Float32 [H, W] (grey) or [H, W, 3] (model channel order) in the normalisation's units, as the model sees it."""
        plan = self._plan_for(pixels, fmt, size, colour_space)
        src, m, b = self._frame(plan, pixels, fmt, size, (1.0, 0.0))
        out = np.empty(self._image_shape, np.float32)
        self._apply(plan, src, m, b, self._real_bounds, out, False)
        return out

    def tensor(self, pixels: np.ndarray, fmt: str = "GRAY", size: Optional[tuple[int, int]] = None,
               colour_space: Optional[str] = None) -> np.ndarray:
        """The model's input tensor (quantised for int8/uint8 models), a new array of the spec's shape."""
        if self.spec is None:
            raise ValueError("Preprocessor was made without a TensorSpec; use image() or pass spec")
        out = np.empty(self.spec.shape, dtype=np.dtype(self.spec.dtype))
        self.into(pixels, fmt, size, out, colour_space)
        return out

    def into(self, pixels: np.ndarray, fmt: str, size: Optional[tuple[int, int]], out: np.ndarray,
             colour_space: Optional[str] = None) -> None:
        """Write the model input for one frame into ``out`` (e.g. the interpreter's input buffer).

        Without a spec, ``out`` receives the float image (``image``'s values).
        """
        plan = self._plan_for(pixels, fmt, size, colour_space)
        fast, dest = plan.fast, self._out_view
        if fast is not None and out is self._out_obj and dest is not None:  # the grey hot path, inlined
            s = fast(pixels.reshape(-1))
            m1, b1 = self._grey_affine(plan, s, self._into_quant, None)
            buf = plan.result
            assert buf is not None
            np.multiply(s, np.float32(m1), out=buf)
            buf += np.float32(b1)
            np.maximum(buf, self._into_lo, out=buf)
            np.minimum(buf, self._into_hi, out=buf)
            if self.quantized:
                np.rint(buf, out=dest, casting="unsafe")
            else:
                np.copyto(dest, buf, casting="unsafe")
            return
        src, m, b = self._frame(plan, pixels, fmt, size, self._into_quant)
        if out is not self._out_obj:
            if out.size != int(np.prod(self._image_shape)):
                raise ValueError(f"the output must hold {'x'.join(map(str, self._image_shape))} values. Got: shape {out.shape}")
            view = out.reshape(self._image_shape)
            self._out_obj, self._out_view = out, (view if np.shares_memory(view, out) else None)
        bounds = self._q_bounds if self.quantized else self._real_bounds
        if self._out_view is not None:
            self._apply(plan, src, m, b, bounds, self._out_view, self.quantized)
        else:  # a non-contiguous ``out``: reshape made a copy, so write through the original
            tmp = np.empty(self._image_shape, out.dtype)
            self._apply(plan, src, m, b, bounds, tmp, self.quantized)
            out[...] = tmp.reshape(out.shape)

    # ------------------------------------------------------------------ planning

    def _plan_for(self, pixels: np.ndarray, fmt: str, size: Optional[tuple[int, int]], colour_space: Optional[str]) -> _Plan:
        try:
            key = (fmt, pixels.dtype, pixels.shape, pixels.strides, size, colour_space)
        except AttributeError:  # not an array: let the general checks say what is wrong
            key = None
        if key is None or key != self._plan_key or self._plan is None:
            self._plan = self._make_plan(pixels, fmt, size, colour_space)
            self._plan_key = key
        return self._plan

    def _make_plan(self, pixels: np.ndarray, fmt: str, size: Optional[tuple[int, int]], colour_space: Optional[str]) -> _Plan:
        first = gray_plane(pixels, fmt, size)  # validates dtype and shape, raising FrameError
        h, w = first.shape[:2]
        rgb_model = self.channels == 3
        order = [0, 1, 2] if self.contract.channel_order == "rgb" else [2, 1, 0]  # model channel k ← colour order[k]
        contiguous = pixels.flags.c_contiguous
        collapse = None
        if fmt == "YUV420":
            colour.ycbcr(colour_space)  # an unknown colour space is a FrameError now, not later
            stride = pixels.shape[1]
            planes = [_Plane((h, w), 1, (0, stride, 1, 1) if contiguous else None, 0)]
            gain, off = colour.luma_from_y(colour_space)
            if rgb_model:
                for i in (1, 2):
                    start = h * stride + (i - 1) * (h // 2) * (stride // 2)
                    planes.append(_Plane((h // 2, w // 2), 2, (start, stride // 2, 1, 1) if contiguous else None, i))
                m, o = colour.yuv_to_rgb(colour_space)
                tm, tv = m[order], o[order]
                lw, l0 = np.array([gain, 0.0, 0.0]), off
            else:
                tm, tv, lw, l0 = np.array([[gain]]), np.array([off]), np.array([gain]), off
        elif fmt == "GRAY":
            planes = [_Plane((h, w), 1, (0, pixels.shape[1], 1, 1) if contiguous else None, 0)]
            tm, tv, lw, l0 = np.ones((self.channels, 1)), np.zeros(self.channels), np.array([1.0]), 0.0
        else:
            nb, pos = colour.PIXEL_BYTES[fmt], colour.RGB_POSITIONS[fmt]
            planes = [_Plane((h, w), 1, (0, w * nb, nb, 3) if contiguous else None, 0)]
            luma_mem = np.zeros(3)
            for k, q in enumerate(pos):
                luma_mem[q] = colour.LUMA_601[k]
            if rgb_model:
                tm = np.zeros((3, 3))
                for k in range(3):
                    tm[k, pos[order[k]]] = 1.0
                tv, lw, l0 = np.zeros(3), luma_mem, 0.0
            else:  # grey from colour: the luma of the block sums (grey costs H*W pixels, not the frame's)
                collapse = luma_mem.astype(np.float32)
                tm, tv, lw, l0 = np.array([[1.0]]), np.zeros(1), np.array([1.0]), 0.0
        plan = _Plan((h, w), planes, colour_space, collapse, tm, tv, lw, float(l0))
        if self.contract.crop == "object":
            # coarse grids of the whole frame, all planes with Y's factor g (chroma cells are then 2g)
            g = max(1, math.ceil(min(h, w) / (OBJECT_GRID * min(self.out_h, self.out_w))))
            for p in planes:
                ph, pw = p.hw
                plan.reducers.append(Reducer((0.0, ph, 0.0, pw), (ph, pw), (max(1, ph // g), max(1, pw // g)), p.layout))
        else:
            y0, y1, x0, x1 = self._fixed_window(h, w)
            for p in planes:
                cf = float(p.cell)
                plan.reducers.append(Reducer((y0 / cf, y1 / cf, x0 / cf, x1 / cf), p.hw, (self.out_h, self.out_w), p.layout))
        plan.counts = [float(r.count) for r in plan.reducers] * (3 if len(planes) == 1 and tm.shape[1] == 3 else 1)
        plan.grey_t = (float(tm[0, 0]) / plan.counts[0], float(tv[0]))
        red = plan.reducers[0]
        if self.channels == 1 and self.contract.crop != "object" and red.running is not None and red.exact and collapse is None:
            plan.fast = red.running
        n_px = self.out_h * self.out_w
        if self.channels == 1:
            plan.result = np.empty((self.out_h, self.out_w), np.float32)
        else:
            # planar with a row of ones, so that one matrix product [Cs+1, C] applies the matrix and the
            # offset and writes R,G,B interleaved: a broadcast over a 3-long last axis is 40x slower here
            plan.stack = np.ones((plan.source_channels + 1, n_px), np.float32)
            plan.result = np.empty((n_px, self.channels), np.float32)
        return plan

    def _fixed_window(self, h: int, w: int) -> tuple[float, float, float, float]:
        """(y0, y1, x0, x1) in frame pixels: the centred model-aspect window (center) or the whole frame (none)."""
        if self.contract.crop == "none":
            return 0.0, float(h), 0.0, float(w)
        return _centre_window(h, w, self.out_h, self.out_w)

    # ------------------------------------------------------------------ per frame

    def _sums(self, plan: _Plan, pixels: np.ndarray, fmt: str, size: Optional[tuple[int, int]]) -> list[np.ndarray]:
        """Each plane through its reducer (the running sums read the flat buffer: no view needed)."""
        flat = pixels.reshape(-1) if pixels.flags.c_contiguous else None
        out = []
        for r, p in zip(plan.reducers, plan.planes):
            view = None if (r.running is not None and flat is not None) else p.view(pixels, fmt, size)
            out.append(r.reduce(view, flat))
        return out

    def _frame(self, plan: _Plan, pixels: np.ndarray, fmt: str, size: Optional[tuple[int, int]],
               quant: tuple[float, float]) -> tuple[np.ndarray, object, object]:
        """(source values S at the model's size, M, b): the output is clip(S @ M + b).

        For one source channel and a grey model M and b are floats; otherwise M is [Cs, C]
        and b [C] (float32), with the 1/count of the block sums, the colour conversion, the
        contrast and polarity, the normalisation and the quantisation folded in.
        """
        if plan.fast is not None:  # grey, fixed crop, one contiguous buffer: the per-frame hot path
            s = plan.fast(pixels.reshape(-1))
            m1, b1 = self._grey_affine(plan, s, quant, None)
            return s, m1, b1
        sums = self._sums(plan, pixels, fmt, size)
        bg: Optional[tuple[list[float], float]] = None
        blank = False
        if self.contract.crop == "object":
            sums, bg = self._object(plan, sums)
            blank = self.last_box is None  # no object: the centred window, and no stretch of the noise
        if self.channels == 1:
            s = self._source(plan, sums)
            bg_s = None if bg is None else (bg[0][0] - float(plan.tv[0])) * plan.counts[0] / float(plan.tm[0, 0])
            m1, b1 = self._grey_affine(plan, s, quant, bg_s, blank)
            return s, m1, b1
        # a colour model: per-channel statistics on the luma, one [Cs + 1, C] matrix (the last row the offset)
        stack = self._source(plan, sums)
        n, w = self.channels, self.out_w
        inv = 1.0 / np.asarray(plan.counts)
        if self._needs_stats or bg is not None:
            lw = plan.lw * inv
            if lw[1:].any():  # luma mixes the channels (R,G,B sources)
                luma = colour.mix(stack[:-1].T, lw[:, None])
                scale = 1.0
            else:  # the luma is one channel, scaled (Y or grey)
                luma, scale = stack[0], float(lw[0])
            lo_l, hi_l = scale * float(luma.min()) + plan.l0, scale * float(luma.max()) + plan.l0
            if bg is None:
                corners = stack[:-1, [0, w - 1, stack.shape[1] - w, stack.shape[1] - 1]].astype(np.float64)
                mean = corners.mean(axis=1) * inv
                bg = [float(v) for v in plan.tm @ mean + plan.tv], float(plan.lw @ mean) + plan.l0
            a, o = self._contrast(bg[0], bg[1], lo_l, hi_l, blank)
        else:
            a, o = self._contrast(None, 0.0, 0.0, 0.0)
        qm, qo = quant
        ks = np.array([qm * self._norm_k[c] * a for c in range(n)])
        bs = np.array([qm * (self._norm_k[c] * o[c] + self._norm_c[c]) + qo for c in range(n)])
        m = np.empty((plan.source_channels + 1, n), np.float32)
        m[:-1] = (ks[:, None] * plan.tm * inv[None, :]).T
        m[-1] = ks * plan.tv + bs
        return stack, m, None

    def _grey_affine(self, plan: _Plan, s: np.ndarray, quant: tuple[float, float], bg_s: Optional[float],
                     flat: bool = False) -> tuple[float, float]:
        """(m, b) for a grey model on one source channel, in the sums' own units (scalars only).

        The same arithmetic as the general path (``_contrast``), written out: for a grey
        model the luma is the pixel value itself, so the stretch needs only the sums' min,
        max and background (the four corners, or ``bg_s`` from object framing). ``flat``: no
        object was found, so nothing is stretched (noise stays background).
        """
        t, tv = plan.grey_t  # pixel = t * s + tv
        kq = quant[0] * self._norm_k[0]
        cq = quant[0] * self._norm_c[0] + quant[1]
        light = False
        if self._needs_stats:
            lo, hi = float(s.min()), float(s.max())
            c = bg_s if bg_s is not None else (float(s[0, 0]) + float(s[0, -1]) + float(s[-1, 0]) + float(s[-1, -1])) * 0.25
            light = c > (lo + hi) * 0.5
        if self.invert == "auto":
            inverted = self._needs_stats and self.contract.polarity != "any" and light != self._contract_bg_light
        else:
            inverted = self.invert == "on"
        self.last_inverted = inverted
        if self.contract.contrast == "none":
            return (-kq * t, kq * (255.0 - tv) + cq) if inverted else (kq * t, kq * tv + cq)
        e = lo if light else hi
        g = 255.0 / (e - c) if e != c and not flat else 0.0  # a flat frame is all background
        if light != inverted:  # the output's background is light: it maps to 255
            return -kq * g, kq * 255.0 + cq + kq * g * c
        return kq * g, cq - kq * g * c

    def _source(self, plan: _Plan, sums: list[np.ndarray]) -> np.ndarray:
        """The source channels at the model's size: [H, W] for a grey model, else the planar stack [Cs + 1, H*W]."""
        if plan.collapse is not None:  # grey from interleaved colour: luma of the sums
            return colour.mix(sums[0], plan.collapse[:, None])[..., 0] if sums[0].ndim == 3 else sums[0]
        if plan.stack is None:
            return sums[0]
        stack = plan.stack
        if len(sums) == 1 and sums[0].ndim == 3:  # interleaved colour sums: de-interleave (the main stream's path)
            np.copyto(stack[:-1], sums[0].reshape(-1, sums[0].shape[2]).T, casting="unsafe")
        else:
            for i, s in enumerate(sums):
                np.copyto(stack[i].reshape(s.shape), s, casting="unsafe")
        return stack

    def _contrast(self, bg_pix: Optional[list[float]], bg_l: float, lo_l: float, hi_l: float,
                  flat: bool = False) -> tuple[float, list[float]]:
        """(a, o per channel): pixel' = a * pixel + o, from polarity and contrast; sets last_inverted.

        ``bg_pix`` (the background in model pixel units, per channel) is None when the
        contract needs no statistics (contrast none with polarity any or a forced invert).
        """
        n = self.channels
        frame_bg_light = bg_pix is not None and bg_l > (lo_l + hi_l) / 2.0
        if self.invert == "auto":
            inverted = self.contract.polarity != "any" and bg_pix is not None and frame_bg_light != self._contract_bg_light
        else:
            inverted = self.invert == "on"
        self.last_inverted = inverted
        if self.contract.contrast == "none" or bg_pix is None:
            return (-1.0, [255.0] * n) if inverted else (1.0, [0.0] * n)
        extreme = lo_l if frame_bg_light else hi_l
        g = 1.0 / (extreme - bg_l) if extreme != bg_l and not flat else 0.0  # a flat frame is all background
        if frame_bg_light != inverted:  # the output's background is light: it maps to 255
            return -255.0 * g, [255.0 + 255.0 * g * bg_pix[c] for c in range(n)]
        return 255.0 * g, [-255.0 * g * bg_pix[c] for c in range(n)]

    def _apply(self, plan: _Plan, src: np.ndarray, m: object, b: object, bounds: list[tuple[float, float]],
               dest: np.ndarray, rint: bool) -> None:
        """dest = clip(src @ m + b), rounded for integer inputs: the one multiply-add per channel."""
        buf = plan.result
        assert buf is not None
        if isinstance(m, float):
            np.multiply(src, np.float32(m), out=buf)
            buf += np.float32(b)  # type: ignore[arg-type]
            np.maximum(buf, bounds[0][0], out=buf)
            np.minimum(buf, bounds[0][1], out=buf)
        else:  # colour: [Cs + 1, N].T @ [Cs + 1, C] → [N, C], R,G,B interleaved as the model wants them
            np.matmul(src.T, np.asarray(m, np.float32), out=buf)
            if len(set(bounds)) == 1:
                np.clip(buf, bounds[0][0], bounds[0][1], out=buf)
            else:  # per-channel bounds, spelled out once per plan: a broadcast [C] bound is 40x slower
                if plan.bounds is None or plan.bounds[0] != bounds:
                    lo = np.ascontiguousarray(np.broadcast_to(np.array([x[0] for x in bounds], np.float32), buf.shape))
                    hi = np.ascontiguousarray(np.broadcast_to(np.array([x[1] for x in bounds], np.float32), buf.shape))
                    plan.bounds = list(bounds), lo, hi
                np.maximum(buf, plan.bounds[1], out=buf)
                np.minimum(buf, plan.bounds[2], out=buf)
            dest = dest.reshape(buf.shape)
        if rint:
            np.rint(buf, out=dest, casting="unsafe")
        else:
            np.copyto(dest, buf, casting="unsafe")

    # ------------------------------------------------------------------ crop: object

    def _flat_field(self, plan: _Plan, grids: list[np.ndarray], det_src: np.ndarray) -> tuple[list[np.ndarray], np.ndarray, bool]:
        """The grids and the detection grid with the background's shading divided out (``framing.shading_gain``), and whether it was.

        The gain is fitted on the detection grid's luma and applied to every sample about its
        value of no light: black for grey and R,G,B, Y's black level for Y, 128 for U and V
        (light scales chroma's distance from grey). Unchanged when the background is flat.
        """
        lw = plan.lw
        flat = det_src.reshape(det_src.shape[0], -1)
        luma = (flat[0] * np.float32(lw[0]) if not lw[1:].any() else colour.mix(flat.T, lw[:, None])[:, 0]) + np.float32(plan.l0)
        gain = framing.shading_gain(luma.reshape(det_src.shape[1:]))
        if gain is None:
            return grids, det_src, False
        y0 = -plan.l0 / float(lw[0]) if plan.l0 else 0.0  # the Y sample of black (limited range: 16)
        neutral = [y0, 128.0, 128.0] if len(grids) == 3 else [y0] * det_src.shape[0]
        if len(set(neutral)) == 1:
            det = _shade(det_src, gain, neutral[0])
        else:
            det = (det_src - np.float32(128.0)) * gain + np.float32(128.0)
            det[0] = _shade(det_src[0], gain, neutral[0])
        counts = plan.counts
        out = []
        for i, g in enumerate(grids):
            factor = 2 if len(grids) == 3 and i == 0 else 1  # Y's cells are half the chroma cells the gain was fitted on
            lifted = _lift(gain, g.shape[:2], factor)
            nv = neutral[i] * counts[i]
            out.append(_shade(g, lifted[..., None] if g.ndim == 3 else lifted, nv))
        return out, det, True

    def _object(self, plan: _Plan, grids: list[np.ndarray]) -> tuple[list[np.ndarray], Optional[tuple[list[float], float]]]:
        """Find the box on the coarse grids and area-resample it: (per-plane sums at the model's size, background or None)."""
        counts, n = plan.counts, self.channels
        if plan.collapse is not None:
            grids = [colour.mix(grids[0], plan.collapse[:, None])[..., 0]]
        # the detection grid: every source channel at one resolution, planar [Cd, h, w], per-pixel means
        if len(grids) == 3:  # YUV: Y (cells g) summed to the chroma planes' cells (2g)
            y = grids[0]
            hh, ww = min(y.shape[0] // 2, grids[1].shape[0]), min(y.shape[1] // 2, grids[1].shape[1])
            det_src = np.empty((3, hh, ww), np.float32)
            np.multiply(block_sums(y[: 2 * hh, : 2 * ww], 2, 2), np.float32(1.0 / (4 * counts[0])), out=det_src[0])
            np.multiply(grids[1][:hh, :ww], np.float32(1.0 / counts[1]), out=det_src[1])
            np.multiply(grids[2][:hh, :ww], np.float32(1.0 / counts[2]), out=det_src[2])
            det_red, det_cell = plan.reducers[1], plan.planes[1].cell
        elif grids[0].ndim == 3:  # interleaved colour (the main stream)
            det_src = np.moveaxis(grids[0], 2, 0) * np.float32(1.0 / counts[0])
            det_red, det_cell = plan.reducers[0], plan.planes[0].cell
        else:
            det_src = (grids[0] * np.float32(1.0 / counts[0]))[None]
            det_red, det_cell = plan.reducers[0], plan.planes[0].cell
        grids, det_src, flat_fielded = self._flat_field(plan, grids, det_src)
        ring = framing.ring(det_src)  # [Cd, n]
        bg_src = framing.median(ring).astype(np.float64)  # per source channel
        bg_l = float(plan.lw @ bg_src) + plan.l0
        lw = plan.lw
        flat = det_src.reshape(det_src.shape[0], -1)
        luma = (flat[0] * np.float32(lw[0]) if not lw[1:].any() else colour.mix(flat.T, lw[:, None])[:, 0]) + np.float32(plan.l0)
        luma_ring = lw @ ring + plan.l0
        if len(grids) == 3:  # find the box in R,G,B, where a colour object differs from its background
            m, o = colour.yuv_to_rgb(plan.colour_space)
            det = (m.astype(np.float32) @ flat + o.astype(np.float32)[:, None]).reshape(det_src.shape)
            bg_det = m @ bg_src + o
        elif det_src.shape[0] == 3:
            det, bg_det = det_src, bg_src
        else:
            det, bg_det = luma.reshape(det_src.shape), np.array([bg_l])
        luma = luma.reshape(det_src.shape[1:])
        box = framing.find_box(det, luma, bg_det, bg_l, luma_ring, flat=flat_fielded)
        h, w = plan.frame_hw
        if box is None:
            window = _centre_window(h, w, self.out_h, self.out_w)
            self.last_box = None
        else:
            cy, cx = det_red.fy * det_cell, det_red.fx * det_cell
            by, bx = det_red.rows.start * det_cell, det_red.cols.start * det_cell
            fb = (by + box.r0 * cy, by + box.r1 * cy, bx + box.c0 * cx, bx + box.c1 * cx)
            self.last_box = (float(fb[2]), float(fb[0]), float(fb[3]), float(fb[1]))
            window = framing.frame_window(fb, (self.out_h, self.out_w))
        # resample the window from each grid (U and V together: one pair of integrals for both)
        if len(grids) == 3:
            groups = [(grids[0], 0, bg_src[:1]), (np.stack([grids[1], grids[2]]), 1, bg_src[1:])]
        else:
            groups = [(grids[0], 0, bg_src)]
        out: list[np.ndarray] = []
        for grid, i, bgp in groups:
            red, p, count = plan.reducers[i], plan.planes[i], counts[i]
            ya = 1 if grid.ndim == 3 and len(grids) == 3 else 0  # channels first (U, V) or last (interleaved)
            cell = float(p.cell)
            sy, sx = red.fy * cell, red.fx * cell  # frame pixels per grid cell
            oy, ox = red.rows.start * cell, red.cols.start * cell
            ylo, yhi = (window[0] - oy) / sy, (window[1] - oy) / sy
            xlo, xhi = (window[2] - ox) / sx, (window[3] - ox) / sx
            width = grid.shape[ya + 1]
            c0 = max(0, min(width - 1, math.floor(xlo)))
            c1 = max(c0 + 1, min(width, math.ceil(xhi)))
            cols = grid[:, :, c0:c1] if ya else grid[:, c0:c1]
            rows, in_y = window_integral(cols, ylo, yhi, self.out_h, ya)
            cells, in_x = window_integral(rows, xlo - c0, xhi - c0, self.out_w, ya + 1)
            area = (yhi - ylo) / self.out_h * (xhi - xlo) / self.out_w  # grid cells per output cell
            outside = np.float32(area) - np.outer(in_y, in_x).astype(np.float32)  # beyond the frame: background
            fill = (np.asarray(bgp) * count).astype(np.float32)  # the background in grid-sum units
            if cells.ndim == 2:
                cells += outside * fill[0]
            elif ya:
                cells += outside[None] * fill[:, None, None]
            else:
                cells += outside[..., None] * fill
            cells *= np.float32(1.0 / area)  # per grid cell: the grid's own count
            out.extend(list(cells) if ya else [cells])
        return out, ([float(v) for v in plan.tm @ bg_src + plan.tv][:n], bg_l)


def _lift(gain: np.ndarray, shape: tuple[int, ...], factor: int) -> np.ndarray:
    """A detection-grid gain at another grid's cells (``factor`` x finer), edge cells repeated to its shape."""
    g = np.repeat(np.repeat(gain, factor, axis=0), factor, axis=1) if factor > 1 else gain
    if g.shape == shape:
        return g
    g = g[: shape[0], : shape[1]]
    return np.pad(g, ((0, shape[0] - g.shape[0]), (0, shape[1] - g.shape[1])), mode="edge")


def _shade(values: np.ndarray, gain: np.ndarray, neutral: float) -> np.ndarray:
    """``(values - neutral) * gain + neutral``: light scaled about the sample value of no light (black, or grey chroma)."""
    if neutral == 0.0:
        return values * gain
    return (values - np.float32(neutral)) * gain + np.float32(neutral)


def _centre_window(h: int, w: int, out_h: int, out_w: int) -> tuple[float, float, float, float]:
    """The largest centred window of the model's aspect in an h x w frame: (y0, y1, x0, x1)."""
    if w * out_h >= h * out_w:
        win_h, win_w = float(h), h * out_w / out_h
    else:
        win_h, win_w = w * out_h / out_w, float(w)
    return (h - win_h) / 2.0, (h + win_h) / 2.0, (w - win_w) / 2.0, (w + win_w) / 2.0


def preprocess(
    pixels: np.ndarray,
    fmt: str = "GRAY",
    contract: Preprocess = DEFAULT_CONTRACT,
    spec: Optional[TensorSpec] = None,
    invert: str = "auto",
    size: Optional[tuple[int, int]] = None,
    colour_space: Optional[str] = None,
) -> np.ndarray:
    """One frame → the model input tensor (with ``spec``) or the float image (without)."""
    p = Preprocessor(contract, spec, invert)
    return p.tensor(pixels, fmt, size, colour_space) if spec is not None else p.image(pixels, fmt, size, colour_space)


def model_input(images: np.ndarray, contract: Preprocess, spec: TensorSpec) -> np.ndarray:
    """Model-sized uint8 images → input tensors [N, *spec.shape[1:]]: the contract's normalize, the variant's quantisation.

    ``images`` are what golden sets and test splits hold: [N, H, W] (or [N, H, W, 1]) grey or
    [N, H, W, 3] R,G,B, already framed, so no crop, contrast or polarity is applied; an RGB
    model that wants B,G,R gets its channels reversed here. Raises ValueError on a mismatch.
    """
    images = np.asarray(images)
    h, w = int(contract.size[0]), int(contract.size[1])
    c = contract.channels
    if images.dtype != np.uint8:
        raise ValueError(f"model_input takes uint8 images. Got: dtype {images.dtype}")
    if images.ndim == 3 and c == 1:
        images = images[..., None]
    if images.ndim != 4 or images.shape[1:] != (h, w, c):
        want = f"[N, {h}, {w}]" if c == 1 else f"[N, {h}, {w}, 3] (R, G, B)"
        raise ValueError(f"model_input for a {h}x{w} {contract.color} model takes {want} images. Got: shape {images.shape}")
    contract.check_input(spec, "the model input")
    if c == 3 and contract.channel_order == "bgr":
        images = images[..., ::-1]
    k = np.array([a for a, _ in contract.normalize.affine(c)], np.float32)
    off = np.array([b for _, b in contract.normalize.affine(c)], np.float32)
    if contract.normalize.range is not None and contract.normalize.range == (0.0, 1.0):
        real = images.astype(np.float32) / np.float32(255.0)  # the host's own formula, bit for bit
    else:
        real = images.astype(np.float32) * k + off
    return to_input(real, spec)
