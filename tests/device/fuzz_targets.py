"""Fuzz targets shared by tests/device/test_fuzz.py (short, derandomized) and bench/fuzz_device.py (long).

Each target pairs a generator of inputs with a check that feeds one input to the device's public
code and returns ``"accepted"`` or ``"refused"``. The check raises ``AssertionError`` when the
device breaks its promise for bad input: an exception that is not a ``DeviceError``, an error of
more than one line or one that does not name the input, or a valid input refused.

- ``manifest``: mutated manifest dicts through ``parse_manifest(doc, root)``.
- ``manifest_file``: bytes of a manifest.json (cut short, flipped, nested deep, huge numbers)
  through ``load_manifest(path)``.
- ``preprocess``: frames of random shapes, dtypes, strides and formats through
  ``Preprocessor(contract, spec, invert).image/.tensor/.into`` and ``preprocess()``.
- ``frame_file``: PNG, JPEG, PGM/PPM and .npy files, valid, cut short, empty, corrupt, or
  claiming huge sizes, through ``decode_image(path)``.
- ``tflite``: random bytes, cut-short and byte-flipped models (``tflite_inputs``); loaded in a
  forked child by ``bench/fuzz_device.py``, since a runtime may crash on garbage.
"""

from __future__ import annotations

import copy
import io
import json
import random
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

import numpy as np
from hypothesis import strategies as st

from device.errors import DeviceError, FrameError, ManifestError
from device.frames import decode_image
from device.manifest import Preprocess, TensorSpec, load_manifest, parse_manifest
from device.preprocess import PIXEL_FORMATS, Preprocessor, preprocess

FUZZ_ROOT = Path("/fuzz/release")  # parse_manifest only names it in messages


def assert_one_line(e: BaseException, names: Optional[str] = None) -> str:
    """The error's message, checked: one line, no traceback, and naming ``names`` when given."""
    msg = str(e)
    assert isinstance(e, DeviceError), f"{type(e).__name__} is not a DeviceError: {msg[:300]}"
    assert msg and "\n" not in msg and "Traceback" not in msg, f"not one line: {msg[:500]!r}"
    assert len(msg) <= 4000, f"an error of {len(msg)} characters"
    if names is not None:
        assert names in msg, f"{msg[:300]!r} does not name {names!r}"
    return msg


# ------------------------------------------------------------------------------------ manifests

json_leaves = (
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12)
    | st.sampled_from(["int8", "uint8", "float32", "rgb", "bgr", "center", "none", "object", "area", "border",
                       "any", "light_on_dark", "dark_on_light", "grayscale", "../x", "/abs", "a\nb", ""])
)
json_values = st.recursive(
    json_leaves, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=8,
)


KNOWN_KEYS = ("schema", "model", "labels", "input", "preprocess", "variants", "golden", "shape", "dtype", "scale",
              "zero_point", "range", "size", "color", "channel_order", "crop", "resize", "contrast", "polarity",
              "normalize", "mean", "std", "path", "sha256", "bytes", "accuracy", "output", "count")


def _nodes(doc: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield path
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from _nodes(v, (*path, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from _nodes(v, (*path, i))


def _parent(doc: Any, path: tuple[Any, ...]) -> Any:
    for k in path[:-1]:
        doc = doc[k]
    return doc


@st.composite
def mutated_manifests(draw: st.DrawFn, base: dict[str, Any]) -> Any:
    """A valid manifest with 1-4 nodes replaced, deleted or added (any JSON value), or any JSON value."""
    if draw(st.integers(0, 19)) == 0:
        return draw(json_values)
    doc = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, 4))):
        path = draw(st.sampled_from(list(_nodes(doc))))
        op = draw(st.sampled_from(["replace", "replace", "delete", "add"]))
        if not path:
            if op == "replace":
                return draw(json_values)
            continue
        parent = _parent(doc, path)
        if op == "delete":
            del parent[path[-1]]
        elif op == "add" and isinstance(parent, dict):
            parent[draw(st.sampled_from(KNOWN_KEYS) | st.text(max_size=10))] = draw(json_values)
        else:
            parent[path[-1]] = draw(json_values)
    return doc


def check_manifest(doc: Any) -> str:
    """parse_manifest accepts it or refuses it in one line naming manifest.json."""
    try:
        parse_manifest(doc, FUZZ_ROOT)
    except ManifestError as e:
        assert_one_line(e, "manifest.json")
        return "refused"
    except Exception as e:
        assert_one_line(e)  # raises: not a DeviceError
    return "accepted"


