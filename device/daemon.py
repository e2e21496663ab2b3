"""The classifier daemon: pipeline loop, bounded result queue, HTTP status, clean shutdown.

- SIGTERM/SIGINT stop the loop, close the camera (a camera left open makes the next start fail
  with "Device or resource busy"), flush the results, and exit 0 well within 2 s. A signal that
  arrives while a frame is being read interrupts the read, so a stalled camera cannot hold the
  daemon until its capture timeout.
- A camera that times out is reopened with exponential backoff; after ``max_failures`` failures
  in a row the daemon exits with ``EXIT_SOURCE_FAILED`` so its supervisor restarts it.
- ``/healthz`` answers 503 when no frame has been classified for ``stale_after_s`` (a stuck
  camera, runtime or disk the timeouts did not catch), so a supervisor without a watchdog sees it.
- A frame of the wrong shape or dtype is counted (``errors.bad_frame``) and skipped.
- Memory is bounded: results wait in a drop-oldest queue (drops are counted), the latency
  window and /latest are fixed-size rings.
- Results that cannot be written (a full disk, a file-size limit, a failed rotation) are counted
  (``results.write_errors``, ``edgekit_results_write_errors_total``) and retried; classification
  goes on. The writer thread owns the file: it closes it after draining the queue, and shutdown
  waits ``writer_drain_s`` for that instead of closing the file under it.
- Collection (``device.collect``, ``POST /collect``) and uncertain-frame keeping
  (``device.uncertain``) are parts passed in; per frame the loop reads one attribute for each
  (``Collector.wanted``, the keeper's margin test) and hands kept frames to their own threads.
  Their write failures are counted in /stats (``collect``, ``uncertain``) and /metrics.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Generic, Optional, TypeVar

from device.collect import CollectBusy, Collector, CollectRequest
from device.errors import CameraTimeout, FrameError, SourceError
from device.frames import DEFAULT_CAMERA, CameraConfig, EndOfSource, ExtrasSource, FrameSource
from device.hwmonitor import hardware_metrics
from device.page import Page, PageConfig
from device.pipeline import Pipeline, Result
from device.results import JsonLinesWriter
from device.sdnotify import Notifier
from device.server import StatusServer
from device.stats import Stats, prometheus_text
from device.uncertain import UncertainKeeper

log = logging.getLogger("edgekit.device")

EXIT_OK = 0
EXIT_SOURCE_FAILED = 3
T = TypeVar("T")


def default_stale_after_s(camera: CameraConfig = DEFAULT_CAMERA) -> float:
    """How long without a classified frame means stalled: two capture timeouts plus ten frame intervals.

    A working camera delivers a frame every 1/frame_rate s; a failing one raises within its
    capture timeout (and the daemon reports "source failing" meanwhile). A gap longer than
    twice the timeout with no failure reported means something blocked that no timeout covers.
    """
    return round(2.0 * camera.timeout_s + 10.0 / camera.frame_rate, 3)


class _StopNow(BaseException):
    """Raised by the signal handler to interrupt a blocking frame read (not an Exception: nothing swallows it)."""


@dataclass(frozen=True)
class DaemonConfig:
    """Knobs of the daemon (see ``python -m device run --help``)."""

    port: int = 8321
    results_path: Optional[Path] = None
    results_max_bytes: int = 10 * 1024 * 1024
    results_backups: int = 3
    status_file: Optional[Path] = None
    max_failures: int = 5
    backoff_s: float = 0.5
    backoff_max_s: float = 8.0
    queue_size: int = 256
    latest_size: int = 10
    window: int = 1000
    exit_when_done: bool = False
    stale_after_s: float = default_stale_after_s()
    results_retry_s: float = 1.0
    writer_drain_s: float = 3.0  # under systemd's TimeoutStopSec=5 of the shipped unit
    page: PageConfig = field(default_factory=PageConfig)


class DropOldestQueue(Generic[T]):
    """A bounded FIFO that, when full, drops its oldest item and counts the drop."""

    def __init__(self, maxsize: int):
        self._items: deque[T] = deque()
        self.maxsize = max(1, maxsize)
        self.dropped = 0
        self._cond = threading.Condition()
        self.closed = False

    def put(self, item: T) -> None:
        """Append; never blocks."""
        with self._cond:
            if len(self._items) >= self.maxsize:
                self._items.popleft()
                self.dropped += 1
            self._items.append(item)
            self._cond.notify()

    def get(self, timeout_s: float) -> Optional[T]:
        """The oldest item, or None after ``timeout_s`` or once closed and empty."""
        with self._cond:
            if not self._items and not self.closed:
                self._cond.wait(timeout_s)
            return self._items.popleft() if self._items else None

    def close(self) -> None:
        """Wake the consumer; it drains what is left, then sees None."""
        with self._cond:
            self.closed = True
            self._cond.notify_all()

    def __len__(self) -> int:
        return len(self._items)


class Daemon:
    """Runs a Pipeline until stopped and answers the HTTP status endpoints."""

    def __init__(
        self,
        source_factory: Callable[[], FrameSource],
        make_pipeline: Callable[[FrameSource], Pipeline],
        info: dict[str, Any],
        config: DaemonConfig = DaemonConfig(),
        notifier: Optional[Notifier] = None,
        collector: Optional[Collector] = None,
        uncertain: Optional[UncertainKeeper] = None,
    ):
        self.collector = collector
        self.uncertain = uncertain
        self.source_factory = source_factory
        self.make_pipeline = make_pipeline
        self.info = dict(info)
        self.config = config
        self.notifier = notifier or Notifier()
        self.stats = Stats(window=config.window)
        self.latest: deque[Result] = deque(maxlen=config.latest_size)
        self.queue: DropOldestQueue[Result] = DropOldestQueue(config.queue_size)
        self.stop_event = threading.Event()
        self.state = "starting"
        self.failures = 0
        self.server: Optional[StatusServer] = None
        self.writer: Optional[JsonLinesWriter] = None
        self._writer_thread: Optional[threading.Thread] = None
        self._last_ping = time.monotonic()
        self._last_frame_s: Optional[float] = None  # monotonic time of the last classified frame
        self._reading = False  # the main thread is inside pipeline.step(): a signal may interrupt it
        self.page = Page(config.page, self.stats, self.health, self.stats_doc)

    # ---------------------------------------------------------------- status provider
    def health(self) -> tuple[bool, str]:
        """Healthy once a frame has been classified, while the source works and frames keep coming."""
        if self.stats.frames == 0:
            return False, f"no frame classified yet ({self.state})"
        if self.failures:
            return False, f"source failing ({self.failures} in a row), reopening"
        if self.state == "done":
            return True, f"source finished after {self.stats.frames} frames"
        age = self.last_frame_age_s()
        if age is not None and age > self.config.stale_after_s:
            return False, (f"stalled: no frame classified for {age:.1f} s (limit {self.config.stale_after_s:g} s, "
                           f"state {self.state})")
        return True, f"{self.stats.frames} frames classified"

    def last_frame_age_s(self) -> Optional[float]:
        """Seconds since the last classified frame (None before the first)."""
        last = self._last_frame_s
        return None if last is None else time.monotonic() - last

    def stats_doc(self) -> dict[str, Any]:
        """The /stats document."""
        snap = self.stats.snapshot()
        doc: dict[str, Any] = {"state": self.state, "pid": os.getpid(), **self.info, **snap}
        doc["dropped"] = self.queue.dropped
        doc["queued"] = len(self.queue)
        doc["consecutive_failures"] = self.failures
        age = self.last_frame_age_s()
        doc["last_frame_age_s"] = None if age is None else round(age, 3)
        doc["stale_after_s"] = self.config.stale_after_s
        w = self.writer
        if w is not None:
            doc["results"] = {"path": str(w.path), "lines": w.lines, "rotations": w.rotations, "write_errors": w.write_errors,
                              "lost": w.lost, "pending": w.pending, "torn_lines": w.torn_lines, "last_error": w.last_error}
        if self.collector is not None:
            doc["collect"] = {**self.collector.status(), "saved_total": self.collector.saved_total,
                              "write_errors_total": self.collector.write_errors_total}
        if self.uncertain is not None:
            doc["uncertain"] = self.uncertain.stats()
        return doc

    def metrics(self) -> str:
        """Prometheus text exposition."""
        labels = {k: str(self.info.get(k, "")) for k in ("variant", "runtime", "runtime_version", "threads", "sha256", "source")}
        age = self.last_frame_age_s()
        gauges = {
            "uptime_seconds": ("Seconds since the daemon started.", round(time.monotonic() - self.stats.started_s, 3)),
            "healthy": ("1 when /healthz answers 200.", 1.0 if self.health()[0] else 0.0),
            "last_frame_age_seconds": ("Seconds since the last classified frame (-1 before the first).",
                                       -1.0 if age is None else round(age, 3)),
            "target_fps": ("Frame rate the source is paced to (0: unpaced, as fast as the pipeline goes).",
                           float(self.info.get("target_fps") or 0.0)),
        }
        w = self.writer
        counters = {
            "dropped_results_total": ("Results dropped from the full writer queue.", float(self.queue.dropped)),
            "results_write_errors_total": ("Failed attempts to write, open or rotate the results log (full disk, file-size limit, I/O error).",
                                           float(w.write_errors if w else 0)),
            "results_lost_total": ("Results given up because the results log could not take them.", float(w.lost if w else 0)),
        }
        col, unc = self.collector, self.uncertain
        if col is not None:
            counters["collect_saved_total"] = ("Frames collected and written (POST /collect).", float(col.saved_total))
            counters["collect_write_errors_total"] = ("Collected frames that could not be written (full disk, I/O error).",
                                                     float(col.write_errors_total))
        if unc is not None:
            counters["uncertain_kept_total"] = ("Uncertain frames kept (top-1 minus top-2 below the margin).", float(unc.kept))
            counters["uncertain_write_errors_total"] = ("Uncertain frames that could not be written (full disk, I/O error).",
                                                       float(unc.write_errors))
            st = unc.stats()
            counters["uncertain_capped_total"] = ("Uncertain frames not kept because the folder reached its file or byte cap.",
                                                  float(st["capped"]))
            gauges["uncertain_bytes"] = ("Bytes in the uncertain-frames folder.", float(st["bytes"]))
        return prometheus_text(self.stats, labels, gauges, counters) + hardware_metrics(self.page.hardware.get())

    def latest_doc(self) -> dict[str, Any]:
        """The /latest document: newest first."""
        return {"labels": self.info.get("labels"), "frames": [r.to_json() for r in reversed(list(self.latest))]}

    # ---------------------------------------------------------------- lifecycle
    def request_stop(self, *_: Any) -> None:
        """Ask the loop to stop (from any thread)."""
        self.stop_event.set()

    def _on_signal(self, *_: Any) -> None:
        self.stop_event.set()
        if self._reading:  # blocked in a capture (up to its timeout, or for ever): get out now
            raise _StopNow

    def install_signal_handlers(self) -> None:
        """SIGTERM and SIGINT stop the loop cleanly, interrupting a frame read in progress."""
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)

    def _writer_loop(self) -> None:
        """Drain the queue into the writer, then close it: this thread alone touches the file."""
        w = self.writer
        assert w is not None
        try:
            while True:
                r = self.queue.get(0.5)
                if r is not None:
                    w.write(r.to_json())
                if r is None or not len(self.queue):
                    w.flush()  # never raises on I/O: failures are counted and retried
                if r is None and self.queue.closed and not len(self.queue):
                    return
        except Exception:  # a bug here must not pass silently as "dropped"
            log.exception("the results writer failed; results are no longer written")
        finally:
            w.close()

    def _write_status_file(self) -> None:
        if self.config.status_file is None or self.server is None:
            return
        doc = {"pid": os.getpid(), "port": self.server.port, "url": self.server.url, "started": time.time()}
        tmp = self.config.status_file.with_name(self.config.status_file.name + ".tmp")
        tmp.write_text(json.dumps(doc) + "\n")
        os.replace(tmp, self.config.status_file)

    def _wait(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while not self.stop_event.is_set() and time.monotonic() < end:
            self._ping()
            self.stop_event.wait(min(0.2, max(0.0, end - time.monotonic())))

    def _ping(self) -> None:
        interval = self.notifier.watchdog_interval_s
        now = time.monotonic()
        if interval is not None and now - self._last_ping >= interval:
            self.notifier.watchdog()
            self._last_ping = now

    def run(self) -> int:
        """Serve and classify until stopped; the exit code for the process."""
        self._last_ping = time.monotonic()
        provider = _Provider(self)
        self.server = StatusServer(provider, self.config.port, self.page, provider if self.collector is not None else None)
        self.server.start()
        threading.Thread(target=self.page.run_sampler, args=(self.server.stopping,), name="page-history", daemon=True).start()
        if self.config.results_path is not None:
            self.writer = JsonLinesWriter(self.config.results_path, self.config.results_max_bytes, self.config.results_backups,
                                          retry_s=self.config.results_retry_s)
            self._writer_thread = threading.Thread(target=self._writer_loop, name="results", daemon=True)
            self._writer_thread.start()
        self._write_status_file()
        log.info("serving %s/stats (pid %d)", self.server.url, os.getpid())
        source: Optional[FrameSource] = None
        pipeline: Optional[Pipeline] = None
        code = EXIT_OK
        ready_sent = False
        try:
            while not self.stop_event.is_set():
                self._ping()
                if source is None:
                    try:
                        source = self.source_factory()
                        pipeline = self.make_pipeline(source)
                        self.state = "running"
                    except SourceError as e:
                        if self._failed("source_open", e):
                            code = EXIT_SOURCE_FAILED
                            break
                        continue
                assert pipeline is not None
                col = self.collector
                collecting = col is not None and col.wanted and col.due()
                if collecting and isinstance(source, ExtrasSource):
                    source.want_extras()  # this frame is kept: read main and the request's metadata with it
                try:
                    self._reading = True
                    try:
                        result = pipeline.step()
                    finally:
                        self._reading = False
                except EndOfSource:
                    self.state = "done"
                    log.info("source finished after %d frames", self.stats.frames)
                    if self.config.exit_when_done:
                        break
                    self._wait(3600.0)
                    continue
                except FrameError as e:
                    self.stats.error("bad_frame")
                    log.warning("skipped a bad frame: %s", e)
                    continue
                except SourceError as e:  # includes CameraTimeout
                    source.close()
                    source = pipeline = None
                    if self._failed("camera_timeout" if isinstance(e, CameraTimeout) else "source_error", e):
                        code = EXIT_SOURCE_FAILED
                        break
                    continue
                self.failures = 0
                self._last_frame_s = time.monotonic()
                self.stats.add(result)
                self.latest.append(result)
                if self.page.wanted:  # someone has the page open: one attribute read per frame otherwise
                    self.page.offer(pipeline.last_frame, pipeline.input_tensor, pipeline.engine.input_spec, result)
                if self.writer is not None:
                    self.queue.put(result)
                if collecting:
                    assert col is not None
                    col.offer(pipeline.last_frame, pipeline.input_tensor, result)
                if self.uncertain is not None:
                    self.uncertain.consider(result, pipeline.last_frame, pipeline.input_tensor)
                if not ready_sent:
                    self.notifier.ready(f"classifying, {self.server.url}")
                    ready_sent = True
        except _StopNow:
            log.info("stopped by a signal while reading a frame")
        finally:
            self.state = "stopping"
            self.notifier.stopping()
            if source is not None:
                source.close()
            self._shutdown()
        return code

    def _failed(self, kind: str, e: Exception) -> bool:
        """Count a source failure and back off; True when the daemon should give up."""
        self.stats.error(kind)
        self.failures += 1
        self.state = "reopening"
        if self.failures >= self.config.max_failures:
            log.error("%s; %d failures in a row, giving up so the supervisor restarts us", e, self.failures)
            return True
        delay = min(self.config.backoff_max_s, self.config.backoff_s * 2 ** (self.failures - 1))
        log.warning("%s; reopening in %.1f s (failure %d of %d)", e, delay, self.failures, self.config.max_failures)
        self._wait(delay)
        return False

    def _shutdown(self) -> None:
        for part in (self.collector, self.uncertain):
            if part is not None:
                part.close()
        self.queue.close()
        t = self._writer_thread
        if t is not None:
            t.join(timeout=self.config.writer_drain_s)
            if t.is_alive():  # a disk that hangs: leave the file to its thread, never close it under a write
                log.error("the results writer is still writing after %.1f s; exiting without waiting for it "
                          "(%d results queued)", self.config.writer_drain_s, len(self.queue))
        if self.server is not None:
            self.server.close()
        if self.config.status_file is not None:
            self.config.status_file.unlink(missing_ok=True)


class _Provider:
    """Adapts Daemon to the StatusProvider protocol of the HTTP server."""

    def __init__(self, d: Daemon):
        self.d = d

    def health(self) -> tuple[bool, str]:
        return self.d.health()

    def stats(self) -> dict[str, Any]:
        return self.d.stats_doc()

    def metrics(self) -> str:
        return self.d.metrics()

    def latest(self) -> dict[str, Any]:
        return self.d.latest_doc()

    def collect_status(self) -> dict[str, Any]:
        assert self.d.collector is not None
        return self.d.collector.status()

    def collect_start(self, doc: Any) -> tuple[int, dict[str, Any]]:
        col = self.d.collector
        assert col is not None
        try:
            req = CollectRequest.from_json(doc)
        except ValueError as e:
            return 400, {"error": str(e)}
        if self.d.state not in ("running", "reopening"):
            return 503, {"error": f"the daemon is {self.d.state}: no frames to collect from", **col.status()}
        try:
            return 202, col.start(req)
        except CollectBusy as e:
            return 409, {"error": str(e), **col.status()}

    def collect_cancel(self) -> dict[str, Any]:
        assert self.d.collector is not None
        return self.d.collector.cancel()
