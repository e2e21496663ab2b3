"""collect / collect-status: labelled frames through whoever owns the camera.

A Pi camera opens in one process at a time, so the agent never opens it beside a running daemon:

* **the daemon runs** (under either supervisor): the agent asks it, ``POST /collect`` on its
  loopback port (``device.collect``); it collects from its own pipeline and keeps classifying.
  A release whose daemon was not started with ``--data-dir`` (pushed by an older kit) is told
  to be pushed again;
* **no daemon runs**: the agent starts ``python -m device collect`` of the current release (its
  own venv and code, the same manifest, source and camera options as its daemon), detached, with
  the session's device lock handed down to it: until it ends, a push or a start fails at once
  naming this collection instead of starting a daemon that would find the camera busy. Its
  progress is ``run/collect-status.json``; its output ``logs/collect.log``.

Either way the job is recorded in ``run/collect.json`` and ``collect-status`` reports it (and
``--cancel`` stops it). Frames go to ``data/<label>/`` (``deploy.agent.layout``).
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, Optional

from deploy.agent import locking, supervisor
from deploy.agent.errors import AgentError
from deploy.agent.health import release_port
from deploy.agent.layout import Layout, read_json
from deploy.agent.logs import tail
from deploy.agent.procs import ProcessRef
from deploy.agent.protocol import CollectAnswer, CollectStatusAnswer
from device.labels import label_problem

# The daemon's options that shape the camera and preprocessing: a one-shot collection copies them.
CAMERA_OPTIONS = ("--main", "--lores", "--fps", "--camera-timeout", "--invert")
FINAL_STATES = ("done", "failed", "cancelled")
START_WAIT_S = 20.0


def _request(port: int, method: str, path: str, body: Optional[dict[str, Any]] = None, timeout_s: float = 5.0) -> tuple[int, Any]:
    """One request to the daemon on 127.0.0.1 (never through a proxy); (status, parsed JSON or None)."""
    conn = http.client.HTTPConnection("127.0.0.1", int(port), timeout=timeout_s)
    try:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Connection": "close", "Host": f"127.0.0.1:{port}"}
        if method == "POST":
            headers["Content-Type"] = "application/json"
        conn.request(method, path, body=data if data is not None else (b"" if method == "POST" else None), headers=headers)
        r = conn.getresponse()
        raw = r.read()
        try:
            return int(r.status), json.loads(raw.decode() or "null")
        except ValueError:
            return int(r.status), None
    finally:
        conn.close()


def camera_options(extra_args: list[str]) -> list[str]:
    """The camera and preprocessing options among a release's extra daemon arguments (``--main WxH`` or ``--main=WxH``)."""
    out: list[str] = []
    i = 0
    while i < len(extra_args):
        a = extra_args[i]
        name = a.split("=", 1)[0]
        if name in CAMERA_OPTIONS:
            if "=" in a:
                out.append(a)
            elif i + 1 < len(extra_args):
                out += [a, extra_args[i + 1]]
                i += 1
        i += 1
    return out


def _check(label: str, count: int, interval_s: float) -> None:
    problem = label_problem(label)
    if problem is not None:
        raise AgentError(f"label {label!r} is not a valid file name on the Pi: {problem}; choose another name", kind="bad-request")
    if count < 1 or not 0 <= interval_s <= 3600:
        raise AgentError(f"--count must be at least 1 and --interval-s from 0 to 3600. Got: {count}, {interval_s}",
                         kind="bad-request")


def start(lay: Layout, label: str, count: int, interval_s: float, view_px: int) -> CollectAnswer:
    """Start collecting ``count`` frames of ``label`` through the daemon, or in a one-shot process when none runs."""
    _check(label, count, interval_s)
    rid = lay.current_id()
    if rid is None or not lay.is_complete(rid):
        raise AgentError("nothing to collect with: no release has been pushed here. Collection uses the current release's "
                         "model and camera configuration: run `deploy push` first", kind="missing")
    running = _running_job(lay)
    if running is not None:
        raise AgentError(f"a collection is already running here ({running.get('label')!r}, {running.get('mode')}); "
                         "wait for it or cancel it (Ctrl-C on the `deploy collect` that started it)", kind="busy")
    lay.ensure()
    d = supervisor.daemon(lay)
    if d.running:
        return _through_daemon(lay, d.release or rid, label, count, interval_s, view_px)
    return _one_shot(lay, rid, label, count, interval_s, view_px)


def _through_daemon(lay: Layout, rid: str, label: str, count: int, interval_s: float, view_px: int) -> CollectAnswer:
    port = release_port(lay, rid)
    if not port:
        raise AgentError(f"release {rid} names no daemon port in its config.json; push it again", kind="missing")
    body = {"label": label, "count": count, "interval_s": interval_s, "view_px": view_px}
    deadline = time.monotonic() + START_WAIT_S
    while True:  # a daemon that is starting serves HTTP before its camera delivers: 503 until then
        try:
            code, doc = _request(port, "POST", "/collect", body)
        except (OSError, http.client.HTTPException) as e:
            code, doc = 0, {"error": f"daemon not answering on 127.0.0.1:{port} ({type(e).__name__}: {e})"}
        if code not in (0, 503) or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    err = (doc or {}).get("error") if isinstance(doc, dict) else None
    if code == 404:
        raise AgentError(f"the daemon of release {rid} does not collect ({err}). Push the release again with this kit "
                         "(its daemon then collects), or `deploy stop` and collect again (the camera is then opened "
                         "for the collection alone)", kind="collect")
    if code == 409:
        raise AgentError(f"the daemon is already collecting: {err}", kind="busy")
    if code == 400:
        raise AgentError(f"the daemon refused the request: {err}", kind="bad-request")
    if code != 202 or not isinstance(doc, dict):
        raise AgentError(f"the daemon did not start collecting (HTTP {code}): {err or doc}", kind="collect",
                         log_tail=tail(lay.daemon_log, 10))
    job = {"mode": "daemon", "release": rid, "port": port, "label": label, "count": count, "started": time.time()}
    _write(lay.collect_job, job)
    return {"mode": "daemon", "release": rid, "label": label, "count": count, "dir": str(lay.data / label), "status": doc}


