"""Camera-like frames of a garment for tests and benchmarks: framed and lit the way a camera sees it.

``device.scene`` (the synthetic source) renders a garment exactly as the training crop: centred,
filling the square, one background. A camera does not. Here each frame draws its own ``Look``
from ``LookRanges``, wider than anything the host trains on:

- the garment's longer side fills 60-100 % of the frame height and sits off centre (up to 15 %
  of the width and 10 % of the height, kept inside the frame);
- both polarities: a light garment on a dark background, or a dark garment on a light one;
- backgrounds of different levels and colours, with a lighting gradient and a faint blotchy
  texture;
- a colour tint (white balance), a tone curve (gamma), vignetting, a slight lens blur and sensor
  noise;
- 4:3 frames at several resolutions, delivered like picamera2 does: ``main`` as B,G,R
  (``RGB888``), ``lores`` as YUV420 with padded rows.

The garment is the 28x28 image seen as a continuous surface (bilinear between pixel centres, as
a photo of the real object would be smooth, not a pixel grid), integrated over each sensor
pixel: rows and columns are separable weight matrices, so a 640x480 frame costs two small
matrix products. Everything is numpy; frames are rendered up front (``CameraLikeSource``) so a
benchmark measures the pipeline, not the renderer.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional

import numpy as np

from device.errors import SourceError
from device.frames import EndOfSource, Frame, read_golden
from device.scene import yuv420_stride

# (stream, pixel format, width, height): 4:3 streams as the daemon could configure them.
FORMATS: tuple[tuple[str, str, int, int], ...] = (
    ("main", "BGR", 640, 480),
    ("lores", "YUV420", 112, 84),
    ("lores", "YUV420", 160, 120),
    ("lores", "YUV420", 320, 240),
)


@dataclass(frozen=True)
class LookRanges:
    """The ranges each frame's ``Look`` is drawn from (uniform unless said otherwise)."""

    fill: tuple[float, float] = (0.60, 1.00)  # garment's longer side / frame height
    offset_x: float = 0.15  # largest centre displacement, fraction of the width
    offset_y: float = 0.10  # ... of the height (both clipped to keep the garment in frame)
    light_on_dark: float = 0.5  # probability of a light garment on a dark background
    dark_level: tuple[float, float] = (8.0, 90.0)  # background grey of a dark background
    light_level: tuple[float, float] = (140.0, 240.0)  # background grey of a light background
    contrast: tuple[float, float] = (0.55, 0.95)  # garment's far end, fraction of the way to white / black
    chroma: float = 0.12  # per-channel colour of background and garment, +- fraction
    gradient: float = 0.25  # lighting change across the frame, +- fraction of the level
    texture: float = 6.0  # blotchy background texture, grey levels (peak)
    tint: tuple[float, float] = (0.85, 1.15)  # white-balance gain per channel
    gamma: tuple[float, float] = (0.8, 1.25)  # tone curve exponent
    vignette: tuple[float, float] = (0.0, 0.30)  # brightness lost in the corners
    blur_px: tuple[float, float] = (0.0, 3.0)  # lens blur sigma, pixels of a 480-line frame
    noise: tuple[float, float] = (1.0, 6.0)  # sensor noise sigma, grey levels

    def draw(self, rng: np.random.Generator) -> Look:
        """One frame's conditions."""
        u = rng.uniform
        light_on_dark = bool(u() < self.light_on_dark)
        level = u(*(self.dark_level if light_on_dark else self.light_level))
        k = u(*self.contrast)
        far = level + k * (250.0 - level) if light_on_dark else level * (1.0 - k)
        bg = tuple(level * (1.0 + u(-self.chroma, self.chroma)) for _ in range(3))
        fg = tuple(far * (1.0 + u(-self.chroma, self.chroma)) for _ in range(3))
        return Look(
            fill=u(*self.fill),
            dx=u(-1.0, 1.0) * self.offset_x,
            dy=u(-1.0, 1.0) * self.offset_y,
            light_on_dark=light_on_dark,
            background_bgr=bg,  # type: ignore[arg-type]
            garment_bgr=fg,  # type: ignore[arg-type]
            gradient=(u(-self.gradient, self.gradient), u(-self.gradient, self.gradient)),
            texture=u(0.0, self.texture),
            tint_bgr=(u(*self.tint), u(*self.tint), u(*self.tint)),
            gamma=float(np.exp(u(np.log(self.gamma[0]), np.log(self.gamma[1])))),
            vignette=u(*self.vignette),
            blur_px=u(*self.blur_px),
            noise=u(*self.noise),
            texture_seed=int(rng.integers(0, 2**31)),
        )


