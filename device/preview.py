"""What the page shows as pictures: a camera frame downscaled, and the model's own input view.

``frame_image`` turns a ``Frame`` in any of the pixel formats the sources deliver into a small
uint8 grey or RGB image: integer subsampling first (the long side at most ``max_px``), then
the colour conversion on the few pixels left. YUV420 frames are shown in colour (in the
frame's colour space, chroma upsampled by repetition), honouring the row stride; B,G,R is swapped back.

``InputView`` shows the tensor the interpreter was given, derived only from that tensor and
its ``TensorSpec``: the layout (HW, HWC, CHW, with or without a batch of one, one or three
channels), the dtype (int8, uint8, float32, ...) and the quantisation. Values are dequantised
(``device.quant``) and mapped to 0..255 from a value range: the contract's normalisation range
when the daemon knows it, else the range a quantised dtype can represent, else each tensor's
own min..max. Then the image is enlarged by an integer factor, nearest neighbour, so every
model pixel is a visible square. Three channels are shown in the order the model reads them:
a model fed B,G,R shows red things blue, which is the point.
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np

from device.colour import RGB_POSITIONS, yuv420_planes, yuv_to_rgb
from device.frames import Frame
from device.manifest import TensorSpec
from device.quant import to_scores


def _step(width: int, height: int, max_px: int) -> int:
    return max(1, math.ceil(max(width, height) / max(1, max_px)))


def frame_image(frame: Frame, max_px: int = 320) -> np.ndarray:
    """uint8 [h, w] grey or [h, w, 3] RGB of ``frame``, its long side at most ``max_px``.

    Raises ValueError naming the format and shape when the frame is not what its format says.
    """
    pix, fmt = frame.pixels, frame.fmt
    if not isinstance(pix, np.ndarray) or pix.dtype != np.uint8:
        raise ValueError(f"a {fmt} frame must be a uint8 array. Got: {getattr(pix, 'dtype', type(pix).__name__)}")
    if fmt == "YUV420":
        return _yuv420_rgb(pix, frame.size, frame.colour_space, max_px)
    if fmt == "GRAY":
        plane = pix[:, :, 0] if pix.ndim == 3 and pix.shape[2] == 1 else pix
        if plane.ndim != 2:
            raise ValueError(f"a GRAY frame must be [H, W]. Got: shape {pix.shape}")
        s = _step(plane.shape[1], plane.shape[0], max_px)
        return np.ascontiguousarray(plane[::s, ::s])
    order = RGB_POSITIONS.get(fmt)
    if order is None:
        raise ValueError(f"cannot show pixel format {fmt!r}")
    channels = len(fmt)
    if pix.ndim != 3 or pix.shape[2] != channels:
        raise ValueError(f"a {fmt} frame must be [H, W, {channels}]. Got: shape {pix.shape}")
    s = _step(pix.shape[1], pix.shape[0], max_px)
    return np.ascontiguousarray(pix[::s, ::s][:, :, list(order)])


def _yuv420_rgb(buf: np.ndarray, size: Optional[tuple[int, int]], colour_space: Optional[str], max_px: int) -> np.ndarray:
    y, u, v = yuv420_planes(buf, size)
    h, w = y.shape
    s = _step(w, h, max_px)
    rows, cols = np.arange(0, h, s), np.arange(0, w, s)
    yuv = np.stack((y[::s, ::s], u[rows[:, None] // 2, cols[None, :] // 2], v[rows[:, None] // 2, cols[None, :] // 2]), axis=-1)
    m, off = yuv_to_rgb(colour_space)
    rgb = yuv.reshape(-1, 3).astype(np.float32) @ np.asarray(m, np.float32).T + np.asarray(off, np.float32)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8).reshape(yuv.shape)


def image_layout(shape: tuple[int, ...]) -> tuple[int, int, int, bool]:
    """(height, width, channels, channels_first) of an image tensor shape; ValueError if it is none.

    Accepts [H, W], [H, W, C], [C, H, W] and the same with a leading batch of one, C = 1 or 3.
    """
    dims = list(shape)
    if len(dims) == 4 or (len(dims) == 3 and dims[0] == 1 and dims[2] not in (1, 3)):
        if dims[0] != 1:
            raise ValueError(f"cannot show a batch of {dims[0]} inputs (shape {list(shape)}); one image per invoke only")
        dims = dims[1:]
    if len(dims) == 2 and dims[0] != 1:  # [1, N] is a batch of one feature vector
        h, w = dims
        return h, w, 1, False
    if len(dims) == 3:
        if dims[2] in (1, 3):
            return dims[0], dims[1], dims[2], False
        if dims[0] in (1, 3):
            return dims[1], dims[2], dims[0], True
    raise ValueError(f"input shape {list(shape)} is not an image of 1 or 3 channels")


class InputView:
    """Renders a model's input tensor as a picture: dequantised, scaled to 0..255, enlarged."""

    def __init__(self, spec: TensorSpec, value_range: Optional[tuple[float, float]] = None, target_px: int = 224):
        self.spec = spec
        self.height, self.width, self.channels, self.channels_first = image_layout(tuple(spec.shape))
        self.scale = max(1, target_px // max(self.height, self.width))
        self.range_source = "contract"
        if value_range is None and spec.quantized:
            info = np.iinfo(np.dtype(spec.dtype))
            value_range = tuple(sorted(float(x) for x in to_scores(np.array([info.min, info.max]), spec)))  # type: ignore[assignment]
            self.range_source = "dtype"
        elif value_range is None:
            self.range_source = "auto"
        self.value_range = None if value_range is None else (float(value_range[0]), float(value_range[1]))

    def describe(self) -> str:
        """One line: e.g. ``28x28 grey int8, x8, range 0..1 (contract)``."""
        kind = "grey" if self.channels == 1 else "RGB"
        rng = "min..max of each input" if self.value_range is None else f"{self.value_range[0]:g}..{self.value_range[1]:g}"
        return f"{self.width}x{self.height} {kind} {self.spec.dtype}, x{self.scale} nearest, range {rng} ({self.range_source})"

    def render(self, tensor: np.ndarray) -> np.ndarray:
        """uint8 [H*k, W*k] grey or [H*k, W*k, 3] RGB of one input tensor."""
        x = to_scores(np.asarray(tensor), self.spec).astype(np.float32, copy=False)
        if x.size != self.height * self.width * self.channels:
            raise ValueError(f"input tensor has {x.size} values; its spec {list(self.spec.shape)} has "
                             f"{self.height * self.width * self.channels}")
        if self.channels_first:
            x = x.reshape(self.channels, self.height, self.width).transpose(1, 2, 0)
        else:
            x = x.reshape(self.height, self.width, self.channels)
        if self.value_range is not None:
            lo, hi = self.value_range
        else:
            lo, hi = float(x.min()), float(x.max())
        span = hi - lo if hi > lo else 1.0
        g = np.clip(np.rint((x - lo) * (255.0 / span)), 0, 255).astype(np.uint8)
        if self.channels == 1:
            g = g[:, :, 0]
        k = self.scale
        return np.repeat(np.repeat(g, k, axis=0), k, axis=1) if k > 1 else g
