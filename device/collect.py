"""Collecting labelled frames for the next model: N frames, one every S seconds, into ``<data>/<label>/``.

**Who owns the camera.** A Pi camera opens in one process at a time ("Device or resource
busy"), so collection happens where the camera already is:

* the **daemon**, when it runs, collects when asked on its loopback HTTP (``POST /collect``;
  ``deploy collect`` asks through SSH). It keeps classifying: the frames it collects are frames
  of its own pipeline, taken as they pass (``Collector.due`` / ``offer``); only those frames are
  read with main and the request's metadata (``device.pi_camera``), and pictures are encoded
  and written by this module's thread, never in the pipeline's;
* **one-shot** ``python -m device collect`` opens the camera itself when no daemon runs, with
  the same camera configuration (``CameraConfig.for_contract`` of the manifest), and the same
  preprocessing for the model view.

Each collected frame gets two pictures and an index line (``device.framestore``): the frame
(main when the camera gives it, downscaled to ``view_px``) and what the model saw, at model
size (``device.views``). The line holds the time, both files' sha256 and bytes, the source, the
camera controls of that request (ExposureTime, AnalogueGain, ColourGains, Lux, ...) and, from
the daemon, its prediction. Writing is paced by the disk: while the writer is behind, no new
frame is taken; a job stops as ``failed`` after ``MAX_FAILURES_IN_A_ROW`` failed writes (a full
card), with the error.
"""

from __future__ import annotations

import logging
import math
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from device.frames import Frame
from device.framestore import FrameStore, Picture
from device.labels import check_label
from device.manifest import Preprocess, TensorSpec
from device.pipeline import Result
from device.views import VIEW_MAX_PX, frame_view, model_view, pixels_view, png

log = logging.getLogger("edgekit.collect")

MAX_COUNT = 100_000
MAX_INTERVAL_S = 3600.0
VIEW_PX_RANGE = (16, 4096)
MAX_FAILURES_IN_A_ROW = 3
QUEUE_FRAMES = 4  # frames waiting for the writer; while it is full no new frame is taken
STATES = ("idle", "running", "done", "failed", "cancelled")


class CollectBusy(Exception):
    """A collection job is already running (one at a time: they would share the camera's frames)."""


@dataclass(frozen=True)
class CollectRequest:
    """One collection job: ``count`` frames of ``label``, one every ``interval_s`` seconds (frame pictures ``view_px`` long)."""

    label: str
    count: int
    interval_s: float = 0.5
    view_px: Optional[int] = None  # None: the collector's own

    def __post_init__(self) -> None:
        check_label(self.label)
        lo, hi = VIEW_PX_RANGE
        if self.view_px is not None and (isinstance(self.view_px, bool) or not isinstance(self.view_px, int)
                                         or not lo <= self.view_px <= hi):
            raise ValueError(f"view_px must be a whole number of pixels from {lo} to {hi}. Got: {self.view_px!r}")
        if not isinstance(self.count, int) or isinstance(self.count, bool) or not 1 <= self.count <= MAX_COUNT:
            raise ValueError(f"count must be a whole number from 1 to {MAX_COUNT}. Got: {self.count!r}")
        if not (isinstance(self.interval_s, (int, float)) and 0.0 <= float(self.interval_s) <= MAX_INTERVAL_S):
            raise ValueError(f"interval_s must be a number of seconds from 0 to {MAX_INTERVAL_S:g}. Got: {self.interval_s!r}")

    @classmethod
    def from_json(cls, doc: Any) -> CollectRequest:
        """A request from ``{"label": ..., "count": N, "interval_s": S}``; ValueError in one line otherwise."""
        if not isinstance(doc, dict):
            raise ValueError(f'a collect request is a JSON object {{"label": ..., "count": N, "interval_s": S}}. Got: {type(doc).__name__}')
        unknown = sorted(set(doc) - {"label", "count", "interval_s", "view_px"})
        if unknown:
            raise ValueError(f"unknown field(s) in the collect request: {', '.join(unknown)}; it takes label, count, "
                             "interval_s, view_px")
        if not isinstance(doc.get("label"), str):
            raise ValueError(f"label must be a string. Got: {doc.get('label')!r}")
        interval = doc.get("interval_s", 0.5)
        if isinstance(interval, bool) or not isinstance(interval, (int, float)) or not math.isfinite(float(interval)):
            raise ValueError(f"interval_s must be a number of seconds. Got: {interval!r}")
        return cls(doc["label"], doc.get("count"), float(interval), doc.get("view_px"))  # type: ignore[arg-type]


def frame_stem(frame: Frame, host: str) -> str:
    """A file name stem unique across runs and devices: host, capture time to the microsecond, sequence number."""
    t = frame.timestamp_ns / 1e9
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(t)) + f"-{int(frame.timestamp_ns // 1000 % 1_000_000):06d}"
    return f"{host}-{stamp}-{frame.seq:06d}"


