"""A small PNG encoder: numpy rows, the standard library's zlib, no Pillow (the Pi has none).

8-bit grey, grey+alpha, RGB or RGBA. Every row uses PNG's "Up" filter (the byte difference to
the row above, one vectorised subtraction), which lets zlib find the smooth areas of camera
frames; ``level`` trades encode time for size (1 is fastest, 9 smallest).
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

SIGNATURE = b"\x89PNG\r\n\x1a\n"
# channels → PNG colour type: grey, grey + alpha, RGB, RGBA
_COLOUR_TYPE = {1: 0, 2: 4, 3: 2, 4: 6}
_FILTER_UP = 2


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def encode_png(pixels: np.ndarray, level: int = 3) -> bytes:
    """PNG bytes of a uint8 [H, W] (grey) or [H, W, C] image, C = 1 grey, 2 grey+alpha, 3 RGB, 4 RGBA."""
    a = np.asarray(pixels)
    if a.dtype != np.uint8:
        raise ValueError(f"encode_png needs uint8 pixels. Got: dtype {a.dtype}")
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or a.shape[2] not in _COLOUR_TYPE or a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(f"encode_png needs [H, W] or [H, W, 1|2|3|4] with H, W > 0. Got: shape {pixels.shape}")
    h, w, c = a.shape
    rows = np.ascontiguousarray(a).reshape(h, w * c)
    filtered = np.empty((h, w * c + 1), dtype=np.uint8)
    filtered[:, 0] = _FILTER_UP
    filtered[0, 1:] = rows[0]  # the row above the first is all zeros
    np.subtract(rows[1:], rows[:-1], out=filtered[1:, 1:])  # uint8 arithmetic wraps modulo 256, as PNG wants
    header = struct.pack(">IIBBBBB", w, h, 8, _COLOUR_TYPE[c], 0, 0, 0)
    return SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(filtered.tobytes(), level)) + _chunk(b"IEND", b"")
