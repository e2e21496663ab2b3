"""The systemd supervisor: one unit per device root, rendered for the release it runs, driven with systemctl.

The unit (``edgekit-<hash of the root>.service`` in ``/etc/systemd/system``) is the device
package's template filled by ``device.service.render_unit`` with the paths of one release
(``releases/<id>/...``: its code, model, venv), so what a unit starts is always one consistent
release, also after a power cut between a ``current`` switch and the restart. Starting a release
re-renders the unit and installs it when its text changed (``install``, ``daemon-reload``,
``enable``, ``sync``), then ``systemctl start``/``restart``, which for ``Type=notify`` returns
once the daemon has sent READY=1 (model loaded). ``stop`` stops and disables the unit and fails
loudly when systemctl does, or when systemd still reports it active. Status is systemd's own view
(``systemctl show``: ActiveState, SubState, NRestarts, MainPID); logs are journald's
(``journalctl -u UNIT``). Commands that change units run with ``sudo -n`` unless the agent is root.
"""

from __future__ import annotations

import getpass
import hashlib
import os
import re
import subprocess
from pathlib import Path
from typing import Any, Optional

from deploy.agent import daemon as daemon_cmd
from deploy.agent.errors import AgentError
from deploy.agent.layout import Layout, read_json
from deploy.agent.logs import tail
from deploy.agent.procs import ProcessRef
from deploy.agent.protocol import LogsAnswer, SystemdView
from device.service import render_unit

UNIT_DIR = Path("/etc/systemd/system")
SHOW_PROPERTIES = ("LoadState", "ActiveState", "SubState", "NRestarts", "MainPID", "Result", "UnitFileState",
                   "ExecMainStatus")
START_TIMEOUT_S = 150.0  # when systemd does not say: above the template's TimeoutStartSec=60
# systemd.time(7) units as `systemctl show` prints time spans ("1min 30s", "500ms", "infinity").
_SPAN_UNITS = {"us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "min": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0,
               "M": 2629800.0, "y": 31557600.0}
_SPAN = re.compile(r"([0-9.]+)\s*(us|µs|ms|s|min|h|d|w|M|y)")


def unit_name(lay: Layout) -> str:
    """The unit of one device root (two roots on one device get two units)."""
    return "edgekit-" + hashlib.sha256(str(lay.root).encode()).hexdigest()[:8] + ".service"


def _privileged() -> list[str]:
    return [] if os.geteuid() == 0 else ["sudo", "-n"]


def _run(argv: list[str], timeout_s: float = 60.0, privileged: bool = True) -> subprocess.CompletedProcess[str]:
    cmd = [*(_privileged() if privileged else []), *argv]
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    except FileNotFoundError as e:
        raise AgentError(f"{cmd[0]} is not installed here: {e}; use --supervisor process", kind="supervisor") from None
    except subprocess.TimeoutExpired:
        raise AgentError(f"`{' '.join(cmd)}` did not finish within {timeout_s:.0f} s", kind="supervisor") from None


def _check(p: subprocess.CompletedProcess[str], what: str, unit: str) -> None:
    if p.returncode != 0:
        detail = (p.stderr.strip() or p.stdout.strip() or f"exit {p.returncode}").splitlines()[-1]
        raise AgentError(f"`{what}` failed: {detail}. See `journalctl -u {unit}`", kind="supervisor",
                         journal=journal(unit, 10))


def render(lay: Layout, release_id: str, user: Optional[str] = None) -> str:
    """The unit text for one release of this root."""
    rel = lay.release(release_id)
    config = read_json(rel / "config.json", {}) or {}
    if "variant" not in config or "port" not in config:
        raise AgentError(f"{rel}/config.json is missing or incomplete; push the release again", kind="missing")
    return render_unit(
        manifest=str(rel / "model" / "manifest.json"), user=user or getpass.getuser(), workdir=str(rel),
        state_dir=str(lay.logs), python=str(lay.release_python(rel)), variant=str(config["variant"]),
        source=str(config.get("source", "synthetic")), port=int(config["port"]), pythonpath=str(rel / "code"),
        extra_args=daemon_cmd.config_args(config, lay), writable=daemon_cmd.writable_dirs(config, lay),
    )


def _install(lay: Layout, unit: str, text: str) -> bool:
    path = UNIT_DIR / unit
    try:
        if path.read_text() == text:
            return False
    except OSError:
        pass
    lay.run.mkdir(parents=True, exist_ok=True)
    tmp = lay.run / unit
    tmp.write_text(text)
    p = _run(["install", "-m", "0644", str(tmp), str(path)])
    if p.returncode != 0:
        raise AgentError(f"cannot install {path}: {p.stderr.strip()}; deploy as root or allow passwordless sudo, "
                         "or use --supervisor process", kind="supervisor")
    _check(_run(["systemctl", "daemon-reload"]), "systemctl daemon-reload", unit)
    return True


def parse_timespan(text: str) -> Optional[float]:
    """Seconds of a systemd time span as `systemctl show` prints it; None for infinity or an unreadable value."""
    text = text.strip()
    if not text or text == "infinity":
        return None
    parts = _SPAN.findall(text)
    if not parts or _SPAN.sub("", text).strip():
        return None
    return sum(float(n) * _SPAN_UNITS[u] for n, u in parts)