@st.composite
def manifest_files(draw: st.DrawFn, base_text: str) -> bytes:
    """Bytes of a manifest.json: cut short, bytes flipped, deeply nested, huge numbers, not UTF-8, or empty."""
    data = base_text.encode()
    kind = draw(st.sampled_from(["cut", "flip", "deep", "number", "binary", "empty", "valid"]))
    if kind == "cut":
        return data[: draw(st.integers(0, len(data) - 1))]
    if kind == "flip":
        b = bytearray(data)
        for _ in range(draw(st.integers(1, 8))):
            b[draw(st.integers(0, len(b) - 1))] = draw(st.integers(0, 255))
        return bytes(b)
    if kind == "deep":
        n = draw(st.integers(1_000, 200_000))
        return b"[" * n + b"]" * n
    if kind == "number":
        return data.replace(b'"count": ', b'"count": 1' + b"0" * draw(st.integers(300, 5000)) + b"e999", 1)
    if kind == "binary":
        return draw(st.binary(max_size=512))
    if kind == "empty":
        return b""
    return data


def check_manifest_file(data: bytes, path: Path) -> str:
    """load_manifest reads it or refuses it in one line naming the file."""
    path.write_bytes(data)
    try:
        load_manifest(path)
    except ManifestError as e:
        assert_one_line(e, path.name)
        return "refused"
    except Exception as e:
        assert_one_line(e)
    return "accepted"


# ------------------------------------------------------------------------------------ preprocessing

SIZES = ((28, 28), (32, 32), (20, 36))
DTYPES = ("uint8",) * 6 + ("int8", "uint16", "float32", "float64", "bool", "int64")
SPECS = (None, ("int8", 1 / 255, -128), ("uint8", 1 / 255, 0), ("float32", None, None), ("int8", 0.5, 3))
CHANNELS = {"GRAY": 1, "RGB": 3, "BGR": 3, "RGBX": 4, "BGRX": 4}


