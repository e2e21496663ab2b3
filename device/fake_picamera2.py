"""A stand-in for ``picamera2.Picamera2`` with its API surface and quirks, for tests and host runs.

Quirks reproduced:

- ``RGB888`` arrays are B,G,R in memory (``XBGR8888`` R,G,B,X); ``YUV420`` arrays are
  [height*3/2, stride] with padded rows (Y, then U and V at half resolution with half the
  stride), encoded in the configuration's colour space (``colour_space``, as picamera2's
  ``create_video_configuration`` picks it: SMPTE170M below 1280x720, Rec709 above, limited
  range; settled and reported back by ``camera_configuration()``); every stream is scaled from
  the same field of view (main's), so a lores stream of another aspect ratio is stretched; on
  the Pi 4 (``platform="vc4"``) lores must be YUV.
- A camera not closed stays busy for the next opener ("Device or resource busy").
- Captures are jobs, as in picamera2 (``picamera2/picamera2.py``: ``capture_array`` →
  ``dispatch_functions`` → ``Job.get_result(timeout)``, ``picamera2/job.py``): ``wait=None``
  (the default) or ``True`` waits for the next frame for ever; a number waits that many seconds
  and then raises ``concurrent.futures.TimeoutError`` (the builtin ``TimeoutError`` from Python
  3.11), *leaving the job queued*; ``wait=False`` (or 0, which picamera2 treats the same) returns
  the ``Job``. Frames go to queued jobs oldest first, so a timed-out job swallows the next frame.
- A camera that stalls (``stall_after`` frames, or ``stall()``: a loose ribbon cable, a wedged
  ISP) delivers nothing more until ``resume()``. While a timed-out capture is still queued,
  ``stop()`` (and so ``close()``, which calls it) waits behind it for ever, as picamera2's stop
  job does; ``cancel_all_and_flush()`` clears the queue first, which is what picamera2 says it
  is for ("tidying up after an operation has unexpectedly timed out ... so that the camera can
  be closed").
- A camera that is not started delivers no frames (a capture then waits, like a stalled one).
- Every request carries metadata, as picamera2's ``CompletedRequest.get_metadata()`` returns
  it (control name → value; tuples for ``ColourGains`` and ``ScalerCrop``): ``capture_metadata()``
  returns it for the next frame, ``capture_arrays(names)`` returns ``([arrays], metadata)`` of
  one request, so ``main`` and ``lores`` show the same moment.

Frames are rendered from the given images (grey garments [N, H, W] or colour photos
[N, H, W, 3], ``device.scene``) once per stream (on its first capture) and cycled, so timing
measures the consumer. With ``scene=FILE`` it shows ``device.tabletop``'s table-top scene
instead: the object the JSON file names, in a new pose every frame (rendered per request), the
file re-read when it changes, frames paced to the configured ``FrameRate`` as a sensor delivers
them, the exposure metadata following the scene's light, and the camera busy across processes
(an ``flock`` on ``FILE.lock``): one process at a time may open it, as with a real camera.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
from concurrent.futures import CancelledError, Future
from pathlib import Path
from typing import Any, Callable, Generic, Optional, TypeVar, Union

import numpy as np

from device import scene, tabletop
from device.colour import video_colour_space


class FakeColorSpace:
    """Stands in for ``libcamera.ColorSpace``: its ``str()`` is libcamera's name for it."""

    def __init__(self, name: str):
        self.name = name

    def __str__(self) -> str:
        return self.name

    __repr__ = __str__

T = TypeVar("T")
_log = logging.getLogger("picamera2.picamera2")  # picamera2's own logger name and messages


