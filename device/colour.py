"""Colour facts in one place: Y'CbCr colour spaces (matrix and range), luma weights, memory orders.

picamera2 hands over the ``lores`` stream as YUV420 in the configuration's colour space
(``camera_configuration()["colour_space"]``, a ``libcamera.ColorSpace`` whose ``str()`` is
libcamera's name): ``create_video_configuration`` picks ``SMPTE170M`` (BT.601 matrix,
limited range 16..235 / 16..240) below 1280x720 and ``Rec709`` (BT.709 matrix, limited range)
above; preview and still configurations use ``sYCC`` (BT.601, full range, sRGB primaries
and transfer: how JPEG photos are encoded), which is what the daemon requests
(``CameraConfig.colour_space``). A non-standard one reads
``Primaries/Transfer/Encoding/Range``, e.g. ``Rec709/Rec709/Rec601/Full``. The conversions
here are affine (a 3x3 matrix and an offset), so they commute with area averaging: the device
averages Y, U and V down to the model's grid first and converts a few thousand pixels, not
a whole frame. The fake camera renders with the inverse of the same matrix.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Optional

import numpy as np

from device.errors import FrameError

# ITU-R BT.601 luma weights (what "grey" means for an R,G,B frame), by channel position in memory.
LUMA_601 = (0.299, 0.587, 0.114)
# Byte order in memory → the position of R, G and B in each pixel.
RGB_POSITIONS = {"RGB": (0, 1, 2), "BGR": (2, 1, 0), "RGBX": (0, 1, 2), "BGRX": (2, 1, 0)}
PIXEL_BYTES = {"RGB": 3, "BGR": 3, "RGBX": 4, "BGRX": 4}

# Y'CbCr encodings: (Kr, Kb).
_ENCODINGS = {"Rec601": (0.299, 0.114), "Rec709": (0.2126, 0.0722), "Rec2020": (0.2627, 0.0593)}
# libcamera's standard colour spaces that carry a Y'CbCr encoding: name → (encoding, full range).
_STANDARD = {
    "sYCC": ("Rec601", True),
    "SMPTE170M": ("Rec601", False),
    "Rec709": ("Rec709", False),
    "Rec2020": ("Rec2020", False),
}
YUV_COLOUR_SPACES = tuple(_STANDARD)
# What the daemon requests from the camera (CameraConfig.colour_space), and so what a YUV frame
# that names no colour space is taken to be.
DEFAULT_YUV_COLOUR_SPACE = "sYCC"


@dataclass(frozen=True)
class YCbCr:
    """A Y'CbCr colour space: its encoding's Kr, Kb and whether the range is full (0..255)."""

    name: str
    kr: float
    kb: float
    full_range: bool


@lru_cache(maxsize=32)
def ycbcr(name: Optional[str]) -> YCbCr:
    """Parse a libcamera colour space name (``sYCC``, ``SMPTE170M``, ``Rec709``, ``P/T/E/R``).

    None means what the daemon requests from the camera (``sYCC``).
    Raises FrameError naming what is supported for a colour space without a Y'CbCr encoding.
    """
    text = DEFAULT_YUV_COLOUR_SPACE if name is None else str(name)
    if text in _STANDARD:
        enc, full = _STANDARD[text]
    else:
        parts = text.split("/")
        if len(parts) != 4 or parts[2] not in _ENCODINGS or parts[3] not in ("Full", "Limited"):
            raise FrameError(
                f"YUV colour space {text!r} has no Y'CbCr encoding this build converts; it converts "
                f"{', '.join(YUV_COLOUR_SPACES)} or 'Primaries/Transfer/{{{'|'.join(_ENCODINGS)}}}/{{Full|Limited}}'"
            )
        enc, full = parts[2], parts[3] == "Full"
    kr, kb = _ENCODINGS[enc]
    return YCbCr(text, kr, kb, full)


@lru_cache(maxsize=32)
def rgb_to_yuv(name: Optional[str]) -> tuple[np.ndarray, np.ndarray]:
    """(M [3, 3], offset [3]) with (Y, U, V) = M @ (R, G, B) + offset, all in 0..255 units (float64)."""
    cs = ycbcr(name)
    kr, kb = cs.kr, cs.kb
    kg = 1.0 - kr - kb
    luma = np.array([kr, kg, kb])
    cb = (np.array([0.0, 0.0, 1.0]) - luma) / (2.0 * (1.0 - kb))
    cr = (np.array([1.0, 0.0, 0.0]) - luma) / (2.0 * (1.0 - kr))
    y_gain, c_gain, y_off = (1.0, 1.0, 0.0) if cs.full_range else (219.0 / 255.0, 224.0 / 255.0, 16.0)
    m = np.stack([luma * y_gain, cb * c_gain, cr * c_gain])
    m.setflags(write=False)
    off = np.array([y_off, 128.0, 128.0])
    off.setflags(write=False)
    return m, off


def yuv420_planes(buf: np.ndarray, size: Optional[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Views of the Y [h, w], U and V [h/2, w/2] planes of an I420 buffer [h*3/2, stride].

    After the Y rows come the U plane, then the V plane, each (h/2) rows of stride/2 bytes; the
    padding at the end of each row is left out. ValueError when the buffer is not that shape.
    """
    if size is None:
        raise ValueError("a YUV420 frame needs its (width, height); its rows are padded")
    w, h = size
    if buf.ndim != 2 or buf.shape[0] != h * 3 // 2 or buf.shape[1] < w or w % 2 or h % 2:
        raise ValueError(f"a {w}x{h} YUV420 buffer must be [{h * 3 // 2}, stride >= {w}]. Got: shape {buf.shape}")
    cs = buf.shape[1] // 2
    plane = (h // 2) * cs
    chroma = buf[h:].reshape(-1)
    u = chroma[:plane].reshape(h // 2, cs)[:, : w // 2]
    v = chroma[plane : 2 * plane].reshape(h // 2, cs)[:, : w // 2]
    return buf[:h, :w], u, v


@lru_cache(maxsize=32)
def yuv_to_rgb(name: Optional[str]) -> tuple[np.ndarray, np.ndarray]:
    """(M [3, 3], offset [3]) with (R, G, B) = M @ (Y, U, V) + offset: the exact inverse of ``rgb_to_yuv``."""
    m, off = rgb_to_yuv(name)
    inv = np.linalg.inv(m)
    inv.setflags(write=False)
    o = -inv @ off
    o.setflags(write=False)
    return inv, o


# OpenBLAS runs a matrix product on several threads past 2**18 multiply-adds (and a
# matrix-vector product past 9216 elements); on cores that are busy (other processes, the
# interpreter's own threads) those threads stall: 206 ms instead of 4 ms for one frame here.
# Per-frame products are kept below that, in chunks of rows.
_SINGLE_THREAD_MACS = 1 << 17


def mix(x: np.ndarray, m: np.ndarray, out: Optional[np.ndarray] = None) -> np.ndarray:
    """x [..., Cs] @ m [Cs, C] → [..., C] (float32), as single-threaded BLAS products."""
    cs, c = m.shape
    flat = x.reshape(-1, cs)
    res = np.empty((flat.shape[0], c), np.float32) if out is None else out.reshape(-1, c)
    rows = max(1, _SINGLE_THREAD_MACS // (cs * max(c, 1)))
    mm = np.asarray(m, np.float32)
    for r in range(0, flat.shape[0], rows):
        np.matmul(flat[r : r + rows], mm, out=res[r : r + rows])
    return res.reshape((*x.shape[:-1], c))


def luma_from_y(name: Optional[str]) -> tuple[float, float]:
    """(gain, offset): luma in 0..255 from the Y sample (undoing a limited range)."""
    cs = ycbcr(name)
    return (1.0, 0.0) if cs.full_range else (255.0 / 219.0, -16.0 * 255.0 / 219.0)


def video_colour_space(main_size: tuple[int, int]) -> str:
    """The colour space picamera2's ``create_video_configuration`` picks for a main stream of this size."""
    return "SMPTE170M" if main_size[0] < 1280 or main_size[1] < 720 else "Rec709"
