"""status: per host the release, runtime, fps and per-stage latency, read from the daemon's /stats.

The daemon listens on the device's loopback only; the agent reads ``http://127.0.0.1:PORT/stats``
on the device, inside the SSH session, and hands the JSON back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from deploy.agent import protocol
from deploy.remote import Device
from device.pipeline import STAGES

EMULATED_NOTE = "EMULATED: timings from an emulator on another CPU, not Pi latency"


def emulated_label(emulated: Optional[str]) -> str:
    """How tables mark a host's figures: ``EMULATED (qemu-user-aarch64)`` or ``native``."""
    return f"EMULATED ({emulated})" if emulated else "native"


@dataclass(frozen=True)
class StatusRow:
    """One host's daemon state and figures."""

    host: str
    release: Optional[str]
    variant: Optional[str]
    running: bool
    runtime: Optional[str]
    fps: Optional[float]
    frames: Optional[int]
    restarts: int
    latency_ms: dict[str, dict[str, float]] = field(default_factory=dict)
    accuracy: Optional[float] = None
    error: Optional[str] = None
    stats: Optional[dict[str, Any]] = None
    emulated: Optional[str] = None
    current: Optional[str] = None
    supervisor: Optional[str] = None
    systemd: Optional[dict[str, Any]] = None

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def status(device: Device) -> StatusRow:
    """Ask the agent for the supervisor state and the daemon's /stats."""
    a = device.agent(protocol.STATUS, "--dir", device.root)
    stats = a.get("stats") or {}
    rt = stats.get("runtime")
    if isinstance(rt, dict):
        rt = " ".join(str(x) for x in (rt.get("name"), rt.get("version")) if x)
    elif rt and stats.get("runtime_version"):
        rt = f"{rt} {stats['runtime_version']}"
    lat = stats.get("latency_ms") or {}
    return StatusRow(
        host=device.target.label,
        release=a.get("release") or a.get("current"),
        variant=a.get("variant") or stats.get("variant"),
        running=bool(a.get("running")),
        runtime=str(rt) if rt else None,
        fps=stats.get("fps"),
        frames=stats.get("frames"),
        restarts=int(a.get("restarts") or 0),
        latency_ms={s: {k: float(v.get(k, 0.0)) for k in ("p50_ms", "p90_ms", "p99_ms")} for s, v in lat.items()
                    if isinstance(v, dict)},
        accuracy=stats.get("accuracy"),
        error=a.get("stats_error") if a.get("running") else ("daemon not running" if a.get("current") else "nothing deployed"),
        stats=stats or None,
        emulated=a.get("emulated") or None,
        current=a.get("current"),
        supervisor=a.get("supervisor"),
        systemd=a.get("systemd"),
    )


def _lat(row: StatusRow, stage: str) -> str:
    v = row.latency_ms.get(stage)
    if not v:
        return "-"
    return f"{v['p50_ms']:.3f}/{v['p90_ms']:.3f}/{v['p99_ms']:.3f}"


def format_status(rows: list[StatusRow]) -> str:
    """A table: host, release, runtime, fps, frames, then p50/p90/p99 ms per stage; emulated hosts marked."""
    stages = [s for s in STAGES if any(s in r.latency_ms for r in rows)] or ["invoke", "total"]
    flagged = any(r.emulated for r in rows)
    head = (["host", "release", "variant", "supervisor", "state", "runtime", "fps", "frames", "restarts"]
            + [f"{s} p50/p90/p99 ms" for s in stages])
    if flagged:
        head.insert(1, "hardware")
    body = []
    for r in rows:
        state = "running" if r.running else "stopped"
        if r.systemd:  # systemd's own words
            state = f"{r.systemd.get('ActiveState')}/{r.systemd.get('SubState')}"
        if r.error and r.running:
            state += f" ({r.error})"
        if r.current and r.release and r.current != r.release:
            state += f" (current is {r.current}: restart to run it)"
        body.append([r.host, r.release or "-", r.variant or "-", r.supervisor or "-", state, r.runtime or "-",
                     "-" if r.fps is None else f"{r.fps:.1f}", "-" if r.frames is None else str(r.frames),
                     str(r.restarts)] + [_lat(r, s) for s in stages])
        if flagged:
            body[-1].insert(1, emulated_label(r.emulated))
    return table(head, body) + (f"\n{EMULATED_NOTE}" if flagged else "")


def table(head: list[str], body: list[list[str]]) -> str:
    """Left-aligned plain-text table."""
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]
    lines = ["  ".join(str(x).ljust(w) for x, w in zip(head, widths)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(str(x).ljust(w) for x, w in zip(row, widths)).rstrip() for row in body]
    return "\n".join(lines)