DEFAULT_RANGES = LookRanges()


@dataclass(frozen=True)
class Look:
    """The framing and imaging conditions of one frame (resolution-independent)."""

    fill: float
    dx: float  # centre displacement, fraction of the width
    dy: float  # ... of the height
    light_on_dark: bool
    background_bgr: tuple[float, float, float]
    garment_bgr: tuple[float, float, float]  # the colour of the garment's fullest pixel
    gradient: tuple[float, float]  # fractional lighting change left→right, top→bottom
    texture: float
    tint_bgr: tuple[float, float, float]
    gamma: float
    vignette: float
    blur_px: float
    noise: float
    texture_seed: int = 0


def _tent_integral(x: np.ndarray) -> np.ndarray:
    """The integral from -inf to x of the unit tent (bilinear) kernel."""
    x = np.clip(x, -1.0, 1.0)
    return np.where(x < 0.0, 0.5 * (x + 1.0) ** 2, 1.0 - 0.5 * (1.0 - x) ** 2)


def pixel_weights(n_out: int, n_in: int, start: float, side: float, blur_px: float = 0.0) -> np.ndarray:
    """Weights [n_out, n_in]: how much each source sample contributes to each output pixel.

    The ``n_in`` samples span ``[start, start + side)`` output pixels; between their centres
    the surface is bilinear. Output pixel i averages that surface over ``[i, i + 1)``, then a
    Gaussian lens blur of ``blur_px`` output pixels spreads it.
    """
    scale = n_in / side  # source samples per output pixel
    a = (np.arange(n_out, dtype=np.float64)[:, None] - start) * scale - 0.5
    k = np.arange(n_in, dtype=np.float64)[None, :]
    w = (_tent_integral(a + scale - k) - _tent_integral(a - k)) / scale
    if blur_px > 0.05:  # shifted adds, not a matrix product (multithreaded BLAS crawls on busy cores)
        reach = int(np.ceil(3.0 * blur_px))
        taps = np.exp(-0.5 * (np.arange(-reach, reach + 1) / blur_px) ** 2)
        padded = np.pad(w, ((reach, reach), (0, 0)))
        w = sum(t * padded[j : j + n_out] for j, t in enumerate(taps / taps.sum()))
    return w


