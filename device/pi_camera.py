"""The Raspberry Pi camera through picamera2: the only module that imports it, and lazily.

The camera is configured with ``create_video_configuration``: a ``main`` stream (RGB888,
which picamera2 lays out as B,G,R in memory) and a small ``lores`` YUV420 stream sized for
the model (``CameraConfig.for_contract``): the ISP scales for free. The classifier reads
lores for grey and RGB models alike: the Pi 4's ISP allows only YUV on lores (picamera2
refuses anything else there on VC4), and YUV420 is half the bytes of RGB888 on a Pi 5.

* A grey model reads the Y plane (``capture_array("lores")`` is [h*3/2, stride], rows
  padded: the stride is honoured, never assumed).
* An RGB model also reads the U and V planes that follow Y in the same buffer (h/2 rows of
  stride/2 bytes each); ``device.preprocess`` averages Y, U and V down to the model's grid
  and converts Y'CbCr to R,G,B there, in the model's channel order. There is no B,G,R
  byte order on this path; ``stream='main'`` would read main's RGB888, whose B,G,R order
  is named in the frame's format (``BGR``) and undone by the same conversion matrix.
* ``colour_space`` is requested (``sYCC`` by default: full range, BT.601, sRGB, as JPEG
  photos are encoded), because picamera2's video configuration would otherwise pick
  ``SMPTE170M`` (limited range 16..235) below 1280x720 and ``Rec709`` above. What the
  camera settled is read back from ``camera_configuration()["colour_space"]`` and travels
  with every frame, so the conversion uses the matrix and range actually delivered.

A frame that is kept (collected, ``device.collect``) is read with ``capture_arrays([stream,
"main"])`` instead, after ``want_extras()``: the classified stream, main and the request's
metadata from *one* request (``capture_metadata()`` would return the next frame's, and use it
up). Only those frames pay for main; every other frame reads one stream as before.

Timeouts are picamera2's own: ``capture_array(name, wait=timeout_s)``. In picamera2
(``picamera2/picamera2.py``, ``dispatch_functions``) ``wait=None`` means wait for ever, so a
stalled camera would hang the daemon; a number makes ``Job.get_result`` (``picamera2/job.py``,
a ``concurrent.futures.Future``) raise ``concurrent.futures.TimeoutError``, which becomes
``CameraTimeout`` so the daemon reopens the camera with backoff. The timed-out job stays in
picamera2's queue, and ``stop()`` would wait behind it for ever, so ``close()`` calls
``cancel_all_and_flush()`` first, as picamera2 documents for tidying up after a timeout.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import time
from typing import Any, Callable, Optional

from device.colour import ycbcr
from device.errors import CameraTimeout, FrameError, SourceError
from device.frames import DEFAULT_CAMERA, CameraConfig, CaptureExtras, Frame

# picamera2 format name → byte order in memory (picamera2's names follow DRM, little-endian).
MEMORY_ORDER = {"RGB888": "BGR", "BGR888": "RGB", "XRGB8888": "BGRX", "XBGR8888": "RGBX", "YUV420": "YUV420"}


def _default_factory() -> Any:
    try:
        from picamera2 import Picamera2
    except ImportError as e:
        raise SourceError(
            "picamera2 is not importable. On Raspberry Pi OS: `sudo apt install python3-picamera2` and create the "
            "virtualenv with --system-site-packages; elsewhere use --source synthetic or folder:DIR"
        ) from e
    return Picamera2()


# CameraConfig.colour_space (libcamera's names) → libcamera.ColorSpace's constructors.
_LIBCAMERA_COLOUR_SPACES = {"sYCC": "Sycc", "SMPTE170M": "Smpte170m", "Rec709": "Rec709", "Rec2020": "Rec2020"}


def _colour_space(name: str) -> Any:
    """A ``libcamera.ColorSpace`` where libcamera is importable (a Pi), else the name (the fake camera takes names)."""
    try:
        import libcamera
    except ImportError:
        return name
    return getattr(libcamera.ColorSpace, _LIBCAMERA_COLOUR_SPACES[name])()


def controls_of(metadata: Any) -> dict[str, Any]:
    """The camera controls of a request's metadata that fit a JSON line: numbers, flags, names and short tuples.

    picamera2's ``get_metadata()`` maps control names to ints, floats, bools, tuples (``ColourGains``,
    ``ScalerCrop``, ``ColourCorrectionMatrix``) and, on some sensors, large arrays (an IMX500's
    output tensors), which are left out.
    """
    out: dict[str, Any] = {}
    if not isinstance(metadata, dict):
        return out
    for key, value in metadata.items():
        if isinstance(value, (bool, int, float, str)):
            out[str(key)] = value
        elif isinstance(value, (list, tuple)) and len(value) <= 16 and all(isinstance(x, (int, float)) for x in value):
            out[str(key)] = list(value)
    return out


class PiCameraSource:
    """Frames from a Picamera2 (or anything with its API surface, e.g. FakePicamera2)."""

    def __init__(self, config: CameraConfig = DEFAULT_CAMERA, factory: Optional[Callable[[], Any]] = None):
        self.config = config
        self._factory = factory or _default_factory
        self._cam: Any = None
        self._seq = 0
        self._extras_next = False
        self.colour_space: Optional[str] = None
        self.open()

    def want_extras(self) -> None:
        """The next ``read`` also returns main and the request's metadata (``Frame.extras``)."""
        self._extras_next = True

    def open(self) -> None:
        """Create, configure and start the camera (closing any previous one first)."""
        self.close()
        try:
            cam = self._factory()
        except SourceError:
            raise
        except Exception as e:  # "Device or resource busy", no camera attached, ...
            raise SourceError(f"cannot open the camera: {e}. Is another process holding it? (`fuser /dev/video*`)") from e
        try:
            cfg = cam.create_video_configuration(
                main={"size": self.config.main_size, "format": "RGB888"},
                lores={"size": self.config.lores_size, "format": "YUV420"},
                buffer_count=4,
                controls={"FrameRate": self.config.frame_rate},
                colour_space=_colour_space(self.config.colour_space),
            )
            cam.configure(cfg)
            cam.start()
        except Exception as e:
            with contextlib.suppress(Exception):
                cam.close()
            raise SourceError(f"cannot configure/start the camera: {e}") from e
        self._cam = cam
        self._stream_cfg = self._configured()
        try:
            ycbcr(self.colour_space)
        except FrameError as e:
            self.close()
            raise SourceError(f"the camera settled on a colour space the preprocessing cannot convert: {e}") from e

    def _configured(self) -> dict[str, Any]:
        """Actual size and format per stream, as the camera settled them (it may align sizes)."""
        cfg: Any = None
        getter = getattr(self._cam, "camera_configuration", None)
        if callable(getter):
            cfg = getter()
        out = {}
        for name, default_size, default_fmt in (
            ("main", self.config.main_size, "RGB888"),
            ("lores", self.config.lores_size, "YUV420"),
        ):
            s = (cfg or {}).get(name) or {}
            out[name] = (tuple(s.get("size", default_size)), str(s.get("format", default_fmt)))
        settled = (cfg or {}).get("colour_space")
        self.colour_space = self.config.colour_space if settled is None else str(settled)  # libcamera's name
        return out

    def read(self) -> Frame:
        """Capture one frame of the configured stream; TimeoutError → CameraTimeout."""
        if self._cam is None:
            raise SourceError("the camera is closed; reopen it")
        name = self.config.stream
        size, fmt = self._stream_cfg[name]
        timeout_s = self.config.timeout_s
        extras: Optional[CaptureExtras] = None
        try:
            if self._extras_next:
                self._extras_next = False
                names = [name] if name == "main" else [name, "main"]
                arrays, metadata = self._cam.capture_arrays(names, wait=timeout_s)
                arr = arrays[0]
                main_fmt = MEMORY_ORDER.get(self._stream_cfg["main"][1], "BGR")
                extras = CaptureExtras(controls_of(metadata), arrays[1] if len(arrays) > 1 else None, main_fmt)
            else:
                arr = self._cam.capture_array(name, wait=timeout_s)
        except (TimeoutError, concurrent.futures.TimeoutError) as e:  # one class from Python 3.11, two before
            raise CameraTimeout(
                f"the camera delivered no {name} frame within {timeout_s:g} s (picamera2 capture timed out); "
                "check the ribbon cable if this repeats"
            ) from e
        except Exception as e:
            raise SourceError(f"camera capture failed: {type(e).__name__}: {e}") from e
        order = MEMORY_ORDER.get(fmt)
        if order is None:
            raise FrameError(f"unsupported {name} stream format {fmt!r}; configure RGB888 or YUV420")
        self._seq += 1
        return Frame(arr, order, self._seq, time.time_ns(), name=f"frame-{self._seq}", size=(int(size[0]), int(size[1])),
                     colour_space=self.colour_space if order == "YUV420" else None, extras=extras)

    def close(self) -> None:
        """Stop and close the camera so the next start does not find it busy; safe to call twice."""
        cam, self._cam = self._cam, None
        if cam is None:
            return
        flush = getattr(cam, "cancel_all_and_flush", None)
        if callable(flush):  # a timed-out capture left queued would make stop() wait behind it for ever
            with contextlib.suppress(Exception):
                flush()
        with contextlib.suppress(Exception):  # a camera that failed mid-stream may refuse stop(); close it anyway
            cam.stop()
        cam.close()
