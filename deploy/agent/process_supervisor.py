"""The process supervisor: where systemd is not used, a detached agent process runs the daemon and restarts it.

``agent.pyz supervise --dir D`` runs in its own session (detached from the SSH channel), holds
``run/supervisor.lock`` for its whole life (a second supervisor of the same root exits at once),
records itself and the daemon as exact process references (``run/supervisor.json``,
``run/daemon.json``: pid + start time + boot id) and restarts the daemon of ``current`` when it
exits, with a doubling backoff (1 s … 30 s, reset after a minute of running). SIGTERM stops the
daemon (SIGKILL after 10 s) and then itself. It has no watchdog: a hung daemon is noticed by the
daemon's own ``/healthz``, not here.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import subprocess
import time
from typing import Any, Optional

from deploy.agent import daemon as daemon_cmd
from deploy.agent.errors import AgentError
from deploy.agent.layout import Layout, read_json
from deploy.agent.logs import tail
from deploy.agent.procs import ProcessRef, write_ref
from deploy.agent.runner import agent_command

STOP_GRACE_S = 10.0
# Until the new supervisor has recorded itself. Python compiles a zipapp's modules on every start (no .pyc cache):
# under qemu-user at load 10 that alone took 6.8-12.2 s here, so 10 s failed pushes to the emulated Pi at random.
START_TIMEOUT_S = 60.0


def _log(msg: str) -> None:
    print(time.strftime("%Y-%m-%d %H:%M:%S"), msg, flush=True)


def _write_state(lay: Layout, state: dict[str, Any]) -> None:
    tmp = lay.state.with_name(f".state.json.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(state, indent=1, sort_keys=True))
    os.replace(str(tmp), str(lay.state))  # runtime state: atomic, not durable (stale after a reboot anyway)


def supervise(lay: Layout) -> dict[str, Any]:
    """Run the daemon of ``current`` until SIGTERM, restarting it on failure."""
    lay.ensure()
    lock_fd = os.open(str(lay.supervisor_lock), os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(lock_fd)
        _log(f"another supervisor already runs for {lay.root}; exiting")
        return {"stopped": False, "error": "another supervisor runs"}
    stopping = {"flag": False}
    child: dict[str, Optional[subprocess.Popen[bytes]]] = {"p": None}

    def on_term(signum: int, frame: Any) -> None:
        stopping["flag"] = True
        p = child["p"]
        if p is not None and p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    me = ProcessRef.of(os.getpid())
    if me is not None:
        write_ref(lay.supervisor_ref, me)
    restarts = 0
    backoff_s = 1.0
    state: dict[str, Any] = {"supervisor": me.to_json() if me else None, "supervisor_pid": os.getpid(), "restarts": 0,
                             "started": time.time()}
    try:
        while not stopping["flag"]:
            rid = lay.current_id()
            if rid is None or not lay.is_complete(rid):
                _log(f"no complete current release ({rid}); waiting")
                time.sleep(2.0)
                continue
            rel = lay.release(rid).resolve()
            config = read_json(rel / "config.json", {}) or {}
            cmd = daemon_cmd.command(str(lay.release_python(rel)), str(rel / "model" / "manifest.json"), config,
                                     str(lay.results), lay)
            env = dict(os.environ, PYTHONPATH=str(rel / "code"), PYTHONUNBUFFERED="1")
            _log(f"starting release {rid}: {' '.join(cmd)}")
            with open(lay.daemon_log, "ab") as out:
                p = subprocess.Popen(cmd, cwd=str(rel), env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
            child["p"] = p
            ref = ProcessRef.of(p.pid)
            if ref is not None:
                write_ref(lay.daemon_ref, ref)
            started = time.monotonic()
            state.update(release=rid, daemon=ref.to_json() if ref else None, daemon_pid=p.pid, daemon_started=time.time(),
                         port=config.get("port"), variant=config.get("variant"), restarts=restarts,
                         last_exit=state.get("last_exit"))
            _write_state(lay, state)
            if stopping["flag"]:  # a SIGTERM that arrived between the check and Popen
                p.send_signal(signal.SIGTERM)
            code = p.wait()
            ran_s = time.monotonic() - started
            state["last_exit"] = code
            with contextlib.suppress(FileNotFoundError):
                lay.daemon_ref.unlink()
            if stopping["flag"]:
                _log(f"daemon exited with {code} after stop request")
                break
            restarts += 1
            if ran_s > 60:
                backoff_s = 1.0
            _log(f"daemon exited with {code} after {ran_s:.1f} s; restart {restarts} in {backoff_s:.0f} s")
            state.update(restarts=restarts, daemon=None, daemon_pid=None)
            _write_state(lay, state)
            end = time.monotonic() + backoff_s
            while time.monotonic() < end and not stopping["flag"]:
                time.sleep(0.1)
            backoff_s = min(backoff_s * 2, 30.0)
    finally:
        last = child["p"]
        if last is not None and last.poll() is None:
            last.send_signal(signal.SIGTERM)
            try:
                last.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                last.kill()
                last.wait()
        for f in (lay.daemon_ref, lay.supervisor_ref):
            with contextlib.suppress(FileNotFoundError):
                f.unlink()
        state.update(daemon=None, daemon_pid=None, supervisor=None, supervisor_pid=None, stopped=time.time())
        _write_state(lay, state)
        os.close(lock_fd)
    return {"stopped": True}


def supervisor(lay: Layout) -> Optional[ProcessRef]:
    """The running supervisor of this root, exactly (None when there is none)."""
    ref = ProcessRef.load(lay.supervisor_ref)
    return ref if ref is not None and ref.alive() else None


def daemon(lay: Layout) -> Optional[ProcessRef]:
    """The daemon the supervisor runs now, exactly (None when there is none)."""
    ref = ProcessRef.load(lay.daemon_ref)
    return ref if ref is not None and ref.alive() else None


def stop(lay: Layout, timeout_s: float) -> dict[str, Any]:
    """SIGTERM the supervisor (which stops the daemon); SIGKILL both, exactly them, if they outlive ``timeout_s``."""
    sup = supervisor(lay)
    if sup is None:
        # A daemon left without its supervisor (the supervisor was SIGKILLed): stop it too.
        orphan = daemon(lay)
        if orphan is not None and orphan.signal(signal.SIGTERM) and not orphan.wait_gone(timeout_s):
            orphan.signal(signal.SIGKILL)
            orphan.wait_gone(5)
        return {"was_running": orphan is not None}
    sup.signal(signal.SIGTERM)
    if sup.wait_gone(timeout_s + STOP_GRACE_S):
        return {"was_running": True}
    d = daemon(lay)
    sup.signal(signal.SIGKILL)
    if d is not None:
        d.signal(signal.SIGKILL)
    if not sup.wait_gone(5):
        raise AgentError(f"the supervisor (pid {sup.pid}) survived SIGKILL; check the device", kind="supervisor")
    return {"was_running": True, "killed": True}


def start(lay: Layout) -> dict[str, Any]:
    """Start the supervisor detached, unless one runs already; wait until it has recorded itself."""
    sup = supervisor(lay)
    if sup is not None:
        return {"already_running": True, "supervisor_pid": sup.pid}
    lay.ensure()
    with open(lay.supervisor_log, "ab") as out:
        p = subprocess.Popen([*agent_command(), "supervise", "--dir", str(lay.root)],
                             stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                             start_new_session=True, cwd=str(lay.root), close_fds=True)
    end = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < end:
        ref = ProcessRef.load(lay.supervisor_ref)
        if ref is not None and ref.pid == p.pid and ref.alive():
            return {"already_running": False, "supervisor_pid": p.pid}
        if p.poll() is not None:
            break
        time.sleep(0.05)
    why = f"it exited {p.returncode}" if p.poll() is not None else f"it did not record itself within {START_TIMEOUT_S:.0f} s"
    raise AgentError(f"the supervisor did not start ({why}): " + " | ".join(tail(lay.supervisor_log, 5)), kind="supervisor")


def state(lay: Layout) -> dict[str, Any]:
    """The supervisor's runtime state (release, restarts, last exit code)."""
    st = read_json(lay.state, {}) or {}
    return st if isinstance(st, dict) else {}