def _product(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a @ b without BLAS: a multithreaded BLAS is many times slower on shared, busy cores."""
    return np.einsum("ik,kj->ij", a, b, optimize=False)


def _texture(width: int, height: int, seed: int) -> np.ndarray:
    """A smooth random field in [-1, 1]: a 4x3 grid of random values, bilinearly upsampled."""
    grid = np.random.default_rng(seed).uniform(-1.0, 1.0, size=(3, 4))
    rows = pixel_weights(height, 3, 0.0, float(height))
    cols = pixel_weights(width, 4, 0.0, float(width))
    rows /= np.maximum(rows.sum(axis=1, keepdims=True), 1e-9)
    cols /= np.maximum(cols.sum(axis=1, keepdims=True), 1e-9)
    return _product(rows @ grid, cols.T).astype(np.float32)


def _tone_curve(gamma: float) -> np.ndarray:
    """Lookup table: linear level x 16 (0..4080) → 255 (x / 255) ** (1 / gamma)."""
    x = np.arange(16 * 255 + 1, dtype=np.float64) / (16 * 255)
    return (255.0 * x ** (1.0 / gamma)).astype(np.float32)


class NoiseBank:
    """Unit Gaussian noise drawn once; each frame takes a window at a random offset (drawing ~1M normals per 640x480 frame would cost more than the rest of the rendering)."""

    def __init__(self, rng: np.random.Generator, size: int = 1 << 21):
        self.rng = rng
        self.values = rng.standard_normal(size, dtype=np.float32)

    def take(self, shape: tuple[int, ...]) -> np.ndarray:
        """Unit noise of ``shape`` (a fresh window of the bank; grown when too small)."""
        n = int(np.prod(shape))
        if n * 2 > len(self.values):
            self.values = self.rng.standard_normal(n * 2, dtype=np.float32)
        start = int(self.rng.integers(0, len(self.values) - n + 1))
        return self.values[start : start + n].reshape(shape)


def render_bgr(
    image: np.ndarray, look: Look, width: int, height: int, rng: np.random.Generator, noise: Optional[NoiseBank] = None
) -> np.ndarray:
    """A float32 [height, width, 3] B,G,R photo (0..255, not yet quantised) of ``image``.

    ``image`` is uint8 [28, 28] (or [S, S]) light on dark, as Fashion-MNIST stores it. Light
    (gradient, vignette) and the background texture are grey fields; per channel the frame is
    ``tint * (background * (1 - ink) + garment * light * ink)``, then sensor noise is added in
    linear light and the tone curve applied.
    """
    img = np.asarray(image, dtype=np.float64)
    if img.ndim == 3:
        img = img[..., 0]
    side = look.fill * height
    x0 = float(np.clip((width - side) / 2.0 + look.dx * width, 0.0, width - side))
    y0 = float(np.clip((height - side) / 2.0 + look.dy * height, 0.0, height - side))
    blur = look.blur_px * height / 480.0
    rows = pixel_weights(height, img.shape[0], y0, side, blur)
    cols = pixel_weights(width, img.shape[1], x0, side, blur)
    ink = np.clip(_product(rows @ (img / 255.0), cols.T), 0.0, 1.0).astype(np.float32)  # [H, W]
    yy = ((np.arange(height, dtype=np.float32) + 0.5) / height - 0.5)[:, None]
    xx = ((np.arange(width, dtype=np.float32) + 0.5) / width - 0.5)[None, :]
    vignette = 1.0 - look.vignette * 2.0 * (xx * xx + yy * yy)  # corners lose ``vignette``
    light = (1.0 + look.gradient[0] * xx + look.gradient[1] * yy) * vignette
    texture = look.texture * _texture(width, height, look.texture_seed) * vignette
    rest = 1.0 - ink
    p, q, r = light * rest, texture * rest, light * ink
    out = np.empty((height, width, 3), dtype=np.float32)
    for c in range(3):
        chan = out[..., c]
        np.multiply(p, np.float32(look.background_bgr[c]), out=chan)
        chan += q
        chan += r * np.float32(look.garment_bgr[c])
        chan *= np.float32(look.tint_bgr[c])
    unit = noise.take(out.shape) if noise is not None else rng.standard_normal(out.shape, dtype=np.float32)
    out += unit * np.float32(look.noise)
    np.clip(out, 0.0, 255.0, out=out)
    idx = np.rint(out * 16.0).astype(np.int32)
    return _tone_curve(look.gamma)[idx]


def bgr_to_yuv420(bgr: np.ndarray, stride: int) -> np.ndarray:
    """uint8 [H*3/2, stride] I420 buffer (full-range BT.601) as picamera2 returns it, rows padded with junk."""
    h, w = bgr.shape[:2]
    f = np.asarray(bgr, dtype=np.float32)
    b, g, r = f[..., 0], f[..., 1], f[..., 2]
    y = 0.299 * r + 0.587 * g + 0.114 * b
    u = 128.0 + 0.564 * (b - y)
    v = 128.0 + 0.713 * (r - y)
    sub = lambda p: p.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))  # noqa: E731
    buf = np.full((h * 3 // 2, stride), 0xEE, dtype=np.uint8)
    buf[:h, :w] = np.clip(np.rint(y), 0, 255)
    chroma = buf[h:].reshape(-1)
    half = (h // 2) * (stride // 2)
    for i, p in enumerate((u, v)):
        plane = np.full((h // 2, stride // 2), 0xEE, dtype=np.uint8)
        plane[:, : w // 2] = np.clip(np.rint(sub(p)), 0, 255)
        chroma[i * half : (i + 1) * half] = plane.reshape(-1)
    return buf


def render_frame(
    image: np.ndarray, look: Look, fmt: str, width: int, height: int, rng: np.random.Generator,
    noise: Optional[NoiseBank] = None,
) -> tuple[np.ndarray, Optional[tuple[int, int]]]:
    """Pixels as the camera delivers them, and the (width, height) a YUV420 buffer needs."""
    bgr = render_bgr(image, look, width, height, rng, noise)
    if fmt == "BGR":
        return np.clip(np.rint(bgr), 0, 255).astype(np.uint8), None
    if fmt == "RGB":
        return np.clip(np.rint(bgr[..., ::-1]), 0, 255).astype(np.uint8), None
    if fmt == "YUV420":
        return bgr_to_yuv420(bgr, yuv420_stride(width)), (width, height)
    raise ValueError(f"camera-like frames are BGR, RGB or YUV420. Got: {fmt!r}")


@dataclass(frozen=True)
class CameraFrame:
    """One rendered frame with what it shows and how."""

    pixels: np.ndarray
    fmt: str
    size: Optional[tuple[int, int]]
    label: Optional[int]
    look: Look
    stream: str
    resolution: tuple[int, int]


def render_set(
    images: np.ndarray,
    labels: Optional[Sequence[int]] = None,
    formats: Sequence[tuple[str, str, int, int]] = FORMATS,
    ranges: LookRanges = DEFAULT_RANGES,
    seed: int = 0,
) -> list[CameraFrame]:
    """Render each image once, the formats taken in turn (image i gets ``formats[i % len]``)."""
    images = np.asarray(images)
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    if images.ndim != 3 or images.dtype != np.uint8 or len(images) == 0:
        raise SourceError(f"camera-like frames need uint8 images [N, H, W], N > 0. Got: {images.dtype} {images.shape}")
    rng = np.random.default_rng(seed)
    noise = NoiseBank(rng)
    out: list[CameraFrame] = []
    for i, img in enumerate(images):
        stream, fmt, w, h = formats[i % len(formats)]
        look = ranges.draw(rng)
        pixels, size = render_frame(img, look, fmt, w, h, rng, noise)
        out.append(CameraFrame(pixels, fmt, size, None if labels is None else int(labels[i]), look, stream, (w, h)))
    return out


class CameraLikeSource:
    """Labelled camera-like frames of one stream format, pre-rendered once, then cycled (a FrameSource)."""

    def __init__(
        self,
        images: np.ndarray,
        labels: Optional[Sequence[int]] = None,
        fmt: tuple[str, str, int, int] = FORMATS[1],
        ranges: LookRanges = DEFAULT_RANGES,
        seed: int = 0,
        loop: bool = True,
    ):
        self.frames = render_set(images, labels, [fmt], ranges, seed)
        self.fmt, self.size = fmt[1], (fmt[2], fmt[3])
        self.loop = loop
        self._seq = 0

    @classmethod
    def from_golden(
        cls, path: Path | str, fmt: tuple[str, str, int, int] = FORMATS[1], limit: Optional[int] = None, **kw: object
    ) -> CameraLikeSource:
        """Render the golden set's images (official test images) with their labels."""
        images, labels = read_golden(path, limit)
        if images.ndim == 4 and images.shape[-1] == 3:
            raise SourceError("camera-like frames are rendered from grey garment images; this golden set is RGB")
        return cls(images, labels, fmt, **kw)  # type: ignore[arg-type]

    def __len__(self) -> int:
        return len(self.frames)

    def read(self) -> Frame:
        """The next pre-rendered frame."""
        if self._seq >= len(self.frames) and not self.loop:
            raise EndOfSource("camera-like")
        i = self._seq % len(self.frames)
        self._seq += 1
        f = self.frames[i]
        return Frame(f.pixels, f.fmt, self._seq, time.time_ns(), f"camera-like-{i}", f.label, f.size)

    def close(self) -> None:
        """Nothing to release."""


def centred(ranges: LookRanges = DEFAULT_RANGES) -> LookRanges:
    """The same ranges with the garment centred and filling the frame height (for isolating framing)."""
    return replace(ranges, fill=(1.0, 1.0), offset_x=0.0, offset_y=0.0)
