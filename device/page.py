"""The live page's state: who is watching, the frame kept for them, latency history, the documents.

**Server-sent events, not polling.** The page opens one ``EventSource('events')`` and the
daemon pushes a state document every ``push_interval_s`` on that one connection: one thread
and one TCP connection per open page, no request per update (each poll would cost the Pi a
connection, a handler thread and headers), and the daemon knows exactly when somebody
watches: from the moment the stream opens until it breaks. The browser reconnects by itself
(``retry:``), so a restarted daemon comes back without a reload. Scripts and the fleet
dashboard, which want one answer, ask ``/page.json`` instead.

**Frames only for watchers.** The pipeline thread reads one attribute per frame
(``Page.wanted``); only while it is true does it call ``offer``, which every
``frame_interval_s`` keeps a reference to the frame (sources hand out a new array per frame:
picamera2's ``capture_array`` copies out of the camera buffer) and a copy of the input tensor
(the pipeline reuses its buffer). Encoding happens in the HTTP threads, once per kept frame
however many pages are open. ``wanted`` is set while an event stream is open or for
``watch_grace_s`` after a request for images (``/page.json``, ``/frame.png``), and cleared by
the pipeline's next ``offer`` once nobody is left.

**History.** A sampler thread reads the frames added to the statistics window since its last
sample (``Stats.since``) every ``sample_s`` and keeps p50 and p99 per stage for
``history_s``; it costs one pass over those frames every few seconds, watched or not, so the
page shows the last minutes as soon as it opens.
"""

from __future__ import annotations

import base64
import contextlib
import json
import threading
import time
from collections import deque
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from device.frames import Frame
from device.hwmonitor import HardwareMonitor
from device.manifest import TensorSpec
from device.page_html import PAGE_HTML
from device.pipeline import STAGES, Result
from device.png import encode_png
from device.preview import InputView, frame_image
from device.stats import Stats

IMAGE_KINDS = ("frame", "input")
# /stats fields the page does not repeat every push (the label list can be long)
_NOT_PUSHED = ("labels", "model_path")


@dataclass(frozen=True)
class PageConfig:
    """How the page samples, encodes and pushes (``python -m device run --help`` sets some)."""

    frame_interval_s: float = 0.5  # a watched daemon keeps one frame this often
    push_interval_s: float = 0.5  # one event per open page this often
    watch_grace_s: float = 3.0  # an image request keeps frames coming this long
    frame_max_px: int = 320  # long side of the camera frame as shown
    input_view_px: int = 224  # the input view is enlarged to about this size
    input_range: Optional[tuple[float, float]] = None  # the contract's normalisation range, if known
    history_s: float = 300.0
    sample_s: float = 2.0
    hardware_root: Path = Path("/")
    png_level: int = 1  # zlib level: 1 encodes a lores frame in 0.4 ms here, 3 in 0.64 ms for 12 % less


@dataclass(frozen=True)
class _Kept:
    """One frame kept for the page: the frame, a copy of its input tensor, its result."""

    frame: Frame
    tensor: np.ndarray
    spec: TensorSpec
    result: Result


def _data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