def _one_shot(lay: Layout, rid: str, label: str, count: int, interval_s: float, view_px: int) -> CollectAnswer:
    rel = lay.release(rid).resolve()
    config = read_json(rel / "config.json", {}) or {}
    python = lay.release_python(rel)
    if not python.exists():
        raise AgentError(f"release {rid} has no venv ({python} is missing); push it again", kind="missing")
    cmd = [str(python), "-m", "device", "collect", "--manifest", str(rel / "model" / "manifest.json"),
           "--variant", str(config.get("variant", "int8")), "--source", str(config.get("source", "synthetic")),
           "--label", label, "--count", str(count), "--interval-s", str(interval_s), "--data-dir", str(lay.data),
           "--view-px", str(view_px), "--status-file", str(lay.collect_status), "--json",
           *camera_options([str(x) for x in config.get("extra_args", [])])]
    lay.collect_status.unlink(missing_ok=True)
    fd = locking.held_fd(lay.root)
    env = dict(os.environ, PYTHONPATH=str(rel / "code"), PYTHONUNBUFFERED="1")
    with open(lay.collect_log, "ab") as out:
        out.write(f"--- {time.strftime('%Y-%m-%dT%H:%M:%S%z')} {' '.join(cmd)}\n".encode())
        out.flush()
        # The lock goes with it: while it runs (even after this session ends) no push or start can take the camera.
        p = subprocess.Popen(cmd, cwd=str(rel), env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                             start_new_session=True, pass_fds=(fd,) if fd is not None else ())
    ref = ProcessRef.of(p.pid)
    job = {"mode": "one-shot", "release": rid, "label": label, "count": count, "started": time.time(),
           "process": ref.to_json() if ref else None, "command": cmd}
    _write(lay.collect_job, job)
    end = time.monotonic() + START_WAIT_S
    while time.monotonic() < end:  # until it has opened the camera and written its first status, or failed
        if lay.collect_status.exists():
            break
        if p.poll() is not None:
            raise AgentError(f"`python -m device collect` exited {p.returncode} before collecting: "
                             + " | ".join(tail(lay.collect_log, 3)), kind="collect", log_tail=tail(lay.collect_log, 15))
        time.sleep(0.05)
    return {"mode": "one-shot", "release": rid, "label": label, "count": count, "dir": str(lay.data / label),
            "pid": p.pid, "status": read_json(lay.collect_status, {}) or {"state": "running", "saved": 0}}


def _write(path: Path, doc: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(doc) + "\n")
    os.replace(tmp, path)


def _running_job(lay: Layout) -> Optional[dict[str, Any]]:
    """The recorded job if it is still running, else None."""
    job = read_json(lay.collect_job, None)
    if not isinstance(job, dict):
        return None
    try:
        st = status(lay)
    except AgentError:
        return None
    return job if st.get("status", {}).get("state") == "running" else None


def status(lay: Layout, cancel: bool = False) -> CollectStatusAnswer:
    """The recorded job's status, from the daemon or the one-shot process; ``cancel`` stops it first."""
    job = read_json(lay.collect_job, None)
    if not isinstance(job, dict):
        raise AgentError("no collection has been started on this device", kind="missing")
    mode = job.get("mode")
    if mode == "daemon":
        path = "/collect/cancel" if cancel else "/collect"
        try:
            code, doc = _request(int(job["port"]), "POST" if cancel else "GET", path)
        except (OSError, http.client.HTTPException) as e:
            # The daemon went away (stopped, restarted by a push): its job ended with it.
            return {"mode": "daemon", "job": job, "status": {"state": "failed", "label": job.get("label"),
                                                             "count": job.get("count"),
                                                             "last_error": f"the daemon stopped answering ({e})"}}
        if code != 200 or not isinstance(doc, dict):
            raise AgentError(f"the daemon answered {code} for {path}: {doc}", kind="collect")
        if doc.get("label") != job.get("label"):  # a restarted daemon knows nothing of the job
            doc = {"state": "failed", "label": job.get("label"), "count": job.get("count"),
                   "last_error": "the daemon restarted during the collection; the frames written before are kept"}
        return {"mode": "daemon", "job": job, "status": doc}
    ref = ProcessRef.from_json(job.get("process"))
    alive = ref is not None and ref.alive()
    if cancel and ref is not None and alive:
        ref.signal(signal.SIGTERM)  # it stops taking frames, writes what it took, exits
        ref.wait_gone(10.0)
        alive = ref.alive()
    doc = read_json(lay.collect_status, None)
    st: dict[str, Any] = dict(doc) if isinstance(doc, dict) else {"state": "running", "label": job.get("label"),
                                                                  "count": job.get("count"), "saved": 0}
    if not alive and st.get("state") == "running":
        st["state"] = "failed"
        st["last_error"] = "`python -m device collect` ended early: " + " | ".join(tail(lay.collect_log, 3))
    return {"mode": "one-shot", "job": job, "status": st, "log_tail": [] if alive else tail(lay.collect_log, 5)}