class Job(Generic[T]):
    """Mirrors ``picamera2.job.Job``: work for the camera's event loop, its result a Future."""

    def __init__(self, function: Callable[[], T], signal_function: Optional[Callable[[Job[T]], None]] = None):
        self._function = function
        self._signal_function = signal_function
        self._future: Future[T] = Future()
        self._future.set_running_or_notify_cancel()
        self.is_capture = True

    def execute(self) -> None:
        """Run on the event loop: complete the future with the function's result or exception."""
        try:
            self._future.set_result(self._function())
        except Exception as e:
            self._future.set_exception(e)
        if self._signal_function is not None:
            self._signal_function(self)

    def get_result(self, timeout: Optional[float] = None) -> T:
        """Block until done (``timeout=None``: for ever); ``TimeoutError`` after ``timeout`` seconds."""
        return self._future.result(timeout=timeout)

    def cancel(self) -> None:
        """Make waiters raise CancelledError (as picamera2's; the job stays queued unless flushed)."""
        if not self._future.done():
            self._future.set_exception(CancelledError())


class FakePicamera2:
    """Mirrors Picamera2: create_video_configuration, configure, start, capture_array, wait, stop, close."""

    _busy: set[int] = set()
    _busy_lock = threading.Lock()

    def __init__(
        self,
        camera_num: int = 0,
        images: Optional[np.ndarray] = None,
        stall_after: Optional[int] = None,
        seed: int = 0,
        platform: str = "vc4",
        scene_file: Optional[Path | str] = None,
    ):
        self._scene_lock: Optional[int] = None
        if scene_file is not None:  # the scene file stands for one camera, shared by every process that opens it
            fd = os.open(f"{scene_file}.lock", os.O_CREAT | os.O_RDWR | getattr(os, "O_CLOEXEC", 0), 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                raise RuntimeError("Failed to acquire camera: Device or resource busy") from None
            self._scene_lock = fd
        with FakePicamera2._busy_lock:
            if camera_num in FakePicamera2._busy:
                self._release_scene_lock()
                raise RuntimeError("Failed to acquire camera: Device or resource busy")
            FakePicamera2._busy.add(camera_num)
        self.camera_num = camera_num
        self.camera_properties = {"Model": "fake_imx708", "PixelArraySize": (4608, 2592), "Location": 2}
        self.sensor_resolution = (4608, 2592)
        self.images = images if images is not None else np.zeros((1, 28, 28), np.uint8)
        self.stall_after = stall_after  # frames delivered before the camera stalls (None: never)
        self.seed = seed
        self.platform = platform  # "vc4" (Pi 4: lores must be YUV) or "pisp" (Pi 5)
        self.started = False
        self.closed = False
        self.captures = 0  # frames delivered
        self.stalled = stall_after is not None and stall_after <= 0
        self.lock = threading.Lock()  # protects _job_list, as picamera2's does
        self._job_list: list[Job[Any]] = []
        self._config: Optional[dict[str, Any]] = None
        self._frames: dict[str, list[np.ndarray]] = {}
        self._streams: dict[str, dict[str, Any]] = {}
        self._cs_name = "SMPTE170M"
        self._fov: tuple[int, ...] = (1280, 720)
        self.scene_file = None if scene_file is None else Path(scene_file)
        self.scene: Optional[tabletop.Scene] = None
        self._scene_stamp: Optional[tuple[int, int]] = None
        self._frame_rate = 30.0
        self._next_due = 0.0
        self._started_ns = time.monotonic_ns()
        if self.scene_file is not None:
            self._reload_scene()

    def create_video_configuration(
        self,
        main: Optional[dict[str, Any]] = None,
        lores: Optional[dict[str, Any]] = None,
        raw: Optional[dict[str, Any]] = None,
        buffer_count: int = 6,
        controls: Optional[dict[str, Any]] = None,
        colour_space: Any = None,
        **_: Any,
    ) -> dict[str, Any]:
        """A configuration dict shaped like picamera2's (main defaults to 1280x720 XBGR8888; lores to main's size)."""
        m = {"format": "XBGR8888", "size": (1280, 720), **(main or {})}
        lo = None if lores is None else {"format": "YUV420", "size": m["size"], **lores}
        if colour_space is None:  # picamera2 chooses by the video resolution
            colour_space = video_colour_space(tuple(m["size"]))
        return {"use_case": "video", "buffer_count": buffer_count, "main": m, "lores": lo, "raw": raw,
                "controls": dict(controls or {}), "colour_space": FakeColorSpace(str(colour_space))}

    def configure(self, config: dict[str, Any]) -> None:
        """Accept a configuration: align sizes to even numbers, fill in strides, pre-render frames."""
        if self.started:
            raise RuntimeError("Camera must be stopped before configuring")
        cfg = {k: (dict(v) if isinstance(v, dict) else v) for k, v in config.items()}
        lores = cfg.get("lores")
        if self.platform == "vc4" and lores and lores.get("format") not in ("YUV420", "YVU420"):
            raise RuntimeError("lores stream must be YUV")  # picamera2's check on the Pi 4's ISP
        self._frames = {}
        self._streams = {}
        cs = cfg.get("colour_space")
        self._cs_name = "SMPTE170M" if cs is None else str(cs)
        cfg["colour_space"] = FakeColorSpace(self._cs_name)
        self._fov = tuple(int(x) & ~1 for x in cfg["main"]["size"])
        rate = (cfg.get("controls") or {}).get("FrameRate")
        self._frame_rate = float(rate) if rate else 30.0
        for name in ("main", "lores"):
            s = cfg.get(name)
            if not s:
                continue
            w, h = (int(s["size"][0]) & ~1, int(s["size"][1]) & ~1)
            s["size"] = (w, h)
            fmt = s["format"]
            if fmt == "YUV420":
                s["stride"] = scene.yuv420_stride(w)
            elif fmt in ("RGB888", "BGR888"):
                s["stride"] = w * 3
            elif fmt in ("XBGR8888", "XRGB8888"):
                s["stride"] = w * 4
            else:
                raise RuntimeError(f"FakePicamera2 renders RGB888, BGR888, XBGR8888, XRGB8888 and YUV420 only. Got: {fmt}")
            self._streams[name] = s
        if cfg.get("lores") and cfg.get("main"):
            lw, lh = cfg["lores"]["size"]
            mw, mh = cfg["main"]["size"]
            if lw > mw or lh > mh:
                raise RuntimeError("lores stream dimensions may not exceed main stream")
        self._config = cfg

    @staticmethod
    def _render(image: np.ndarray, w: int, h: int, rng: np.random.Generator, fov: tuple[int, ...]) -> np.ndarray:
        """One image as a w x h stream of the main stream's field of view sees it (grey photo or R,G,B)."""
        f = (int(fov[0]), int(fov[1]))
        return scene.render(image, w, h, rng, f) if np.ndim(image) == 3 else scene.render_gray(image, w, h, rng, f)

    def camera_configuration(self) -> Optional[dict[str, Any]]:
        """The configuration in force, with the strides filled in."""
        return self._config

    def start(self) -> None:
        """Start streaming."""
        if self._config is None:
            raise RuntimeError("Camera has not been configured")
        if self.closed:
            raise RuntimeError("Camera closed")
        self.started = True
        with self.lock:
            self._run_jobs()

    def _stream_frames(self, name: str) -> list[np.ndarray]:
        """A stream's frames, rendered once on its first capture (a 640x480 main costs ~0.16 s a garment)."""
        frames = self._frames.get(name)
        if frames is None:
            s = self._streams[name]
            (w, h), fmt = s["size"], s["format"]
            rng = np.random.default_rng([self.seed, len(name)])
            photos = [self._render(i, w, h, rng, self._fov) for i in self.images]
            if fmt == "YUV420":
                frames = [scene.to_yuv420(f, s["stride"], self._cs_name) for f in photos]
            else:
                bgr = [scene.to_bgr888(f) for f in photos]
                if fmt == "BGR888":
                    frames = [b[:, :, ::-1].copy() for b in bgr]  # R,G,B in memory
                elif fmt == "XBGR8888":  # R,G,B,X in memory
                    frames = [np.concatenate([b[:, :, ::-1], np.full((h, w, 1), 255, np.uint8)], axis=2) for b in bgr]
                elif fmt == "XRGB8888":  # B,G,R,X in memory
                    frames = [np.concatenate([b, np.full((h, w, 1), 255, np.uint8)], axis=2) for b in bgr]
                else:
                    frames = bgr  # capture_array copies padding away: contiguous [h, w, C]
            self._frames[name] = frames
        return frames

    # ------------------------------------------------------------------ jobs, as picamera2 runs them
    def _next_index(self) -> int:
        """Count one delivered frame (one request) and return its index; stall after ``stall_after``."""
        self.captures += 1
        if self.stall_after is not None and self.captures >= self.stall_after:
            self.stalled = True
        return self.captures - 1

    def _frame(self, name: str, index: int) -> np.ndarray:
        """Stream ``name`` of request ``index``, laid out as picamera2 returns it."""
        if self.scene_file is None:
            frames = self._stream_frames(name)
            return frames[index % len(frames)]
        s = self._streams[name]
        (w, h), fmt = s["size"], s["format"]
        photo = tabletop.render(self.scene or tabletop.Scene(), index, w, h, (int(self._fov[0]), int(self._fov[1])))
        if fmt == "YUV420":
            return scene.to_yuv420(photo, s["stride"], self._cs_name)
        bgr = scene.to_bgr888(photo)
        if fmt == "BGR888":
            return bgr[:, :, ::-1].copy()
        if fmt in ("XBGR8888", "XRGB8888"):
            body = bgr[:, :, ::-1] if fmt == "XBGR8888" else bgr
            return np.concatenate([body, np.full((h, w, 1), 255, np.uint8)], axis=2)
        return bgr

    def _reload_scene(self) -> None:
        """Re-read the scene file when it changed (a stat per request); a file that does not parse keeps the old scene."""
        assert self.scene_file is not None
        try:
            st = os.stat(self.scene_file)
        except OSError:
            return
        stamp = (st.st_mtime_ns, st.st_ino)
        if stamp == self._scene_stamp:
            return
        try:
            self.scene = tabletop.read_scene(self.scene_file)
        except ValueError as e:
            _log.warning("fake camera: %s; the scene stays as it was", e)
            return
        self._scene_stamp = stamp

    def _pace(self) -> None:
        """Scene mode: deliver frames at the configured frame rate, as a sensor does."""
        if self.scene_file is None:
            return
        now = time.monotonic()
        if now < self._next_due:
            time.sleep(self._next_due - now)
        self._next_due = max(now, self._next_due) + 1.0 / self._frame_rate

    def metadata(self, index: int) -> dict[str, Any]:
        """The metadata of request ``index``, shaped as picamera2's ``get_metadata()`` (control name → value)."""
        frame_us = round(1e6 / self._frame_rate)
        light: dict[str, Any] = {"Lux": 400.0, "ExposureTime": 10000, "AnalogueGain": 1.0, "DigitalGain": 1.0,
                                 "ColourGains": (1.9, 1.6), "ColourTemperature": 5000}
        if self.scene_file is not None:
            light = tabletop.lighting(tabletop.pose(self.scene or tabletop.Scene(), index), self._frame_rate)
        w, h = self.sensor_resolution
        return {"SensorTimestamp": self._started_ns + index * frame_us * 1000, "FrameDuration": frame_us,
                "ScalerCrop": (0, 0, w, h), "SensorBlackLevels": (4096, 4096, 4096, 4096), "AeLocked": False,
                "FocusFoM": 1000, **light}

    def _next_request(self, names: list[str]) -> tuple[list[np.ndarray], dict[str, Any]]:
        """One request: the next frame of every named stream (one moment), and its metadata."""
        for name in names:
            if name not in self._streams:
                raise RuntimeError(f"Stream {name!r} is not defined")
        if self.scene_file is not None:
            self._reload_scene()
        self._pace()
        index = self._next_index()
        return [self._frame(n, index) for n in names], self.metadata(index)

    def _next_frame(self, name: str) -> np.ndarray:
        return self._next_request([name])[0][0]

    def _run_jobs(self) -> None:
        """The event loop's turn (lock held): queued jobs run oldest first while frames arrive."""
        while self._job_list:
            job = self._job_list[0]
            if job.is_capture and (self.stalled or not self.started):
                return  # no frame arrives: this job, and everything behind it, waits
            self._job_list.pop(0)
            job.execute()

    def dispatch_functions(self, job: Job[Any], wait: Union[bool, float, None], immediate: bool = False) -> Any:
        """Queue a job and wait as picamera2 does: None/True for ever, a number that long, False not at all."""
        if wait is None:
            wait = job._signal_function is None
        timeout = None if wait is True else wait
        with self.lock:
            self._job_list.append(job)
            self._run_jobs()
        return job.get_result(timeout=timeout) if wait else job

    def capture_array(
        self, name: str = "main", wait: Union[bool, float, None] = None,
        signal_function: Optional[Callable[[Job[np.ndarray]], None]] = None,
    ) -> Any:
        """The next frame of a stream, as picamera2 lays it out in memory (or a Job; see the module doc)."""
        if name not in self._streams:
            raise RuntimeError(f"Stream {name!r} is not defined")
        return self.dispatch_functions(Job(lambda: self._next_frame(name), signal_function), wait)

    def capture_arrays(
        self, names: Optional[list[str]] = None, wait: Union[bool, float, None] = None,
        signal_function: Optional[Callable[[Job[Any]], None]] = None,
    ) -> Any:
        """``([array per name], metadata)`` of one request (picamera2's ``capture_arrays``), or a Job."""
        wanted = list(names or ["main"])
        for name in wanted:
            if name not in self._streams:
                raise RuntimeError(f"Stream {name!r} is not defined")
        return self.dispatch_functions(Job(lambda: self._next_request(wanted), signal_function), wait)

    def capture_metadata(self, wait: Union[bool, float, None] = None,
                         signal_function: Optional[Callable[[Job[Any]], None]] = None) -> Any:
        """The metadata of the next frame (picamera2's ``capture_metadata``: it uses up that frame), or a Job."""
        first = next(iter(self._streams), "main")
        return self.dispatch_functions(Job(lambda: self._next_request([first])[1], signal_function), wait)

    def wait(self, job: Job[T], timeout: Optional[float] = None) -> T:
        """Wait for a job from ``capture_array(wait=False)``; picamera2's ``Picamera2.wait``."""
        return job.get_result(timeout=timeout)

    def cancel_all_and_flush(self) -> None:
        """Cancel every queued job and clear the queue (picamera2's tidy-up after a timeout)."""
        with self.lock:
            for job in self._job_list:
                job.cancel()
            self._job_list = []

    # ------------------------------------------------------------------ faults
    def stall(self) -> None:
        """Stop delivering frames (a loose cable): queued and new captures wait."""
        with self.lock:
            self.stalled = True

    def resume(self) -> None:
        """Deliver frames again; queued jobs get them first, oldest first."""
        with self.lock:
            self.stalled = False
            self.stall_after = None
            self._run_jobs()

    @property
    def pending_jobs(self) -> int:
        """Jobs queued and not yet run (a timed-out capture stays here until flushed)."""
        with self.lock:
            return len(self._job_list)

    # ------------------------------------------------------------------ stop and close
    def _stop_now(self) -> None:
        self.started = False

    def stop(self) -> None:
        """Stop streaming: a stop job queued behind any pending capture, waited for as picamera2 does."""
        if not self.started:
            return
        job: Job[None] = Job(self._stop_now)
        job.is_capture = False
        self.dispatch_functions(job, wait=True, immediate=True)

    def close(self) -> None:
        """Stop, then release the camera for the next opener."""
        if self.closed:
            return
        self.stop()
        self.closed = True
        with FakePicamera2._busy_lock:
            FakePicamera2._busy.discard(self.camera_num)
        self._release_scene_lock()
        _log.info("Camera closed successfully.")

    def _release_scene_lock(self) -> None:
        fd, self._scene_lock = self._scene_lock, None
        if fd is not None:
            os.close(fd)  # drops the flock: the next process may open the camera