def device_name() -> str:
    """This device's host name, reduced to characters safe in a file name."""
    name = "".join(c if (c.isascii() and c.isalnum()) or c in "-_" else "-" for c in socket.gethostname()).lstrip("-_")[:40]
    return name or "device"


def kept_record(frame: Frame, info: dict[str, Any], result: Optional[Result]) -> dict[str, Any]:
    """The index line's facts about one frame (the files are added by the store)."""
    rec: dict[str, Any] = {
        "time": round(frame.timestamp_ns / 1e9, 6),
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(frame.timestamp_ns / 1e9))
        + f".{frame.timestamp_ns // 1000 % 1_000_000:06d}Z",
        "seq": frame.seq,
        "frame": frame.name,
        **info,
        "stream": {"format": frame.fmt, "size": list(frame.size) if frame.size else list(frame.pixels.shape[1::-1]),
                   "colour_space": frame.colour_space},
    }
    if frame.extras is not None:
        rec["camera"] = dict(frame.extras.metadata)
    if result is not None:
        rec["prediction"] = [{"label": p.label, "score": round(p.score, 5)} for p in result.top]
    return rec


def pictures_of(frame: Frame, tensor: np.ndarray, contract: Preprocess, spec: TensorSpec,
                view_px: int = VIEW_MAX_PX) -> list[Picture]:
    """The frame view (main when the camera gave it) and the model view of one frame, as PNG pictures."""
    extras = frame.extras
    if extras is not None and extras.main is not None:
        view = pixels_view(extras.main, extras.main_fmt, max_px=view_px)
    else:
        view = frame_view(frame, view_px)
    model = model_view(tensor, contract, spec)
    return [Picture("frame", png(view), (int(view.shape[1]), int(view.shape[0]))),
            Picture("model", png(model), (int(model.shape[1]), int(model.shape[0])))]


