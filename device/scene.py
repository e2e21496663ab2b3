"""Render an image as a camera would see it, for the synthetic source and the fake camera.

A scene lives in the camera's field of view (the ``main`` stream's frame, ``fov`` pixels):
the image fills the centred square of the field of view (or the square given by ``place``),
lit with a vignette and a warm tint, with sensor noise. Each stream is area-sampled from the
same field of view at its own size, the way the ISP scales one sensor image into ``main`` and
``lores``: a stream of another aspect ratio is stretched, as picamera2's lores stream is.

* A grey image [H, W] is a Fashion-MNIST garment (light on black): printed as dark ink on
  light paper, so a camera sees the opposite polarity.
* A colour image [H, W, 3] (R, G, B) is a photo: shown as is, on a backdrop of its own
  border colour.

Frames come out as picamera2 delivers them: ``RGB888`` as B,G,R bytes, ``YUV420`` as an I420
buffer [H*3/2, stride] with padded rows (junk in the padding), in the stream's Y'CbCr colour
space (``device.colour``: SMPTE170M, limited range, for the daemon's 640x480 video
configuration). Rendering is done once, up front, so its cost never shows in a benchmark.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from device.colour import rgb_to_yuv

BACKGROUND = 205.0  # light paper / table top
INK = 0.78  # a garment pixel of 255 darkens the background by this fraction
# Warm white balance: R, G, B gains (so channel order matters), scaled to leave BT.601 luma alone:
# a grey garment's Y plane is the photo itself, its colour cast only in U and V and in R,G,B.
_WARM = (1.06, 1.0, 0.92)
TINT_RGB = tuple(g / (0.299 * _WARM[0] + 0.587 * _WARM[1] + 0.114 * _WARM[2]) for g in _WARM)
VIGNETTE = 0.04  # fractional fall-off in the corners
NOISE_STD = 2.0  # sensor noise, grey levels


def area_matrix(n_out: int, n_in: int, start: float, span: float) -> np.ndarray:
    """Weights [n_out, n_in] (float64): output cell i averages the input interval it covers.

    The input (``n_in`` cells) occupies ``[start, start + span)`` in output coordinates;
    output cells outside it get zero weight (a row sums to the fraction of the cell covered).
    """
    edges_out = np.arange(n_out + 1, dtype=np.float64)
    edges_in = start + np.arange(n_in + 1, dtype=np.float64) * (span / n_in)
    lo = np.maximum(edges_out[:-1, None], edges_in[None, :-1])
    hi = np.minimum(edges_out[1:, None], edges_in[None, 1:])
    return np.clip(hi - lo, 0.0, None)


def _sample(image: np.ndarray, width: int, height: int, fov: tuple[int, int], place: Optional[tuple[float, float, float]]) -> tuple[np.ndarray, np.ndarray]:
    """(area average of ``image`` per output pixel [h, w(, C)], coverage [h, w]) in a ``width`` x ``height`` stream."""
    fw, fh = fov
    if place is None:
        cx, cy, side = fw / 2.0, fh / 2.0, float(min(fw, fh))
    else:  # centre x, centre y as fractions of the field of view, side as a fraction of its height
        cx, cy, side = place[0] * fw, place[1] * fh, place[2] * fh
    sx, sy = width / fw, height / fh  # stream pixels per field-of-view pixel (a stretch if they differ)
    rows = area_matrix(height, image.shape[0], (cy - side / 2.0) * sy, side * sy)
    cols = area_matrix(width, image.shape[1], (cx - side / 2.0) * sx, side * sx)
    coverage = rows.sum(axis=1)[:, None] * cols.sum(axis=1)[None, :]
    img = np.asarray(image, dtype=np.float64)
    if img.ndim == 2:
        ink = rows @ img @ cols.T
    else:
        ink = np.stack([rows @ img[..., c] @ cols.T for c in range(img.shape[2])], axis=-1)
    cov = coverage if img.ndim == 2 else coverage[..., None]
    mean = np.divide(ink, cov, out=np.zeros_like(ink), where=cov > 0)
    return mean, coverage


def _light(width: int, height: int) -> np.ndarray:
    yy, xx = np.mgrid[0:height, 0:width]
    r2 = ((yy - height / 2.0) / (height / 2.0)) ** 2 + ((xx - width / 2.0) / (width / 2.0)) ** 2
    return 1.0 - VIGNETTE * r2 / 2.0


def render_gray(image: np.ndarray, width: int, height: int, rng: np.random.Generator,
                fov: Optional[tuple[int, int]] = None, place: Optional[tuple[float, float, float]] = None) -> np.ndarray:
    """A float32 [height, width] luminance photo of a grey ``image`` (uint8, light on dark) as dark ink on paper."""
    mean, coverage = _sample(image, width, height, fov or (width, height), place)
    ink = mean * np.minimum(coverage, 1.0)
    photo = BACKGROUND * _light(width, height) * (1.0 - INK * ink / 255.0) + rng.normal(0.0, NOISE_STD, size=(height, width))
    return np.clip(photo, 0.0, 255.0).astype(np.float32)


def render(image: np.ndarray, width: int, height: int, rng: np.random.Generator,
           fov: Optional[tuple[int, int]] = None, place: Optional[tuple[float, float, float]] = None) -> np.ndarray:
    """A float32 [height, width, 3] R,G,B photo of ``image``: grey [H, W] as ink on paper, colour [H, W, 3] as is."""
    image = np.asarray(image)
    tint = np.asarray(TINT_RGB, dtype=np.float64)
    if image.ndim == 2:
        rgb = render_gray(image, width, height, rng, fov, place)[..., None] * tint
    else:
        mean, coverage = _sample(image, width, height, fov or (width, height), place)
        border = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]]).astype(np.float64)
        backdrop = np.median(border, axis=0)
        cov = np.minimum(coverage, 1.0)[..., None]
        scene = mean * cov + backdrop * (1.0 - cov)
        rgb = scene * _light(width, height)[..., None] * tint + rng.normal(0.0, NOISE_STD, size=(height, width, 3))
    return np.clip(rgb, 0.0, 255.0).astype(np.float32)


def _as_rgb(photo: np.ndarray) -> np.ndarray:
    """[H, W, 3] R,G,B: a grey [H, W] photo (``render_gray``) gets the warm tint."""
    photo = np.asarray(photo, dtype=np.float32)
    return photo[..., None] * np.asarray(TINT_RGB, dtype=np.float32) if photo.ndim == 2 else photo


def to_bgr888(rgb: np.ndarray) -> np.ndarray:
    """uint8 [H, W, 3] in B, G, R order (picamera2's ``RGB888``); a grey [H, W] photo gets the warm tint."""
    rgb = _as_rgb(rgb)
    return np.clip(np.rint(rgb[..., ::-1]), 0, 255).astype(np.uint8)


def yuv420_stride(width: int, align: int = 64) -> int:
    """Row stride in bytes of a YUV420 buffer, padded like the Pi's ISP does."""
    return (width + align - 1) // align * align


def to_yuv420(rgb: np.ndarray, stride: int, colour_space: Optional[str] = None) -> np.ndarray:
    """uint8 [H*3/2, stride] I420 buffer as picamera2 returns it: Y rows, then U, then V, padded.

    ``rgb`` is [H, W, 3] R,G,B or a grey [H, W] photo (tinted); U and V are the 2x2 means
    of the full-resolution chroma, as the ISP subsamples. ``colour_space`` is a libcamera
    name (None: picamera2's video default below 1280x720, SMPTE170M).
    """
    rgb = _as_rgb(rgb).astype(np.float64)
    h, w = rgb.shape[:2]
    m, off = rgb_to_yuv(colour_space)
    yuv = rgb @ m.T + off
    buf = np.full((h * 3 // 2, stride), 0xEE, dtype=np.uint8)  # padding is junk, never zero
    buf[:h, :w] = np.clip(np.rint(yuv[..., 0]), 0, 255).astype(np.uint8)
    chroma = buf[h:].reshape(-1)  # U then V planes, each (h/2) rows of stride/2 bytes
    half = (h // 2) * (stride // 2)
    sub = yuv[: h // 2 * 2, : w // 2 * 2, 1:].reshape(h // 2, 2, w // 2, 2, 2).mean(axis=(1, 3))
    for i in range(2):
        plane = np.full((h // 2, stride // 2), 0xEE, dtype=np.uint8)
        plane[:, : w // 2] = np.clip(np.rint(sub[..., i]), 0, 255).astype(np.uint8)
        chroma[i * half : (i + 1) * half] = plane.reshape(-1)
    return buf
