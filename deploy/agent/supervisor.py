"""Which supervisor runs the daemon — decided once, recorded on the device — and start/stop/restart through it.

**The choice.** ``--supervisor auto`` picks systemd when systemd is PID 1 here
(``/run/systemd/system`` exists, as sd_booted(3) checks) and this user can install units
(root, or passwordless sudo); otherwise the process supervisor. ``EDGEKIT_NO_SYSTEMD=1`` in the
session's environment (the test SSH servers set it) rules systemd out: auto picks the process
supervisor and an explicit ``--supervisor systemd`` is refused, so tests on an ordinary host
never install units into that host's systemd.

**The record.** A push writes its choice to ``<remote-dir>/supervisor.json`` (durably)::

    {"supervisor": "systemd" | "process", "unit": "edgekit-1a2b3c4d.service" | null,
     "requested": "auto" | "systemd" | "process", "reason": "...", "release": "<id>",
     "recorded_at": "2025-11-02T10:00:00+0000"}

Every later command (start, stop, restart, status, logs, rollback) uses the recorded supervisor;
``auto`` there means "the recorded one", and an explicit value that differs is refused. A push
with ``auto`` keeps the record; a push with an explicit value changes it, stopping the daemon
under the old supervisor first so two never fight over the port.
"""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from deploy.agent import durable, process_supervisor, releases, systemd
from deploy.agent.errors import AgentError
from deploy.agent.layout import Layout, read_json
from deploy.agent.procs import ProcessRef
from deploy.agent.protocol import ActivateAnswer, ControlAnswer, SupervisorRecord, SystemdView

NO_SYSTEMD_ENV = "EDGEKIT_NO_SYSTEMD"


def systemd_booted() -> bool:
    """True when systemd is this machine's init (sd_booted: /run/systemd/system exists)."""
    return Path("/run/systemd/system").is_dir()


def systemd_refusal() -> Optional[str]:
    """Why systemd must not be used in this session (``EDGEKIT_NO_SYSTEMD``), or None."""
    value = os.environ.get(NO_SYSTEMD_ENV, "").strip()
    if value.lower() in ("", "0", "no", "false", "off"):
        return None
    return f"{NO_SYSTEMD_ENV}={value} is set in this session: systemd is not meant to be used here"