@st.composite
def frames(draw: st.DrawFn) -> dict[str, Any]:
    """A frame as a camera or file may deliver it: mostly well formed, in any memory layout; sometimes not."""
    fmt = draw(st.sampled_from((*PIXEL_FORMATS, "HSV", "")))
    dtype = draw(st.sampled_from(DTYPES))
    h, w = draw(st.integers(0, 260)), draw(st.integers(0, 260))
    size: Any = None
    if draw(st.integers(0, 9)) == 0:  # any shape at all
        shape: tuple[int, ...] = tuple(draw(st.lists(st.integers(0, 40), max_size=4)))
    elif fmt == "YUV420":
        h -= h % 2
        w -= w % 2
        stride = w + draw(st.sampled_from([0, 0, 16, 64, 2]))  # always even, as the ISP pads it
        shape = (h * 3 // 2, stride)
        size = draw(st.sampled_from([(w, h), (w, h), None, (w + 2, h), (0, 0), (w, -h)]))
    elif fmt == "GRAY":
        shape = draw(st.sampled_from([(h, w), (h, w), (h, w, 1)]))
    else:
        shape = (h, w, CHANNELS.get(fmt, 3))
    steps = [draw(st.sampled_from([1, 1, 1, 2, -1, -2])) for _ in shape]
    seed = draw(st.integers(0, 2**32 - 1))
    base_shape = tuple(n * abs(s) for n, s in zip(shape, steps))
    rng = np.random.default_rng(seed)
    if dtype == "bool":
        base = rng.integers(0, 2, size=base_shape).astype(bool)
    elif dtype in ("float32", "float64"):
        base = rng.normal(100, 80, size=base_shape).astype(dtype)
    else:
        base = rng.integers(0, 256, size=base_shape).astype(dtype)
    if draw(st.integers(0, 3)) == 0 and base.size and dtype == "uint8":  # flat frames: no contrast at all
        base[...] = draw(st.integers(0, 255))
    pixels = base[tuple(slice(None, None, s) for s in steps)]
    if draw(st.booleans()) and pixels.ndim >= 2:
        pixels = np.asfortranarray(pixels)
    spec = draw(st.sampled_from(SPECS))
    return {"pixels": pixels, "fmt": fmt, "size": size, "contract_size": draw(st.sampled_from(SIZES)), "spec": spec,
            "invert": draw(st.sampled_from(["auto", "on", "off"]))}


def _well_formed(case: dict[str, Any]) -> bool:
    """Whether the frame is one the device promises to take: uint8, the format's shape, at least 1x1."""
    px, fmt, size = case["pixels"], case["fmt"], case["size"]
    if px.dtype != np.uint8 or fmt not in PIXEL_FORMATS:
        return False
    if fmt == "YUV420":
        if size is None:
            return False
        w, h = size
        return w >= 1 and h >= 1 and px.ndim == 2 and px.shape[0] == h * 3 // 2 and px.shape[1] >= w and h * 3 // 2 >= 1
    if fmt == "GRAY":
        ok = px.ndim == 2 or (px.ndim == 3 and px.shape[2] == 1)
    else:
        ok = px.ndim == 3 and px.shape[2] == CHANNELS[fmt]
    return ok and px.shape[0] >= 1 and px.shape[1] >= 1


def check_preprocess(case: dict[str, Any]) -> str:
    """Every path takes a well-formed frame, keeps the output in range and agrees; a bad frame is a FrameError."""
    oh, ow = case["contract_size"]
    contract = Preprocess(size=(oh, ow))
    spec = None
    if case["spec"] is not None:
        dtype, scale, zp = case["spec"]
        spec = TensorSpec((1, oh, ow, 1), dtype, scale, zp)
    px, fmt, size, invert = case["pixels"], case["fmt"], case["size"], case["invert"]
    p = Preprocessor(contract, spec, invert)
    lo, hi = contract.normalize.range or (0.0, 1.0)
    try:
        img = p.image(px, fmt, size)
    except FrameError as e:
        assert_one_line(e)
        assert not _well_formed(case), f"a well-formed frame was refused: {e}"
        if spec is not None:  # into must refuse what image refuses
            try:
                p.into(px, fmt, size, np.zeros(spec.shape, np.dtype(spec.dtype)))
            except FrameError as e2:
                assert_one_line(e2)
            else:
                raise AssertionError(f"into took a frame image refused: {e}") from None
        return "refused"
    except Exception as e:
        assert_one_line(e)
    assert _well_formed(case), "a malformed frame was taken"
    assert img.shape == (oh, ow) and img.dtype == np.float32, f"image() gave {img.dtype} {img.shape}"
    assert np.isfinite(img).all() and img.min() >= lo - 1e-6 and img.max() <= hi + 1e-6, \
        f"image() left [{lo}, {hi}]: {img.min()}..{img.max()}"
    if spec is not None:
        t = p.tensor(px, fmt, size)
        assert t.shape == spec.shape and t.dtype == np.dtype(spec.dtype), f"tensor() gave {t.dtype} {t.shape}"
        np.testing.assert_array_equal(preprocess(px, fmt, contract, spec, invert, size), t, err_msg="preprocess() vs tensor()")
        out = np.zeros(spec.shape, np.dtype(spec.dtype))
        p.into(px, fmt, size, out)
        if spec.quantized:
            worst = int(np.abs(out.astype(np.int64) - t.astype(np.int64)).max())
            assert worst <= 1, f"into() is {worst} counts from tensor() ({spec.dtype}, scale {spec.scale}, zp {spec.zero_point})"
        else:
            np.testing.assert_array_equal(out, t, err_msg="into() vs tensor()")
    return "accepted"


# ------------------------------------------------------------------------------------ frame files


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def png_claiming(width: int, height: int, color_type: int = 0) -> bytes:
    """A PNG whose header claims width x height, with one tiny IDAT (a decompression bomb's shape)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(b"\0" * 64)) + _png_chunk(b"IEND", b"")


def npy_claiming(shape: tuple[int, ...], dtype: str = "|u1") -> bytes:
    """A .npy header claiming ``shape`` followed by a few bytes of data."""
    header = repr({"descr": dtype, "fortran_order": False, "shape": shape}).encode()
    header += b" " * (63 - (len(header) + 10) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + b"\0" * 100


def _image_bytes(suffix: str, img: np.ndarray) -> bytes:
    if suffix == ".npy":
        buf = io.BytesIO()
        np.save(buf, img)
        return buf.getvalue()
    if suffix in (".pgm", ".ppm"):
        magic = b"P6" if img.ndim == 3 else b"P5"
        return magic + b"\n# fuzz\n%d %d\n255\n" % (img.shape[1], img.shape[0]) + img.tobytes()
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG" if suffix == ".png" else "JPEG")
    return buf.getvalue()


@st.composite
def image_files(draw: st.DrawFn) -> dict[str, Any]:
    """(suffix, bytes, kind): a small valid image, cut short, flipped, empty, random, or claiming a huge size."""
    suffix = draw(st.sampled_from([".png", ".jpg", ".pgm", ".ppm", ".npy"]))
    kind = draw(st.sampled_from(["valid", "cut", "cut", "flip", "empty", "random", "huge", "odd_dtype"]))
    h, w = draw(st.integers(1, 48)), draw(st.integers(1, 48))
    colour = suffix == ".ppm" or (suffix != ".pgm" and draw(st.booleans()))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    img = rng.integers(0, 256, size=(h, w, 3) if colour else (h, w)).astype(np.uint8)
    data = _image_bytes(suffix, img)
    if kind == "cut":
        data = data[: draw(st.integers(0, len(data) - 1))]
    elif kind == "flip":
        b = bytearray(data)
        for _ in range(draw(st.integers(1, 6))):
            b[draw(st.integers(0, len(b) - 1))] = draw(st.integers(0, 255))
        data = bytes(b)
    elif kind == "empty":
        data = b""
    elif kind == "random":
        data = draw(st.binary(min_size=1, max_size=300))
    elif kind == "huge":
        side = draw(st.sampled_from([6_000, 30_000, 100_000, 2**31 - 1]))
        if suffix in (".png", ".jpg"):
            data = png_claiming(side, side, draw(st.sampled_from([0, 2, 6])))
        elif suffix == ".npy":
            data = npy_claiming((side, side, 3) if colour else (side, side))
        else:
            data = (b"P6" if colour else b"P5") + b"\n%d %d\n255\n" % (side, side) + b"\0" * 64
    elif kind == "odd_dtype":
        if suffix == ".npy":
            data = npy_claiming((h, w), draw(st.sampled_from(["<u2", "<f4", "|b1", "<i8", "|O"])))
        elif suffix in (".pgm", ".ppm"):
            data = data.replace(b"\n255\n", b"\n65535\n", 1)
    return {"suffix": suffix, "data": data, "kind": kind}


def check_frame_file(case: dict[str, Any], folder: Path, index: int = 0) -> str:
    """decode_image gives uint8 pixels of a known format, or one FrameError line naming the file."""
    path = folder / f"case{index}{case['suffix']}"
    path.write_bytes(case["data"])
    try:
        pixels, fmt = decode_image(path)
    except FrameError as e:
        msg = assert_one_line(e, path.name)
        if case["kind"] == "huge":  # refused from the header, before any pixel is decoded
            assert "too large" in msg, msg
        assert case["kind"] != "valid", f"a valid image was refused: {msg}"
        return "refused"
    except Exception as e:
        assert_one_line(e)
    assert case["kind"] != "huge", "a huge image was decoded"
    assert pixels.dtype == np.uint8 and pixels.size > 0
    assert (fmt == "GRAY" and pixels.ndim == 2) or (fmt == "RGB" and pixels.ndim == 3 and pixels.shape[2] == 3)
    return "accepted"


# ------------------------------------------------------------------------------------ tflite


def tflite_inputs(models: list[bytes], rng: random.Random) -> Iterator[tuple[str, bytes]]:
    """(kind, bytes) for ever: random bytes (with and without the TFL3 identifier), cut-short and byte-flipped models."""
    while True:
        kind = rng.choice(["random", "random_tfl3", "cut", "flip"])
        base = rng.choice(models)
        if kind == "random":
            yield kind, rng.randbytes(rng.randrange(0, 4096))
        elif kind == "random_tfl3":
            b = bytearray(rng.randbytes(rng.randrange(8, 4096)))
            b[4:8] = b"TFL3"
            if rng.random() < 0.5:  # a plausible root offset too
                b[0:4] = (rng.randrange(2, max(3, len(b) // 4)) * 4).to_bytes(4, "little")
            yield kind, bytes(b)
        elif kind == "cut":
            yield kind, base[: rng.randrange(0, len(base))]
        else:
            b = bytearray(base)
            for _ in range(rng.randrange(1, 24)):
                b[rng.randrange(len(b))] = rng.randrange(256)
            yield kind, bytes(b)


def base_manifest(artifacts: Path) -> tuple[dict[str, Any], str]:
    """The host pipeline's own manifest, as a dict and as text: what mutations start from."""
    text = (artifacts / "manifest.json").read_text()
    return json.loads(text), text