def start_timeout_s(unit: str) -> float:
    """How long `systemctl start/restart` may take: the unit's own TimeoutStartSec, plus TimeoutStopSec for the stop of a
    restart, plus a margin; START_TIMEOUT_S when systemd does not say (a drop-in may raise it on a slow device)."""
    p = _run(["systemctl", "show", unit, "--property=TimeoutStartUSec,TimeoutStopUSec"], privileged=False)
    spans = dict(line.partition("=")[::2] for line in p.stdout.splitlines() if "=" in line)
    start, stop = parse_timespan(spans.get("TimeoutStartUSec", "")), parse_timespan(spans.get("TimeoutStopUSec", ""))
    if start is None or stop is None:
        return START_TIMEOUT_S
    return max(START_TIMEOUT_S, start + stop + 30.0)


def start(lay: Layout, release_id: str, restart: bool) -> dict[str, Any]:
    """Install the unit for ``release_id`` if it changed, enable it, start or restart it (waits for READY=1)."""
    unit = unit_name(lay)
    changed = _install(lay, unit, render(lay, release_id))
    _check(_run(["systemctl", "enable", unit]), f"systemctl enable {unit}", unit)
    # The unit file and its enable link must survive a power cut: sync that filesystem.
    _run(["sync", "-f", str(UNIT_DIR)])
    action = "restart" if restart or changed else "start"
    _check(_run(["systemctl", action, unit], start_timeout_s(unit)), f"systemctl {action} {unit}", unit)
    view = show(unit)
    return {"unit": unit, "installed": changed, "systemd": view}


def follow(lay: Layout, release_id: str) -> str:
    """Re-render the installed unit for the release just made current, durably, without restarting it.

    So a boot after a power cut between the ``current`` switch and the restart starts the release
    ``current`` names, not the one before it (seen on the emulated Pi). The restart that follows
    the switch finds the unit unchanged and restarts it."""
    unit = unit_name(lay)
    if _install(lay, unit, render(lay, release_id)):
        _run(["sync", "-f", str(UNIT_DIR)])
    return unit


def installed(lay: Layout) -> bool:
    """True when systemd knows this root's unit (``LoadState`` is not ``not-found``)."""
    return show(unit_name(lay)).get("LoadState", "not-found") != "not-found"


def stop(lay: Layout) -> dict[str, Any]:
    """Stop and disable the unit; an AgentError when systemctl fails or systemd still reports it active."""
    unit = unit_name(lay)
    before = show(unit)
    if before.get("LoadState", "not-found") == "not-found":
        return {"unit": unit, "was_running": False}
    _check(_run(["systemctl", "stop", unit], START_TIMEOUT_S), f"systemctl stop {unit}", unit)
    _check(_run(["systemctl", "disable", unit]), f"systemctl disable {unit}", unit)
    after = show(unit)
    if after.get("ActiveState") not in ("inactive", "failed"):
        raise AgentError(f"systemctl stop {unit} returned, but systemd reports it {after.get('ActiveState')}/"
                         f"{after.get('SubState')}; see `journalctl -u {unit}`", kind="supervisor", systemd=after)
    return {"unit": unit, "was_running": before.get("ActiveState") in ("active", "activating", "reloading"),
            "systemd": after}


def show(unit: str) -> SystemdView:
    """systemd's own view of the unit (``systemctl show``)."""
    p = _run(["systemctl", "show", unit, "--property=" + ",".join(SHOW_PROPERTIES)], privileged=False)
    view: dict[str, Any] = {"unit": unit}
    for line in p.stdout.splitlines():
        key, _, value = line.partition("=")
        if key in ("NRestarts", "MainPID", "ExecMainStatus"):
            try:
                view[key] = int(value or 0)
            except ValueError:
                view[key] = 0
        elif key:
            view[key] = value
    return view  # type: ignore[return-value]


def running(view: SystemdView) -> bool:
    """True when systemd says the daemon runs (after READY=1, for Type=notify)."""
    return view.get("ActiveState") == "active" and view.get("SubState") == "running" and bool(view.get("MainPID"))


def main_process(view: SystemdView) -> Optional[ProcessRef]:
    """The unit's main process, exactly."""
    pid = int(view.get("MainPID") or 0)
    return ProcessRef.of(pid) if pid else None


def journal(unit: str, lines: int) -> list[str]:
    """The unit's last journal lines (``journalctl -u UNIT -n N --no-pager -o short-iso``)."""
    argv = ["journalctl", "-u", unit, "-n", str(int(lines)), "--no-pager", "-o", "short-iso", "-q"]
    try:
        p = _run(argv, privileged=False)
        if p.returncode != 0 or (not p.stdout.strip() and os.geteuid() != 0):
            # Another user's system journal may need the adm/systemd-journal group, or sudo.
            q = _run(argv, privileged=True)
            if q.returncode == 0:
                p = q
    except AgentError as e:
        return [str(e)]
    return p.stdout.splitlines()[-lines:] if lines > 0 else []


def logs(lay: Layout, lines: int) -> LogsAnswer:
    """journald's lines for the unit, systemd's view of it, and the results file."""
    unit = unit_name(lay)
    view = show(unit)
    return {
        "source": "journald",
        "daemon": journal(unit, lines),
        "supervisor": [f"{k}={view.get(k)}" for k in SHOW_PROPERTIES if k in view],
        "results": tail(lay.results, lines),
        "follow": ["journalctl", "-u", unit, "-n", str(int(lines)), "-f", "--no-pager", "-o", "short-iso", "-q"],
    }