class Page:
    """The state behind ``/``, ``/events``, ``/page.json``, ``/frame.png`` and ``/input.png``."""

    def __init__(self, config: PageConfig, stats: Stats, health: Callable[[], tuple[bool, str]],
                 stats_doc: Callable[[], dict[str, Any]], hardware: Optional[HardwareMonitor] = None):
        self.config = config
        self.stats = stats
        self._health = health
        self._stats_doc = stats_doc
        self.hardware = hardware or HardwareMonitor(config.hardware_root)
        self.wanted = False  # read by the pipeline thread once per frame: keep it a plain attribute
        self._lock = threading.Lock()
        self._encode_lock = threading.Lock()
        self._viewers = 0
        self._touched = -1e9
        self._due = 0.0
        self._kept: Optional[_Kept] = None
        self._fresh = threading.Event()  # set while a kept frame is there
        self._encoded: dict[str, tuple[_Kept, bytes]] = {}  # kind → (the frame it shows, png)
        self._views: dict[TensorSpec, InputView | str] = {}
        self.kept_frames = 0
        self.encoded_images = 0
        self.encode_s = 0.0
        n = max(1, int(config.history_s / config.sample_s))
        self._history: deque[dict[str, Any]] = deque(maxlen=n)
        self._sampled_at: Optional[float] = None

    # ------------------------------------------------------------ pipeline thread
    def offer(self, frame: Optional[Frame], tensor: np.ndarray, spec: TensorSpec, result: Result) -> None:
        """Keep this frame for the page if one is due; stop wanting frames once nobody watches."""
        now = time.monotonic()
        if now < self._due:
            return
        with self._lock:  # a viewer arriving now must not be undone by a stale "nobody watches"
            if self._viewers == 0 and now - self._touched > self.config.watch_grace_s:
                self.wanted = False
                self._kept = None  # the next watcher must not be shown a frame from long ago
                self._fresh.clear()
                return
        if frame is None:
            return
        self._due = now + self.config.frame_interval_s
        self._kept = _Kept(frame, np.array(tensor, copy=True), spec, result)
        self.kept_frames += 1
        self._fresh.set()

    # ------------------------------------------------------------ watchers
    @contextlib.contextmanager
    def watching(self) -> Iterator[None]:
        """While inside, frames are kept (an open event stream)."""
        with self._lock:
            self._viewers += 1
            self.wanted = True
        try:
            yield
        finally:
            with self._lock:
                self._viewers -= 1

    def touch(self) -> None:
        """Somebody asked for images: keep frames for ``watch_grace_s``."""
        with self._lock:
            self._touched = time.monotonic()
            self.wanted = True

    def wait_kept(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for a kept frame (after ``touch``, the pipeline keeps the next one)."""
        return self._fresh.wait(timeout_s)

    @property
    def viewers(self) -> int:
        """Open event streams."""
        return self._viewers

    # ------------------------------------------------------------ images
    def _view(self, spec: TensorSpec) -> InputView | str:
        view = self._views.get(spec)
        if view is None:
            try:
                view = InputView(spec, self.config.input_range, self.config.input_view_px)
            except ValueError as e:
                view = str(e)
            self._views[spec] = view
        return view

    def image(self, kind: str) -> tuple[Optional[bytes], str]:
        """(PNG, note) of the kept frame (``frame``) or its input view (``input``); PNG None with the reason."""
        return self._image(kind, self._kept)

    def _image(self, kind: str, kept: Optional[_Kept]) -> tuple[Optional[bytes], str]:
        if kept is None:
            return None, "no frame kept yet: frames are kept only while someone watches; ask again in a moment"
        with self._encode_lock:  # one encode per kept frame, however many pages ask
            cached = self._encoded.get(kind)
            if cached is not None and cached[0] is kept:
                return cached[1], self._note(kind, kept)
            t0 = time.perf_counter()
            try:
                if kind == "frame":
                    pixels = frame_image(kept.frame, self.config.frame_max_px)
                else:
                    view = self._view(kept.spec)
                    if isinstance(view, str):
                        return None, view
                    pixels = view.render(kept.tensor)
            except ValueError as e:
                return None, str(e)
            png = encode_png(pixels, self.config.png_level)
            self.encode_s += time.perf_counter() - t0
            self.encoded_images += 1
            self._encoded[kind] = (kept, png)
            return png, self._note(kind, kept)

    def _note(self, kind: str, kept: _Kept) -> str:
        if kind == "frame":
            f = kept.frame
            h, w = (f.size[1], f.size[0]) if f.size else kept.frame.pixels.shape[:2]
            return f"{w}x{h} {f.fmt}"
        view = self._view(kept.spec)
        return view if isinstance(view, str) else view.describe()

    # ------------------------------------------------------------ history
    def sample(self) -> None:
        """Add one history point: p50 and p99 per stage of the frames since the last sample."""
        since = self._sampled_at if self._sampled_at is not None else self.stats.started_s
        now, rows = self.stats.since(since)
        self._sampled_at = now
        point: dict[str, Any] = {"t": round(time.time(), 3), "n": int(rows.shape[0])}
        if rows.shape[0]:
            p50, p99 = np.percentile(rows / 1e6, [50, 99], axis=0)
            point["p50_ms"] = [round(float(v), 4) for v in p50]
            point["p99_ms"] = [round(float(v), 4) for v in p99]
        self._history.append(point)

    def run_sampler(self, stop: threading.Event) -> None:
        """Sample every ``sample_s`` until ``stop`` is set (the daemon's sampler thread)."""
        while not stop.wait(self.config.sample_s):
            self.sample()

    def history(self, after_t: float = 0.0) -> list[dict[str, Any]]:
        """History points newer than wall time ``after_t``, oldest first."""
        return [p for p in list(self._history) if p["t"] > after_t]

    # ------------------------------------------------------------ documents
    def html(self) -> bytes:
        """The page itself: one HTML document, its CSS and JS inline."""
        return PAGE_HTML.encode()

    def state(self, images: tuple[str, ...] = IMAGE_KINDS, history_after: Optional[float] = 0.0,
              kept: Optional[_Kept] = None) -> dict[str, Any]:
        """The document pushed to pages and served as /page.json; ``history_after=None`` leaves history out.

        ``kept`` pins the frame shown (default: the latest kept), so labels and pictures belong together.
        """
        ok, reason = self._health()
        stats = {k: v for k, v in self._stats_doc().items() if k not in _NOT_PUSHED}
        kept = kept if kept is not None else self._kept
        shown: Optional[dict[str, Any]] = None
        if kept is not None:
            shown = kept.result.to_json()
            shown["frame_name"] = shown.pop("frame")
            shown["images"] = {}
            for kind in images:
                png, note = self._image(kind, kept)
                shown["images"][kind] = {"src": _data_url(png) if png is not None else None, "note": note}
        doc: dict[str, Any] = {
            "t": round(time.time(), 3),
            "health": {"ok": ok, "reason": reason},
            "stats": stats,
            "shown": shown,
            "hardware": self.hardware.get().to_json(),
            "stages": list(STAGES),
            "page": {"viewers": self._viewers, "kept_frames": self.kept_frames, "encoded_images": self.encoded_images,
                     "encode_ms_mean": round(1e3 * self.encode_s / self.encoded_images, 3) if self.encoded_images else None,
                     "encode_ms_total": round(1e3 * self.encode_s, 3),
                     "frame_interval_s": self.config.frame_interval_s, "push_interval_s": self.config.push_interval_s,
                     "sample_s": self.config.sample_s, "history_s": self.config.history_s},
        }
        if history_after is not None:
            doc["history"] = self.history(history_after)
        return doc

    def events(self, stop: threading.Event) -> Generator[bytes, None, None]:
        """The event stream of one open page: a ``state`` event every ``push_interval_s`` until ``stop``."""
        with self.watching():
            yield b"retry: 2000\n\n"
            self.wait_kept(min(1.0, 2 * self.config.frame_interval_s))  # so the first event can show a frame
            shown_seq: Optional[int] = None
            history_t = 0.0
            while not stop.is_set():
                kept = self._kept
                new = kept is not None and kept.result.seq != shown_seq
                doc = self.state(IMAGE_KINDS if new else (), history_t, kept)
                if new and kept is not None:
                    shown_seq = kept.result.seq
                if doc["history"]:
                    history_t = doc["history"][-1]["t"]
                yield b"event: state\ndata: " + json.dumps(doc, separators=(",", ":")).encode() + b"\n\n"
                stop.wait(self.config.push_interval_s)
