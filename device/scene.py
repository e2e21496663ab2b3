"""Render a 28x28 garment as a camera would see it: dark on a light background, with noise.

Used by the synthetic source and the fake camera. Each output resolution is area-sampled from
the same scene (the garment filling the centred square of the field of view), the way an ISP
scales one sensor image into a ``main`` and a ``lores`` stream. Rendering is done once, up
front, so its cost never shows in a benchmark.
"""

from __future__ import annotations

import numpy as np

BACKGROUND = 205.0  # light paper / table top
INK = 0.78  # a garment pixel of 255 darkens the background by this fraction
TINT_BGR = (0.92, 1.0, 1.06)  # warm white balance: B, G, R gains, so channel order matters
VIGNETTE = 0.04  # fractional fall-off in the corners
NOISE_STD = 2.0  # sensor noise, grey levels


def area_matrix(n_out: int, n_in: int, start: float, span: float) -> np.ndarray:
    """Weights [n_out, n_in]: output cell i averages the input interval it covers.

    The input (``n_in`` cells) occupies ``[start, start + span)`` in output coordinates;
    output cells outside it get zero weight (background).
    """
    edges_out = np.arange(n_out + 1, dtype=np.float64)
    edges_in = start + np.arange(n_in + 1, dtype=np.float64) * (span / n_in)
    lo = np.maximum(edges_out[:-1, None], edges_in[None, :-1])
    hi = np.minimum(edges_out[1:, None], edges_in[None, 1:])
    return np.clip(hi - lo, 0.0, None)


def render_gray(image: np.ndarray, width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """A float32 [height, width] luminance photo of ``image`` (uint8 28x28, light on dark)."""
    img = np.asarray(image, dtype=np.float64)
    side = float(min(width, height))
    rows = area_matrix(height, img.shape[0], (height - side) / 2.0, side)
    cols = area_matrix(width, img.shape[1], (width - side) / 2.0, side)
    coverage = rows.sum(axis=1)[:, None] * cols.sum(axis=1)[None, :]
    ink = rows @ img @ cols.T  # area average of the garment where it covers a pixel
    ink = np.divide(ink, coverage, out=np.zeros_like(ink), where=coverage > 0) * np.minimum(coverage, 1.0)
    yy, xx = np.mgrid[0:height, 0:width]
    r2 = ((yy - height / 2.0) / (height / 2.0)) ** 2 + ((xx - width / 2.0) / (width / 2.0)) ** 2
    light = BACKGROUND * (1.0 - VIGNETTE * r2 / 2.0)
    photo = light * (1.0 - INK * ink / 255.0) + rng.normal(0.0, NOISE_STD, size=(height, width))
    return np.clip(photo, 0.0, 255.0).astype(np.float32)


def to_bgr888(gray: np.ndarray) -> np.ndarray:
    """uint8 [H, W, 3] in B, G, R order (picamera2's ``RGB888``), with a warm tint."""
    out = gray[..., None] * np.asarray(TINT_BGR, dtype=np.float32)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def yuv420_stride(width: int, align: int = 64) -> int:
    """Row stride in bytes of a YUV420 buffer, padded like the Pi's ISP does."""
    return (width + align - 1) // align * align


def to_yuv420(gray: np.ndarray, stride: int) -> np.ndarray:
    """uint8 [H*3/2, stride] I420 buffer as picamera2 returns it: Y rows, then U, then V, padded."""
    h, w = gray.shape
    buf = np.full((h * 3 // 2, stride), 0xEE, dtype=np.uint8)  # padding is junk, never zero
    buf[:h, :w] = np.clip(np.rint(gray), 0, 255).astype(np.uint8)
    chroma = buf[h:].reshape(-1)  # U then V planes, each (h/2) rows of stride/2 bytes
    half = (h // 2) * (stride // 2)
    uv = np.full((h // 2, stride // 2), 0xEE, dtype=np.uint8)
    uv[:, : w // 2] = 124  # a slightly warm grey
    chroma[:half] = uv.reshape(-1)
    uv[:, : w // 2] = 131
    chroma[half : 2 * half] = uv.reshape(-1)
    return buf
