"""Frames and where they come from: the FrameSource interface, a folder of images, a synthetic camera.

A ``Frame`` holds pixels exactly as the source delivered them plus a pixel format naming the
byte order in memory (``GRAY``, ``RGB``, ``BGR``, ``BGRX``, ``YUV420``) and, for YUV, the
Y'CbCr colour space it was encoded in. Conversion happens once, in ``device.preprocess``.
The real camera lives in ``device.pi_camera``; ``CameraConfig.for_contract`` is where the
camera's streams are chosen for a model.
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Protocol, runtime_checkable

import numpy as np

from device import scene
from device.colour import YUV_COLOUR_SPACES
from device.errors import FrameError, SourceError, one_line
from device.manifest import Preprocess

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".pgm", ".ppm", ".npy")


class EndOfSource(Exception):
    """A finite source (a folder read once) has no more frames."""


@dataclass(frozen=True)
class CaptureExtras:
    """What a camera delivered beside the classified stream, for a frame that is kept (``ExtrasSource``).

    ``metadata`` is the request's own (picamera2's ``get_metadata()``: ExposureTime, AnalogueGain,
    ColourGains, Lux, ...); ``main`` the same request's main stream when the classifier reads lores.
    """

    metadata: dict[str, Any]
    main: Optional[np.ndarray] = None
    main_fmt: str = "BGR"


@dataclass(frozen=True)
class Frame:
    """One image as delivered: pixels, their memory layout, when and which frame it was."""

    pixels: np.ndarray
    fmt: str
    seq: int
    timestamp_ns: int
    name: str = ""
    label: Optional[int] = None
    size: Optional[tuple[int, int]] = None  # (width, height) for YUV420, whose rows are padded
    colour_space: Optional[str] = None  # YUV420: libcamera's name (device.colour); None: sYCC, what the daemon requests
    extras: Optional[CaptureExtras] = None  # only for a frame asked for with ExtrasSource.want_extras


class FrameSource(Protocol):
    """Anything that yields frames one at a time."""

    def read(self) -> Frame:
        """The next frame; raises EndOfSource, SourceError (CameraTimeout) or FrameError."""
        ...

    def close(self) -> None:
        """Release the device or files; safe to call twice."""
        ...


@runtime_checkable
class ExtrasSource(Protocol):
    """A source that can deliver more than the classified stream for one frame (a camera: main + metadata)."""

    def want_extras(self) -> None:
        """The next ``read`` also fills ``Frame.extras``."""
        ...


ISP_MIN_SIZE = 64  # bcm2835-isp MIN_DIM: the Pi 4 ISP clamps smaller outputs up to this


@dataclass(frozen=True)
class CameraConfig:
    """How the daemon configures a camera: a ``main`` stream (RGB888) and a small ``lores`` YUV420 stream.

    The classifier reads the lores stream, so the ISP does the scaling and the CPU touches a
    few thousand pixels per frame: the Y plane for a grey model; Y and the half-resolution U
    and V planes for an RGB model (converted to R,G,B at the model's size, ``device.colour``).
    The lores stream is YUV420 for both because the Pi 4's ISP (VC4) allows nothing else on
    lores (picamera2 refuses: "lores stream must be YUV"); the Pi 5 would allow RGB888 there,
    but YUV420 is half the bytes and one code path. ``stream='main'`` reads main's B,G,R
    instead (the whole frame through the CPU: for comparison, or where lores cannot be used).

    ``colour_space`` is requested from picamera2 (``sYCC``: BT.601 matrix, full range, sRGB
    primaries and transfer, as JPEG photos are encoded; picamera2's preview and still
    configurations use it too, its video configuration would pick ``SMPTE170M``, limited
    range). Frames carry the colour space the camera actually settled, and the preprocessing
    converts with that one.

    ``for_contract`` sizes lores for a model: a whole multiple k of the model's grid, so block
    sums need no resample. 112x84 is what a 28x28 grey model gets: main's 4:3 aspect, its
    centred 84x84 square exactly 3x3 pixels per model pixel, and the smallest such size the
    Pi 4's ISP accepts: the bcm2835-isp driver clamps every output to at least 64x64
    (``MIN_DIM``), so a 2x2-block lores of 56 rows would come back 64 rows high and lose its
    exact block grid. Widths only need to be even (the driver pads the row stride to 64 bytes
    itself).
    """

    main_size: tuple[int, int] = (640, 480)
    lores_size: tuple[int, int] = (112, 84)
    stream: str = "lores"  # which stream the classifier reads: lores (YUV420) or main (RGB888)
    frame_rate: float = 30.0
    timeout_s: float = 2.0
    colour_space: str = "sYCC"  # requested from the camera (what the frames carry is read back)

    def __post_init__(self) -> None:
        if self.stream not in ("lores", "main"):
            raise ValueError(f"stream must be 'lores' or 'main'. Got: {self.stream!r}")
        for what, (w, h) in (("main_size", self.main_size), ("lores_size", self.lores_size)):
            if w <= 0 or h <= 0 or w % 2 or h % 2:
                raise ValueError(f"{what} must be positive and even (YUV420 needs it). Got: {w}x{h}")
        if min(self.lores_size) < ISP_MIN_SIZE:
            raise ValueError(
                f"lores_size must be at least {ISP_MIN_SIZE}x{ISP_MIN_SIZE} (the Pi ISP's smallest output). "
                f"Got: {self.lores_size[0]}x{self.lores_size[1]}; the default 112x84 is the smallest exact 3x3 grid for 28x28"
            )
        if self.lores_size[0] > self.main_size[0] or self.lores_size[1] > self.main_size[1]:
            raise ValueError(f"lores {self.lores_size} must not be larger than main {self.main_size}")
        if not (0 < self.timeout_s < float("inf")):  # picamera2 reads wait=0 as "do not wait" and None as "for ever"
            raise ValueError(f"timeout_s must be a positive number of seconds. Got: {self.timeout_s!r}")
        if not (0 < self.frame_rate < float("inf")):
            raise ValueError(f"frame_rate must be a positive number of frames per second. Got: {self.frame_rate!r}")
        if self.colour_space not in YUV_COLOUR_SPACES:
            raise ValueError(f"colour_space must be one of {', '.join(YUV_COLOUR_SPACES)}. Got: {self.colour_space!r}")

    @classmethod
    def for_contract(
        cls,
        contract: Preprocess,
        main_size: tuple[int, int] = (640, 480),
        lores_size: Optional[tuple[int, int]] = None,
        stream: str = "lores",
        frame_rate: float = 30.0,
        timeout_s: float = 2.0,
        colour_space: str = "sYCC",
    ) -> CameraConfig:
        """The camera configuration the daemon uses for a model (``lores_size`` overrides the choice)."""
        return cls(main_size, lores_size or lores_for(contract, main_size), stream, frame_rate, timeout_s, colour_space)

    def with_stream(self, stream: str) -> CameraConfig:
        """The same configuration reading another stream."""
        return dataclasses.replace(self, stream=stream)


def lores_for(contract: Preprocess, main_size: tuple[int, int] = (640, 480)) -> tuple[int, int]:
    """The lores (width, height) that puts a whole number k of pixels on each model pixel.

    ``crop`` center / object: main's aspect ratio, so the centred window of the model's aspect
    is exactly k*H x k*W (the ISP keeps the field of view; an odd width is rounded up to even,
    a stretch below 1 %). ``crop`` none: exactly k*W x k*H, which the ISP stretches from the
    whole field of view, as the contract asks. k is the smallest that gives the ISP's 64-pixel
    minimum, at least 2 for an RGB model (its U and V planes are half resolution: k = 2 puts
    one chroma sample on each model pixel) and at least 2 for ``object`` (the box is smaller
    than the frame), else 1 if only that fits. When no whole multiple fits inside main,
    lores is main's size and the preprocessing area-resamples it.
    """
    h_m, w_m = (int(x) for x in contract.size)
    mw, mh = main_size
    k_min = 2 if contract.color == "rgb" or contract.crop == "object" else 1

    def size(k: int) -> tuple[int, int]:
        if contract.crop == "none":
            return k * w_m, k * h_m
        if mw * h_m >= mh * w_m:  # main is wider than the model: the window is main's height
            h = k * h_m
            w = -(-h * mw // mh)
            return w + w % 2, h
        w = k * w_m
        h = -(-w * mh // mw)
        return w, h + h % 2

    def usable(w: int, h: int) -> bool:
        return w <= mw and h <= mh and w % 2 == 0 and h % 2 == 0 and min(w, h) >= ISP_MIN_SIZE

    for k in range(k_min, 4097):  # the smallest k >= k_min that the ISP gives
        w, h = size(k)
        if w > mw or h > mh:
            break
        if usable(w, h):
            return w, h
    for k in range(k_min - 1, 0, -1):  # else a smaller one (an RGB model's chroma is then upsampled)
        if usable(*size(k)):
            return size(k)
    return mw, mh  # no whole multiple fits: main's own size, area-resampled by the preprocessing


DEFAULT_CAMERA = CameraConfig()


def parse_size(text: str) -> tuple[int, int]:
    """'640x480' → (640, 480)."""
    try:
        w, h = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"a size is WIDTHxHEIGHT, e.g. 640x480. Got: {text!r}") from None
    return w, h


# ---------------------------------------------------------------------------- folder


# The largest image the folder source decodes: twice the Pi HQ camera's 12.3 MP, 75 MB as RGB.
# Checked from the header, before any pixel is decoded (Pillow's own limit, 89 MP with only a
# warning up to 179 MP, would let a 512 MB Pi run out of memory first).
MAX_IMAGE_PIXELS = 25_000_000
MAX_IMAGE_FILE_BYTES = 3 * MAX_IMAGE_PIXELS + (1 << 20)  # an uncompressed RGB file of that size, plus headers
PIL_FORMATS = ("PNG", "JPEG", "MPO")  # MPO: how Pillow names some cameras' JPEGs; nothing else is decoded


def _check_dims(name: str, width: int, height: int) -> None:
    if width <= 0 or height <= 0:
        raise FrameError(f"{name}: the header says {width}x{height} pixels; an image needs at least 1x1; skipped")
    if width * height > MAX_IMAGE_PIXELS:
        raise FrameError(
            f"{name}: {width}x{height} is too large to decode ({width * height / 1e6:.0f} MP, the limit is "
            f"{MAX_IMAGE_PIXELS / 1e6:.0f} MP); resize it first; skipped"
        )


def _read_pnm(path: Path) -> np.ndarray:
    """Binary 8-bit PGM (P5) or PPM (P6); the header is checked before the pixels are read."""
    with open(path, "rb") as f:
        head = f.read(4096)
        parts: list[bytes] = []
        pos = 0
        while len(parts) < 4:  # magic, width, height, maxval; '#' comments allowed
            while pos < len(head) and head[pos : pos + 1].isspace():
                pos += 1
            if head[pos : pos + 1] == b"#":
                nl = head.find(b"\n", pos)
                if nl < 0:
                    raise ValueError("the header ends inside a comment (or its comments pass 4 KiB)")
                pos = nl
                continue
            end = pos
            while end < len(head) and not head[end : end + 1].isspace():
                end += 1
            if end == pos or end >= len(head):
                raise ValueError(f"the header is cut short after {len(parts)} of 4 fields (magic, width, height, maxval)")
            parts.append(head[pos:end])
            pos = end
        magic = parts[0]
        if magic not in (b"P5", b"P6") or not all(p.isdigit() for p in parts[1:]):
            raise ValueError(f"only binary 8-bit PGM (P5) / PPM (P6) are read. Got: header {b' '.join(parts)[:40]!r}")
        w, h, maxval = int(parts[1]), int(parts[2]), int(parts[3])
        if not 0 < maxval <= 255:
            raise ValueError(f"only 8-bit PGM/PPM are read (maxval 1..255). Got: maxval {maxval}")
        channels = 3 if magic == b"P6" else 1
        _check_dims(path.name, w, h)
        need = w * h * channels
        f.seek(pos + 1)  # exactly one whitespace byte ends the header
        data = f.read(need)
    if len(data) < need:
        raise ValueError(f"truncated: {w}x{h} needs {need} bytes of pixels, the file has {len(data)}")
    pix = np.frombuffer(data, np.uint8)
    return pix.reshape((h, w, 3) if channels == 3 else (h, w))


def _read_npy(path: Path) -> np.ndarray:
    """A .npy array; its header (shape, dtype) is checked before any data is read."""
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise ValueError(f".npy format version {version[0]}.{version[1]} is not read; save it with numpy.save")
        if dtype != np.uint8:
            raise FrameError(f"{path.name}: expected 8-bit pixels. Got: dtype {dtype}; skipped")
        if len(shape) not in (2, 3) or (len(shape) == 3 and shape[2] != 3):
            raise FrameError(f"{path.name}: expected a grey [H,W] or colour [H,W,3] image. Got: shape {shape}; skipped")
        _check_dims(path.name, int(shape[1]), int(shape[0]))
        need = int(np.prod(shape))
        data = f.read(need)
    if len(data) < need:
        raise ValueError(f"truncated: shape {shape} needs {need} bytes of pixels, the file has {len(data)}")
    return np.frombuffer(data, np.uint8).reshape(shape, order="F" if fortran else "C")


def _read_pil(path: Path) -> np.ndarray:
    try:
        from PIL import Image
    except ImportError:
        raise SourceError(
            f"{path.name}: reading PNG/JPEG needs Pillow, which is not installed. "
            "`pip install pillow`, or convert the images to .pgm/.ppm/.npy"
        ) from None
    with warnings.catch_warnings():  # our own limit is lower and says so in one line
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            im = Image.open(path, formats=PIL_FORMATS)
        except Image.DecompressionBombError:
            raise FrameError(f"{path.name}: too large to decode (over {MAX_IMAGE_PIXELS / 1e6:.0f} MP); skipped") from None
    with im:
        _check_dims(path.name, *im.size)
        return np.asarray(im.convert("L" if im.mode in ("1", "L", "LA", "I", "I;16") else "RGB"))


def decode_image(path: Path) -> tuple[np.ndarray, str]:
    """Pixels and pixel format of an image file; PNG/JPEG need Pillow (imported lazily).

    Every file that cannot be used (empty, truncated, corrupt, too large, another format) raises
    a one-line FrameError naming it; huge images are refused from their header, before decoding.
    """
    suffix = path.suffix.lower()
    try:
        size = path.stat().st_size
        if size == 0:
            raise FrameError(f"{path.name}: empty file (0 bytes); skipped")
        if size > MAX_IMAGE_FILE_BYTES:
            raise FrameError(f"{path.name}: {size / 1e6:.0f} MB is too large for an image this daemon decodes "
                             f"(limit {MAX_IMAGE_FILE_BYTES / 1e6:.0f} MB); skipped")
        if suffix == ".npy":
            arr = _read_npy(path)
        elif suffix in (".pgm", ".ppm"):
            arr = _read_pnm(path)
        else:
            arr = _read_pil(path)
    except (SourceError, FrameError):
        raise
    except Exception as e:
        raise FrameError(f"{path.name}: cannot decode ({type(e).__name__}: {one_line(str(e))}); skipped") from e
    if arr.dtype != np.uint8:
        raise FrameError(f"{path.name}: expected 8-bit pixels. Got: dtype {arr.dtype}; skipped")
    if arr.size == 0:
        raise FrameError(f"{path.name}: the image has no pixels (shape {arr.shape}); skipped")
    if arr.ndim == 2:
        return arr, "GRAY"
    if arr.ndim == 3 and arr.shape[2] == 3:
        return arr, "RGB"
    raise FrameError(f"{path.name}: expected a grey [H,W] or colour [H,W,3] image. Got: shape {arr.shape}; skipped")


class FolderSource:
    """Images from a folder (PNG, JPEG, PGM/PPM, .npy), in name order, once or looping."""

    def __init__(self, folder: Path | str, loop: bool = False):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise SourceError(f"folder source {self.folder} does not exist or is not a folder")
        self.files = sorted(p for p in self.folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not self.files:
            raise SourceError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {self.folder}")
        self.loop = loop
        self._next = 0
        self._seq = 0

    def read(self) -> Frame:
        """The next image; a file that cannot be decoded raises FrameError and is skipped."""
        if self._next >= len(self.files):
            if not self.loop:
                raise EndOfSource(str(self.folder))
            self._next = 0
        path = self.files[self._next]
        self._next += 1
        self._seq += 1
        pixels, fmt = decode_image(path)
        return Frame(pixels, fmt, self._seq, time.time_ns(), name=path.name)

    def close(self) -> None:
        """Nothing to release."""


# ---------------------------------------------------------------------------- synthetic


def read_golden(path: Path | str, limit: Optional[int] = None) -> tuple[np.ndarray, np.ndarray]:
    """The golden set's first ``limit`` images and labels (all with None); a one-line SourceError when it cannot be read."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return z["images"][:limit], z["labels"][:limit]
    except (OSError, KeyError, ValueError) as e:
        raise SourceError(f"cannot read golden set {path}: {e}. Re-run the host pipeline to write it") from e


class SyntheticSource:
    """Test images rendered as camera frames with known labels, each rendered when first read, then cycled.

    Frames arrive the way the daemon configures the real camera (``device.scene``): the lores
    stream as padded YUV420 buffers in picamera2's colour space (default), or the main stream
    as B,G,R arrays (``stream='main'``). Grey images [N, H, W] are garments printed on paper;
    colour images [N, H, W, 3] (R, G, B) are photos, rendered in colour.

    Rendering on first read lets the daemon serve (and tell systemd READY=1) after one frame,
    not after the whole set (minutes on an emulated Pi); the first pass's capture stage then
    includes the rendering. ``prerender(n)`` renders ahead, as the bench does before timing.
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: Optional[Sequence[int]] = None,
        config: CameraConfig = DEFAULT_CAMERA,
        loop: bool = True,
        seed: int = 0,
        fps: float = 0.0,
    ):
        images = np.asarray(images)
        colour = images.ndim == 4 and images.shape[3] == 3
        if not (images.ndim == 3 or colour) or images.dtype != np.uint8 or len(images) == 0:
            raise SourceError(
                f"synthetic source needs uint8 images [N, H, W] or [N, H, W, 3], N > 0. Got: {images.dtype} {images.shape}"
            )
        self.config = config
        self.labels = None if labels is None else [int(x) for x in labels]
        self.loop = loop
        self.fps = fps
        self._images, self._colour = images, colour
        self._rng = np.random.default_rng(seed)  # drawn in image order: frame i is the same however far ahead it is rendered
        self.frames: list[np.ndarray] = []
        self.colour_space: Optional[str] = None
        if config.stream == "lores":
            self.fmt, self.size = "YUV420", config.lores_size
            self.colour_space = config.colour_space
        else:
            self.fmt, self.size = "BGR", config.main_size
        self._names = [f"synthetic-{i}" for i in range(len(images))]
        self._seq = 0
        self._next_due_ns = 0

    def prerender(self, count: Optional[int] = None) -> None:
        """Render the first ``count`` frames (all with None) now, so later reads only hand them out."""
        want = len(self._images) if count is None else min(max(count, 0), len(self._images))
        fov = self.config.main_size
        w, h = self.size
        while len(self.frames) < want:
            img = self._images[len(self.frames)]
            photo = scene.render(img, w, h, self._rng, fov) if self._colour else scene.render_gray(img, w, h, self._rng, fov)
            if self.fmt == "YUV420":
                self.frames.append(scene.to_yuv420(photo, scene.yuv420_stride(w), self.colour_space))
            else:
                self.frames.append(scene.to_bgr888(photo))

    @classmethod
    def from_golden(cls, path: Path | str, config: CameraConfig = DEFAULT_CAMERA, limit: Optional[int] = None, **kw: object) -> SyntheticSource:
        """Render the golden set's images (the first official test images) with their labels."""
        images, labels = read_golden(path, limit)
        return cls(images, labels, config, **kw)  # type: ignore[arg-type]

    def __len__(self) -> int:
        return len(self._images)

    def read(self) -> Frame:
        """The next frame (rendered on its first read; paced to ``fps`` when set)."""
        n = len(self._images)
        if self._seq >= n and not self.loop:
            raise EndOfSource("synthetic")
        if self.fps > 0:
            now = time.monotonic_ns()
            if now < self._next_due_ns:
                time.sleep((self._next_due_ns - now) / 1e9)
            self._next_due_ns = max(now, self._next_due_ns) + int(1e9 / self.fps)
        i = self._seq % n
        if i >= len(self.frames):  # first pass only: later passes just hand out the rendered frame
            self.prerender(i + 1)
        self._seq = seq = self._seq + 1
        label = None if self.labels is None else self.labels[i]
        return Frame(self.frames[i], self.fmt, seq, time.time_ns(), self._names[i], label, self.size, self.colour_space)

    def close(self) -> None:
        """Nothing to release."""
