"""Keeping the frames the model was unsure of, for the next round of training.

``python -m device run ... --keep-uncertain DIR --margin M`` keeps a frame when its top-1
score minus its top-2 score is below M (a model that cannot tell two classes apart there).
They go to DIR as ``device.framestore`` lays a folder out (frame view, model view, one index
line with the top-3 and the margin), to be pulled with ``deploy pull-data --uncertain-to``,
sorted into labels by a person and trained on.

It must never cost the classifier, nor fill the card:

* **rate-limited**: at most one frame every ``every_s`` seconds (a scene the model is unsure of
  stays in view for many frames: the first one says it);
* **capped** in files and bytes (``max_files``, ``max_bytes``, counted from what DIR already
  holds when the daemon starts): past a cap, frames are not kept (``capped``) until DIR is
  emptied (pulling does not delete);
* written by its own thread, one frame at a time: an uncertain frame that comes while the
  writer is busy is not kept (``busy``), the pipeline never waits;
* a write that fails (a full card, a read-only file system) is counted (``write_errors``, with
  the last error) and leaves nothing half-written; classification goes on, and the next
  uncertain frame tries again.

The pipeline thread pays one subtraction and a comparison per frame; the kept frame's input
tensor is copied (a few kB) and its pixels referenced (sources hand out a new array per frame).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from device.collect import device_name, frame_stem, kept_record, pictures_of
from device.frames import Frame
from device.framestore import FrameStore
from device.manifest import Preprocess, TensorSpec
from device.pipeline import Result
from device.views import VIEW_MAX_PX

log = logging.getLogger("edgekit.uncertain")


@dataclass(frozen=True)
class UncertainConfig:
    """Which frames count as uncertain and how many may be kept."""

    folder: Path
    margin: float = 0.2
    every_s: float = 10.0
    max_files: int = 2000
    max_bytes: int = 200 * 1024 * 1024

    def __post_init__(self) -> None:
        if not 0.0 < self.margin <= 1.0:
            raise ValueError(f"--margin must be above 0 and at most 1 (top-1 minus top-2 score). Got: {self.margin!r}")
        if not 0.0 <= self.every_s < float("inf"):
            raise ValueError(f"--uncertain-every-s must be 0 or more seconds. Got: {self.every_s!r}")
        if self.max_files < 2 or self.max_bytes < 1:
            raise ValueError(f"--uncertain-max-files must be at least 2 (two pictures a frame) and --uncertain-max-bytes "
                             f"at least 1. Got: {self.max_files}, {self.max_bytes}")


def margin_of(result: Result) -> float:
    """Top-1 score minus top-2 score (minus 0 for a model with one output)."""
    top = result.top
    return top[0].score - (top[1].score if len(top) > 1 else 0.0)


class UncertainKeeper:
    """Decides per frame whether to keep it (pipeline thread) and writes the kept ones (its own thread)."""

    def __init__(self, config: UncertainConfig, contract: Preprocess, spec: TensorSpec, info: dict[str, Any],
                 view_px: int = VIEW_MAX_PX, fsync: bool = True, clock: Callable[[], float] = time.monotonic):
        self.config = config
        self.margin = float(config.margin)
        self.contract = contract
        self.spec = spec
        self.info = dict(info)
        self.view_px = view_px
        self.clock = clock
        self.host = device_name()
        config.folder.mkdir(parents=True, exist_ok=True)
        self.store = FrameStore(config.folder, config.max_files, config.max_bytes, fsync=fsync)
        self.uncertain = 0  # frames under the margin
        self.kept = 0
        self.skipped_rate = 0
        self.capped = 0
        self._capped_on_write = 0  # the writer's own count (each counter has one writing thread)
        self.busy = 0
        self.write_errors = 0
        self.last_error: Optional[str] = None
        self._next_allowed = 0.0
        self._item: Optional[tuple[Frame, np.ndarray, Result, float]] = None
        self._cond = threading.Condition()
        self._closed = False
        self._logged_at = -1e9
        self._thread = threading.Thread(target=self._writer, name="uncertain", daemon=True)
        self._thread.start()

    def consider(self, result: Result, frame: Optional[Frame], tensor: np.ndarray) -> None:
        """Keep this frame if the model was unsure of it and the limits allow (never blocks, never raises on I/O)."""
        m = margin_of(result)
        if m >= self.margin or frame is None:
            return
        self.uncertain += 1
        now = self.clock()
        if now < self._next_allowed:
            self.skipped_rate += 1
            return
        if not self.store.room_for(2):
            self.capped += 1
            return
        if self._item is not None:
            self.busy += 1
            return
        self._next_allowed = now + self.config.every_s
        with self._cond:
            self._item = (frame, np.array(tensor, copy=True), result, m)
            self._cond.notify()

    def _writer(self) -> None:
        while True:
            with self._cond:
                while self._item is None and not self._closed:
                    self._cond.wait(0.5)
                item = self._item
                if item is None:
                    return
            frame, tensor, result, m = item
            try:
                rec = kept_record(frame, self.info, result)
                rec["margin"] = round(m, 5)
                saved = self.store.save(frame_stem(frame, self.host), pictures_of(frame, tensor, self.contract, self.spec,
                                                                                  self.view_px), rec)
                if saved is None:
                    self._capped_on_write += 1
                else:
                    self.kept += 1
            except OSError as e:
                self.write_errors += 1
                self.last_error = f"{self.config.folder}: {e.strerror or e}"
                now = time.monotonic()
                if now - self._logged_at >= 60.0:
                    self._logged_at = now
                    log.error("cannot keep an uncertain frame (%s); classification goes on (%d failed attempts)",
                              self.last_error, self.write_errors)
            except Exception:  # a bug must not end the writer silently
                log.exception("could not keep an uncertain frame")
                self.write_errors += 1
            finally:
                with self._cond:
                    self._item = None

    def stats(self) -> dict[str, Any]:
        """The /stats section: limits, what was kept, skipped and failed."""
        c = self.config
        return {"dir": str(c.folder), "margin": c.margin, "every_s": c.every_s, "max_files": c.max_files,
                "max_bytes": c.max_bytes, "files": self.store.files, "bytes": self.store.bytes, "uncertain": self.uncertain,
                "kept": self.kept, "skipped_rate": self.skipped_rate, "capped": self.capped + self._capped_on_write,
                "busy": self.busy,
                "write_errors": self.write_errors, "last_error": self.last_error}

    def close(self, drain_s: float = 3.0) -> None:
        """Write the frame in hand (up to ``drain_s``), end the thread."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(drain_s)
