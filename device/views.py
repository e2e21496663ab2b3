"""The two pictures kept of a collected (or uncertain) frame: what the model saw, and the frame itself.

* **Model view** (``model_view``): the tensor the interpreter was given, dequantised and with
  the contract's normalisation undone, as uint8 pixels at the model's size: the frame after
  crop, resize, colour, polarity and contrast, exactly as this model saw it (quantisation
  rounding included). Colour is written in R,G,B order whatever order the model reads, so the
  PNG shows true colours (the live page's input view shows the model's own order instead).
* **Frame view** (``frame_view``): the camera frame, area-downscaled by a whole factor until
  its long side is at most ``max_px`` (default 320: main's 640x480 becomes 320x240), in colour.
  YUV420 is converted with the frame's own Y'CbCr colour space (``device.colour``, the matrix
  the preprocessing uses) after the downscale (the conversion is affine, so it commutes with
  averaging); B,G,R and X bytes are reordered to R,G,B. Area averaging, not subsampling: a
  training picture must not alias.

The frame view is what a new model is trained on (``host run --data folder:`` crops and
resizes it as the device does, for any size and colour the next model has); the model view
shows what the current model was given. Both are encoded with ``device.png`` (numpy + zlib).
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np

from device.colour import RGB_POSITIONS, yuv420_planes, yuv_to_rgb
from device.frames import Frame
from device.manifest import Preprocess, TensorSpec
from device.png import encode_png
from device.preview import image_layout
from device.quant import to_scores

VIEW_MAX_PX = 320
PNG_LEVEL = 6  # kept pictures are written once and read many times: zlib's default trade-off


def model_view(tensor: np.ndarray, contract: Preprocess, spec: TensorSpec) -> np.ndarray:
    """uint8 [H, W] grey or [H, W, 3] R,G,B: the model's input tensor as the pixels it stands for."""
    h, w, c, channels_first = image_layout(tuple(spec.shape))
    x = to_scores(np.asarray(tensor), spec).astype(np.float32, copy=False)
    if x.size != h * w * c:
        raise ValueError(f"the input tensor has {x.size} values; its spec {list(spec.shape)} has {h * w * c}")
    x = x.reshape(c, h, w).transpose(1, 2, 0) if channels_first else x.reshape(h, w, c)
    affine = contract.normalize.affine(c)
    k = np.array([a for a, _ in affine], np.float32)
    off = np.array([b for _, b in affine], np.float32)
    pixels = np.clip(np.rint((x - off) / k), 0, 255).astype(np.uint8)
    if c == 1:
        return pixels[:, :, 0]
    return pixels[:, :, ::-1].copy() if contract.channel_order == "bgr" else pixels


def _factor(width: int, height: int, max_px: int) -> int:
    return max(1, math.ceil(max(width, height) / max(1, max_px)))


def _block_mean(planes: np.ndarray, f: int) -> np.ndarray:
    """[H, W, C] uint8 → [H//f, W//f, C] float32 means of f x f blocks (the remainder rows and columns are cut)."""
    if f == 1:
        return planes.astype(np.float32)
    h, w, c = planes.shape
    hh, ww = h // f, w // f
    s = planes[: hh * f, : ww * f].reshape(hh, f, ww, f, c).sum(axis=(1, 3), dtype=np.uint32)
    return s.astype(np.float32) / np.float32(f * f)


def frame_view(frame: Frame, max_px: int = VIEW_MAX_PX) -> np.ndarray:
    """uint8 [h, w] grey or [h, w, 3] R,G,B of ``frame``, area-downscaled so its long side is at most ``max_px``."""
    return pixels_view(frame.pixels, frame.fmt, frame.size, frame.colour_space, max_px)


def pixels_view(pixels: np.ndarray, fmt: str, size: Optional[tuple[int, int]] = None, colour_space: Optional[str] = None,
                max_px: int = VIEW_MAX_PX) -> np.ndarray:
    """``frame_view`` of raw pixels in a pixel format (``device.frames.Frame``'s ``fmt``, ``size``, ``colour_space``)."""
    pix = np.asarray(pixels)
    if pix.dtype != np.uint8:
        raise ValueError(f"a {fmt} frame must be uint8. Got: dtype {pix.dtype}")
    if fmt == "YUV420":
        y, u, v = yuv420_planes(pix, size)
        h, w = y.shape
        up = np.empty((h, w, 3), np.uint8)  # chroma repeated to full resolution, then everything averaged
        up[:, :, 0] = y
        up[:, :, 1] = np.repeat(np.repeat(u, 2, axis=0), 2, axis=1)
        up[:, :, 2] = np.repeat(np.repeat(v, 2, axis=0), 2, axis=1)
        yuv = _block_mean(up, _factor(w, h, max_px))
        m, off = yuv_to_rgb(colour_space)
        rgb = yuv.reshape(-1, 3) @ np.asarray(m, np.float32).T + np.asarray(off, np.float32)
        return np.clip(np.rint(rgb), 0, 255).astype(np.uint8).reshape(yuv.shape)
    if fmt == "GRAY":
        plane2 = pix[:, :, 0] if pix.ndim == 3 and pix.shape[2] == 1 else pix
        if plane2.ndim != 2 or 0 in plane2.shape:
            raise ValueError(f"a GRAY frame must be [H, W]. Got: shape {pix.shape}")
        f = _factor(plane2.shape[1], plane2.shape[0], max_px)
        return np.clip(np.rint(_block_mean(plane2[:, :, None], f)[:, :, 0]), 0, 255).astype(np.uint8)
    order = RGB_POSITIONS.get(fmt)
    if order is None:
        raise ValueError(f"cannot make a picture of pixel format {fmt!r}")
    if pix.ndim != 3 or pix.shape[2] != len(fmt) or 0 in pix.shape[:2]:
        raise ValueError(f"a {fmt} frame must be [H, W, {len(fmt)}]. Got: shape {pix.shape}")
    f = _factor(pix.shape[1], pix.shape[0], max_px)
    rgb3 = pix[:, :, list(order)]
    return np.clip(np.rint(_block_mean(rgb3, f)), 0, 255).astype(np.uint8)


def png(image: np.ndarray) -> bytes:
    """PNG bytes of a kept picture."""
    return encode_png(image, PNG_LEVEL)
