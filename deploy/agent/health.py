"""Health and status: the daemon's /healthz and /stats read on the device's loopback, and the wait for a release.

Requests go straight to 127.0.0.1 with ``http.client``: no proxy is ever consulted, so a device
with ``http_proxy`` set (common behind corporate networks) does not send its own health checks
to the proxy and roll good releases back.
"""

from __future__ import annotations

import http.client
import json
import time
from typing import Any, Optional

from deploy.agent import supervisor, systemd
from deploy.agent.errors import AgentError
from deploy.agent.layout import Layout, read_json
from deploy.agent.logs import tail
from deploy.agent.protocol import StatusAnswer, WaitAnswer
from deploy.agent.supervisor import DaemonView
from device.hardware import emulation


def http_get(port: int, path: str, timeout_s: float = 2.0) -> tuple[int, bytes]:
    """GET http://127.0.0.1:PORT/PATH directly (never through a proxy); (status, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", int(port), timeout=timeout_s)
    try:
        conn.request("GET", path, headers={"Connection": "close"})
        r = conn.getresponse()
        return int(r.status), r.read()
    finally:
        conn.close()


def release_port(lay: Layout, release_id: Optional[str]) -> Optional[int]:
    """The daemon port a release's config names."""
    if release_id is None:
        return None
    cfg = read_json(lay.release(release_id) / "config.json", {}) or {}
    return int(cfg["port"]) if cfg.get("port") else None


def _stats(port: int) -> dict[str, Any]:
    code, body = http_get(port, "/stats")
    if code != 200:
        raise ValueError(f"/stats answered {code}")
    data = json.loads(body.decode())
    if not isinstance(data, dict):
        raise ValueError("/stats is not a JSON object")
    return data


def wait(lay: Layout, release_id: str, timeout_s: float) -> WaitAnswer:
    """Wait until the daemon of ``release_id`` answers /healthz 200 and has classified frames."""
    lay.check_id(release_id)
    deadline = time.monotonic() + timeout_s
    last = "no answer yet"
    d: Optional[DaemonView] = None
    while time.monotonic() < deadline:
        cur = lay.current_id()
        if cur != release_id:
            raise AgentError(f"current is {cur}, not {release_id}: another deploy switched it while waiting",
                             kind="superseded", current=cur)
        d = supervisor.daemon(lay)
        port = release_port(lay, release_id)
        if d.running and d.release == release_id and port and d.process is not None:
            try:
                code, _ = http_get(port, "/healthz")
                if code == 200:
                    stats = _stats(port)
                    frames = int(stats.get("frames", 0) or 0)
                    if stats.get("pid") not in (None, d.process.pid):
                        last = f"127.0.0.1:{port} is answered by pid {stats.get('pid')}, not the daemon (pid {d.process.pid})"
                    elif frames > 0:
                        return {"healthy": True, "release": release_id, "frames": frames, "stats": stats}
                    else:
                        last = "healthy but no frame classified yet"
                else:
                    last = f"/healthz answered {code}"
            except (OSError, ValueError, http.client.HTTPException) as e:
                last = f"daemon not answering on 127.0.0.1:{port} ({type(e).__name__}: {e})"
        elif d.running:
            last = f"the daemon runs release {d.release}, not {release_id} yet"
        else:
            last = f"daemon not running under {d.supervisor} (last exit code {d.last_exit}, restarts {d.restarts})"
        time.sleep(0.2)
    log_tail = tail(lay.daemon_log, 15)
    if d is not None and d.supervisor == "systemd":
        log_tail = systemd.journal(systemd.unit_name(lay), 15)
    raise AgentError(f"the daemon of release {release_id} was not healthy within {timeout_s:.0f} s: {last}",
                     kind="unhealthy", log_tail=log_tail)


def status(lay: Layout) -> StatusAnswer:
    """Supervisor and daemon state plus the daemon's /stats."""
    d = supervisor.daemon(lay)
    current = lay.current_id()
    release = d.release if d.running else None
    port = release_port(lay, release or current)
    config = read_json(lay.release(release) / "config.json", {}) if release else {}
    out: StatusAnswer = {
        "current": current,
        "release": release,
        "variant": (config or {}).get("variant"),
        "supervisor": d.supervisor,
        "running": d.running,
        "daemon_pid": d.process.pid if d.process else None,
        "supervisor_pid": d.supervisor_pid,
        "restarts": d.restarts,
        "last_exit": d.last_exit,
        "port": port,
        "stats": None,
        "stats_error": None,
        "emulated": emulation(),
    }
    if d.systemd is not None:
        out["systemd"] = d.systemd
    if d.running and port:
        try:
            out["stats"] = _stats(port)
        except (OSError, ValueError, http.client.HTTPException) as e:
            out["stats_error"] = f"daemon not answering on 127.0.0.1:{port}: {e}"
    return out
