"""collect: N labelled frames on the device, through whoever owns the camera (``deploy.agent.collect``).

The whole collection holds the device's lock (a push or a start meanwhile fails at once, naming
it): the agent asks the running daemon (``POST /collect``: it keeps classifying) or, when none
runs, starts a one-shot ``python -m device collect`` that inherits the lock until it ends. The
host polls ``collect-status`` twice a second for the progress bar; Ctrl-C cancels the job (the
frames already taken are still written) and reports what was saved.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from deploy.agent import protocol
from deploy.errors import RemoteError
from deploy.remote import Device

POLL_S = 0.5
STALL_S = 60.0  # no new frame for this long (beyond the interval) means the device is stuck


class CollectError(RemoteError):
    """The collection could not start, or ended without all its frames."""


@dataclass(frozen=True)
class CollectResult:
    """What one collection did on one host."""

    host: str
    label: str
    count: int
    mode: str  # daemon | one-shot
    release: str
    state: str
    saved: int
    failed: int
    dir: str
    elapsed_s: float
    last_error: Optional[str] = None
    status: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """All frames written."""
        return self.state == "done" and self.saved == self.count and not self.failed

    @property
    def summary(self) -> str:
        """One line for the result table."""
        who = (f"the running daemon (release {self.release}, still classifying)" if self.mode == "daemon"
               else f"a one-shot camera process (release {self.release}; no daemon was running)")
        line = f"{self.state}: {self.saved}/{self.count} frames of {self.label!r} in {self.dir}, taken by {who}"
        if self.failed:
            line += f"; {self.failed} could not be written ({self.last_error})"
        elif self.last_error and not self.ok:
            line += f" ({self.last_error})"
        return line

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {k: getattr(self, k) for k in self.__dataclass_fields__} | {"ok": self.ok}


def _cancel(device: Device, last: dict[str, Any]) -> dict[str, Any]:
    """Stop the job on the device (the frames taken are still written); its status."""
    return dict(device.agent(protocol.COLLECT_STATUS, "--dir", device.root, "--cancel", check=False).get("status") or last)


def collect(device: Device, label: str, count: int, interval_s: float, view_px: int = 320, lock_timeout_s: float = 0.0,
            progress: Callable[[dict[str, Any]], None] = lambda st: None) -> CollectResult:
    """Collect ``count`` frames of ``label`` on one device, reporting each status to ``progress``."""
    t0 = time.monotonic()
    with device.locked(f"collect of {label!r} ({count} frames)", lock_timeout_s):
        ans = device.agent(protocol.COLLECT, "--dir", device.root, "--label", label, "--count", str(count),
                           "--interval-s", str(interval_s), "--view-px", str(view_px), timeout_s=120, error_cls=CollectError)
        st: dict[str, Any] = dict(ans.get("status") or {})
        progress(st)
        last_change, last_done = time.monotonic(), -1
        try:
            while st.get("state", "running") == "running":
                time.sleep(POLL_S)
                st = dict(device.agent(protocol.COLLECT_STATUS, "--dir", device.root, error_cls=CollectError).get("status") or {})
                progress(st)
                done = int(st.get("saved") or 0) + int(st.get("failed") or 0)
                if done != last_done:
                    last_done, last_change = done, time.monotonic()
                elif time.monotonic() - last_change > STALL_S + interval_s:
                    _cancel(device, st)
                    raise CollectError(f"no frame collected on {device.target.label} for {STALL_S + interval_s:.0f} s "
                                       f"({done}/{count}; cancelled there); see `deploy logs`", {"status": st})
        except KeyboardInterrupt:
            st = _cancel(device, st)
            progress(st)
    return CollectResult(device.target.label, label, count, str(ans.get("mode")), str(ans.get("release")),
                         str(st.get("state")), int(st.get("saved") or 0), int(st.get("failed") or 0),
                         str(st.get("dir") or ans.get("dir")), time.monotonic() - t0, st.get("last_error"), st)