class Collector:
    """Collection jobs: which frames to take (``due``/``offer``) and the thread that writes them under ``data_dir``."""

    def __init__(self, data_dir: Path | str, contract: Preprocess, spec: TensorSpec, info: dict[str, Any],
                 view_px: int = VIEW_MAX_PX, fsync: bool = True, clock: Callable[[], float] = time.monotonic):
        self.data_dir = Path(data_dir)
        self.contract = contract
        self.spec = spec
        self.info = dict(info)
        self.view_px = view_px
        self.fsync = fsync
        self.clock = clock
        self.host = device_name()
        self.wanted = False  # read by the pipeline thread once per frame: keep it a plain attribute
        self._lock = threading.Condition()
        self._queue: deque[tuple[CollectRequest, FrameStore, Frame, np.ndarray, Optional[Result]]] = deque()
        self._job: Optional[CollectRequest] = None
        self._state = "idle"
        self._taken = self._saved = self._failed = self._in_a_row = 0
        self._next_due = 0.0
        self._started = self._finished = 0.0
        self._last_error: Optional[str] = None
        self._last_files: list[str] = []
        self._store: Optional[FrameStore] = None
        self.saved_total = 0  # over all jobs (for /metrics)
        self.write_errors_total = 0
        self._closed = False
        self._thread = threading.Thread(target=self._writer, name="collect", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------ jobs
    def start(self, req: CollectRequest) -> dict[str, Any]:
        """Begin a job (CollectBusy while one runs); returns its status."""
        with self._lock:
            if self._state == "running":
                raise CollectBusy(f"collecting {self._job.label if self._job else '?'!r} already "
                                  f"({self._saved}/{self._job.count if self._job else 0}); wait for it or cancel it")
            self._job = req
            self._store = FrameStore(self.data_dir / req.label, fsync=self.fsync)
            self._state = "running"
            self._taken = self._saved = self._failed = self._in_a_row = 0
            self._last_error = None
            self._last_files = []
            self._started, self._finished = time.time(), 0.0
            self._next_due = self.clock()
            self.wanted = True
            log.info("collecting %d frames of %r into %s, one every %g s", req.count, req.label, self.data_dir / req.label,
                     req.interval_s)
            return self._status()

    def cancel(self) -> dict[str, Any]:
        """Stop taking frames; the frames already taken are still written."""
        with self._lock:
            if self._state == "running":
                self._end("cancelled")
            return self._status()

    def due(self) -> bool:
        """True when the job wants the next frame (and the writer has room for it)."""
        job = self._job
        return (job is not None and self._state == "running" and self._taken < job.count
                and len(self._queue) < QUEUE_FRAMES and self.clock() >= self._next_due)

    def offer(self, frame: Optional[Frame], tensor: np.ndarray, result: Optional[Result] = None) -> bool:
        """Take this frame (its input tensor is copied: the pipeline reuses its buffer); False when it was not due."""
        if frame is None:
            return False
        with self._lock:
            job = self._job
            if job is None or self._state != "running" or self._taken >= job.count:
                return False
            self._taken += 1
            now = self.clock()
            self._next_due = max(now, self._next_due + job.interval_s) if job.interval_s else now
            if self._taken >= job.count:
                self.wanted = False
            assert self._store is not None
            self._queue.append((job, self._store, frame, np.array(tensor, copy=True), result))
            self._lock.notify_all()
        return True

    def _end(self, state: str) -> None:
        self._state = state
        self._finished = time.time()
        self.wanted = False

    # ------------------------------------------------------------ writing
    def _writer(self) -> None:
        while True:
            with self._lock:
                while not self._queue and not self._closed:
                    self._lock.wait(0.5)
                if not self._queue and self._closed:
                    return
                job, store, frame, tensor, result = self._queue.popleft()
            try:
                pics = pictures_of(frame, tensor, self.contract, self.spec, job.view_px or self.view_px)
                rec = store.save(frame_stem(frame, self.host), pics,
                                 {"label": job.label, **kept_record(frame, self.info, result)})
                error: Optional[str] = None
            except OSError as e:
                rec, error = None, f"{store.folder}: {e.strerror or e}"
            except Exception as e:  # a bug must show in the job, not kill the writer
                log.exception("collect: could not make the pictures of a frame")
                rec, error = None, f"{type(e).__name__}: {e}"
            with self._lock:
                self.saved_total += rec is not None
                self.write_errors_total += rec is None
                if job is not self._job:  # a frame of an earlier (cancelled) job: written, not counted in this one
                    self._lock.notify_all()
                    continue
                if rec is not None:
                    self._saved += 1
                    self._in_a_row = 0
                    self._last_files = [*self._last_files[-4:], rec["name"]]
                else:
                    self._failed += 1
                    self._in_a_row += 1
                    self._last_error = error
                    log.error("collect %r: cannot write a frame (%s); %d failed so far", job.label, error, self._failed)
                if self._state == "running":
                    if self._in_a_row >= MAX_FAILURES_IN_A_ROW:
                        self._end("failed")
                        self._queue = deque(item for item in self._queue if item[0] is not job)
                    elif self._saved + self._failed >= job.count:
                        self._end("done")
                self._lock.notify_all()

    # ------------------------------------------------------------ status
    def _status(self) -> dict[str, Any]:
        job = self._job
        doc: dict[str, Any] = {"state": self._state, "data_dir": str(self.data_dir)}
        if job is not None:
            doc.update(label=job.label, count=job.count, interval_s=job.interval_s, dir=str(self.data_dir / job.label),
                       taken=self._taken, saved=self._saved, failed=self._failed, pending=len(self._queue),
                       started=self._started, finished=self._finished or None, last_error=self._last_error,
                       last_saved=list(self._last_files))
        return doc

    def status(self) -> dict[str, Any]:
        """The current (or last) job: state, label, count, saved, failed, the names of the last frames written."""
        with self._lock:
            return self._status()

    def wait(self, timeout_s: Optional[float] = None) -> dict[str, Any]:
        """Wait until the job is no longer running and every taken frame is written; its status."""
        end = None if timeout_s is None else time.monotonic() + timeout_s
        with self._lock:
            while self._state == "running" or self._queue:
                left = None if end is None else end - time.monotonic()
                if left is not None and left <= 0:
                    break
                self._lock.wait(0.2 if left is None else min(0.2, left))
            return self._status()

    def close(self, drain_s: float = 3.0) -> None:
        """Stop taking frames, write what was taken (up to ``drain_s``), end the thread."""
        with self._lock:
            if self._state == "running":
                self._end("cancelled")
            self._closed = True
            self._lock.notify_all()
        self._thread.join(drain_s)


def run_once(read: Callable[[], Frame], tensor_of: Callable[[Frame], np.ndarray], collector: Collector, req: CollectRequest,
             progress: Optional[Callable[[dict[str, Any]], None]] = None) -> dict[str, Any]:
    """One-shot collection: read frames as they come due, preprocess each for its model view, wait for the writer."""
    collector.start(req)
    while True:
        st = collector.status()
        if st["state"] != "running" or st["taken"] >= req.count:
            break
        if not collector.due():
            time.sleep(0.01)
            continue
        frame = read()
        collector.offer(frame, tensor_of(frame))
        if progress is not None:
            progress(collector.status())
    while True:
        st = collector.wait(0.5)
        if progress is not None:
            progress(st)
        if st["state"] != "running" and not st.get("pending"):
            return st