def _can_manage_units() -> bool:
    if os.geteuid() == 0:
        return True
    try:
        return subprocess.run(["sudo", "-n", "true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def choose(requested: str) -> tuple[str, str]:
    """(supervisor, reason) for ``--supervisor requested`` on this device."""
    refusal = systemd_refusal()
    if requested == "process":
        return "process", "asked for with --supervisor process"
    if requested == "systemd":
        if refusal:
            raise AgentError(f"--supervisor systemd refused: {refusal}; use --supervisor process", kind="supervisor")
        if not systemd_booted():
            raise AgentError("--supervisor systemd: systemd is not running on this device (no /run/systemd/system); "
                             "use --supervisor process", kind="supervisor")
        return "systemd", "asked for with --supervisor systemd"
    if requested != "auto":
        raise AgentError(f"unknown supervisor {requested!r}; choose auto, systemd or process", kind="bad-request")
    if refusal:
        return "process", refusal
    if not systemd_booted():
        return "process", "systemd is not running here (no /run/systemd/system)"
    if not _can_manage_units():
        return "process", "systemd runs, but this user is neither root nor allowed passwordless sudo to install units"
    return "systemd", "systemd runs here and this user can install units"


def plan(lay: Layout, requested: str) -> tuple[str, str]:
    """(supervisor, reason) a push will use: the recorded one for ``auto``, else ``requested`` (checked here)."""
    rec = load_record(lay)
    if requested == "auto" and rec is not None:
        return rec["supervisor"], f"recorded on the device: {rec.get('reason', '')}"
    return choose(requested)


def load_record(lay: Layout) -> Optional[SupervisorRecord]:
    """The recorded choice, or None when no push of this agent made one."""
    rec = read_json(lay.supervisor_record, None)
    if isinstance(rec, dict) and rec.get("supervisor") in ("systemd", "process"):
        return rec  # type: ignore[return-value]
    return None


def _write_record(lay: Layout, mode: str, requested: str, reason: str, release: Optional[str]) -> SupervisorRecord:
    rec: SupervisorRecord = {"supervisor": mode, "unit": systemd.unit_name(lay) if mode == "systemd" else None,
                             "requested": requested, "reason": reason, "release": release,
                             "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    durable.write_json(lay.supervisor_record, rec)
    return rec


def recorded_mode(lay: Layout) -> str:
    """The supervisor every command uses: the recorded one (process when nothing was recorded yet)."""
    rec = load_record(lay)
    return rec["supervisor"] if rec else "process"


@dataclass(frozen=True)
class DaemonView:
    """What runs now, as the active supervisor sees it."""

    supervisor: str
    running: bool
    process: Optional[ProcessRef]
    release: Optional[str]
    restarts: int
    last_exit: Optional[int]
    supervisor_pid: Optional[int] = None
    systemd: Optional[SystemdView] = None
    extra: dict[str, Any] = field(default_factory=dict)


def _release_of(lay: Layout, ref: Optional[ProcessRef]) -> Optional[str]:
    """The release a daemon runs: its working directory, which the kernel resolved to releases/<id>."""
    cwd = ref.cwd() if ref else None
    if cwd and Path(cwd).parent == lay.releases.resolve():
        return Path(cwd).name
    return None


def daemon(lay: Layout) -> DaemonView:
    """The daemon under the recorded supervisor."""
    if recorded_mode(lay) == "systemd":
        view = systemd.show(systemd.unit_name(lay))
        up = systemd.running(view)
        ref = systemd.main_process(view) if up else None
        status = view.get("ExecMainStatus")
        last_exit = None if up or status is None else int(str(status))
        return DaemonView("systemd", up and ref is not None, ref, _release_of(lay, ref), int(view.get("NRestarts") or 0),
                          last_exit, None, view)
    st = process_supervisor.state(lay)
    sup = process_supervisor.supervisor(lay)
    ref = process_supervisor.daemon(lay)
    release = _release_of(lay, ref) or (st.get("release") if ref else None)
    return DaemonView("process", ref is not None, ref, release, int(st.get("restarts") or 0), st.get("last_exit"),
                      sup.pid if sup else None)


def activate(lay: Layout, release_id: str, keep: int) -> ActivateAnswer:
    """Switch ``current`` (``releases.activate``); under systemd the installed unit follows it (``systemd.follow``)."""
    answer = releases.activate(lay, release_id, keep)
    if recorded_mode(lay) == "systemd" and systemd_refusal() is None and systemd_booted() and systemd.installed(lay):
        answer["unit"] = systemd.follow(lay, release_id)
    return answer


def _stop(lay: Layout, mode: str, timeout_s: float) -> dict[str, Any]:
    if mode == "systemd":
        return systemd.stop(lay)
    return process_supervisor.stop(lay, timeout_s)


def _stop_others(lay: Layout, keep: str, timeout_s: float) -> list[str]:
    """Stop whatever another supervisor runs for this root (a switch of supervisor, or a device from an older agent)."""
    steps = []
    if keep != "process" and (process_supervisor.supervisor(lay) or process_supervisor.daemon(lay)):
        process_supervisor.stop(lay, timeout_s)
        steps.append("stopped the daemon under the process supervisor")
    if keep != "systemd" and systemd_refusal() is None and systemd_booted() and systemd.installed(lay):
        out = systemd.stop(lay)
        if out.get("was_running"):
            steps.append(f"stopped and disabled {out['unit']}")
    return steps


def control(lay: Layout, action: str, requested: str = "auto", release: Optional[str] = None, push: bool = False,
            timeout_s: float = 15.0) -> ControlAnswer:
    """start / stop / restart the daemon; ``push`` lets this call choose (and record) the supervisor."""
    rec = load_record(lay)
    if push:
        mode, reason = plan(lay, requested)
        if requested == "auto" and rec is not None:
            reason = rec.get("reason", "")  # kept as it was decided
    elif rec is not None:
        mode, reason = rec["supervisor"], rec.get("reason", "")
        if requested not in ("auto", mode):
            raise AgentError(
                f"the daemon here is supervised by {mode} (recorded by the push of release {rec.get('release')}: "
                f"{reason}); --supervisor {requested} does not match. Use --supervisor auto, or push again with "
                f"--supervisor {requested} to change it", kind="supervisor")
    else:
        mode, reason = choose(requested)
    out: ControlAnswer = {"supervisor": mode, "action": action, "steps": []}
    if action == "stop":
        if rec is None:  # nothing recorded: stop whatever runs, under either supervisor
            out["steps"] = _stop_others(lay, keep="", timeout_s=timeout_s)
            out["was_running"] = bool(out["steps"])
        else:
            res = _stop(lay, mode, timeout_s)
            out["was_running"] = bool(res.get("was_running"))
            out["unit"] = res.get("unit")
        return out
    rid = lay.current_id()
    if rid is None:
        raise AgentError("nothing to start: no release has been pushed to this directory; run `deploy push` first",
                         kind="missing")
    if release is not None and release != rid:
        raise AgentError(f"current is {rid}, not {release}: another deploy switched it; nothing was started",
                         kind="superseded", current=rid)
    out["release"] = rid
    if push or rec is None or rec["supervisor"] != mode:
        out["steps"] = _stop_others(lay, keep=mode, timeout_s=timeout_s)
        out["record"] = _write_record(lay, mode, requested, reason, rid)
    if mode == "systemd":
        before = systemd.show(systemd.unit_name(lay))
        res = systemd.start(lay, rid, restart=action == "restart")
        out["unit"] = res["unit"]
        out["already_running"] = action == "start" and systemd.running(before) and not res["installed"]
        return out
    if action == "restart":
        out["was_running"] = bool(process_supervisor.stop(lay, timeout_s).get("was_running"))
    res = process_supervisor.start(lay)
    out["already_running"] = bool(res.get("already_running"))
    return out
