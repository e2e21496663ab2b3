"""dashboard: one live page on this host for a fleet of Pis, through SSH local port forwards.

``python -m deploy dashboard --host H [--host H2 ... | --inventory pis.toml] [--port P] [--no-browser]``

- Per device one pinned SSH connection (``deploy.connect``: unknown or changed host keys are
  refused) and one local forward ``127.0.0.1:LPORT → the Pi's 127.0.0.1:DAEMON_PORT``
  (``deploy.tunnel``): nothing new listens on the Pi, and ``http://127.0.0.1:LPORT/`` is that
  device's own page.
- A watcher thread per device asks ``/page.json?images=frame&history=0`` through the forward
  every ``--interval-s``, with ``--timeout-s``. A refused forward (daemon stopped), a timeout,
  an SSH failure or an unhealthy ``/healthz`` turns the card red with the reason; a lost SSH
  connection is re-opened with backoff. Devices never wait for each other.
- The page on ``127.0.0.1:--port`` gets the fleet by server-sent events every 0.5 s, as the
  device page does. A card turns red within ``red_within_s()``: one interval, one timeout, one
  push and half a second for delivery, 4 s with the defaults; that is the bound for a daemon
  that hangs. A stopped daemon is quicker (the Pi refuses the forward at once: well under a
  second here), so is an unreachable Pi once the connection fails.
- ``/d/NAME/metrics`` passes each device's ``/metrics`` through, so a Prometheus on this host
  can scrape the fleet over the same pinned connections.
- Ctrl-C (or SIGTERM) closes the forwards and the SSH connections, then exits 0.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import logging
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
import webbrowser
from collections.abc import Generator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Optional
from urllib.parse import unquote

import paramiko

from deploy.connect import ConnectOptions, connect
from deploy.dashboard_page import DASHBOARD_HTML
from deploy.errors import DeployError
from deploy.targets import Target
from deploy.tunnel import LocalForward
from device.server import local_host

DEFAULT_PORT = 8787
PUSH_INTERVAL_S = 0.5
DEFAULT_INTERVAL_S, DEFAULT_TIMEOUT_S = 1.0, 2.0


def red_within_s(interval_s: float = DEFAULT_INTERVAL_S, timeout_s: float = DEFAULT_TIMEOUT_S) -> float:
    """How long a failing device's card may stay green: a poll interval, a timeout, a push, delivery."""
    return interval_s + timeout_s + PUSH_INTERVAL_S + 0.5
RECONNECT_AFTER_TIMEOUTS = 3
CLOSE_WITHIN_S = 5.0  # Ctrl-C waits this long at most for the devices' threads and connections  # polls in a row that time out before the SSH connection is re-opened
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # 127.0.0.1 never goes through a proxy


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The dashboard's own options (the targets come from the deploy CLI's common options)."""
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="serve the fleet page on 127.0.0.1:PORT (0 picks a free one)")
    p.add_argument("--no-browser", action="store_true", help="do not open the page in a browser")
    p.add_argument("--interval-s", type=float, default=DEFAULT_INTERVAL_S, metavar="S", help="ask each device for its state this often")
    p.add_argument("--timeout-s", type=float, default=DEFAULT_TIMEOUT_S, metavar="S",
                   help="a device that does not answer within this is shown red")
    for action in p._actions:  # the common --json means something else here
        if action.dest == "json":
            action.help = "print one JSON line with the page's URL and each device's forward once serving"


@dataclass
class DeviceState:
    """What one card shows."""

    index: int
    name: str
    address: str
    forward: str
    ok: bool = False
    reason: str = "connecting"
    updated: Optional[float] = None  # wall time of the last answer
    failing_since: Optional[float] = None
    seq: Optional[int] = None
    label: Optional[str] = None
    score: Optional[float] = None
    fps: Optional[float] = None
    frames: Optional[int] = None
    p99_ms: dict[str, Optional[float]] = field(default_factory=dict)
    variant: Optional[str] = None
    runtime: Optional[str] = None
    emulated: Optional[str] = None
    temperature_c: Optional[float] = None
    throttled_flags: list[str] = field(default_factory=list)
    frame_src: Optional[str] = None

    def to_json(self, with_frame: bool = True) -> dict[str, Any]:
        """JSON-ready dict (the frame as a data URL only when asked)."""
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        if not with_frame:
            d.pop("frame_src")
        return d


class DeviceWatch:
    """One device: its SSH connection, its forward, and a thread that polls it."""

    def __init__(self, index: int, target: Target, options: ConnectOptions, interval_s: float, timeout_s: float):
        self.target = target
        self.options = options
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.conn: Any = None
        self._lock = threading.Lock()
        self.forward = LocalForward(self._transport, target.daemon_port, label=target.label, open_timeout_s=timeout_s)
        self.state = DeviceState(index, target.label, target.address, self.forward.url)
        self._timeouts = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"watch-{target.label}", daemon=True)

    def _transport(self) -> Optional[paramiko.Transport]:
        conn = self.conn
        return None if conn is None else conn.client.get_transport()

    def start(self) -> None:
        """Connect and poll in the background."""
        self._thread.start()

    def _fail(self, reason: str) -> None:
        with self._lock:
            s = self.state
            s.ok, s.reason = False, reason
            if s.failing_since is None:
                s.failing_since = time.time()

    def _disconnect(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def _run(self) -> None:
        backoff = self.interval_s
        while not self._stop.is_set():
            if self.conn is None:
                try:
                    conn = connect(self.target, self.options)
                    transport = conn.client.get_transport()
                    if transport is not None:
                        transport.set_keepalive(10)
                    self.conn = conn
                    backoff = self.interval_s
                except DeployError as e:
                    self._fail(str(e))
                    self._stop.wait(backoff)
                    backoff = min(backoff * 2, 30.0)
                    continue
                except Exception as e:  # one device's surprise must not stop the others
                    self._fail(f"cannot connect to {self.target.address}: {type(e).__name__}: {e}")
                    self._stop.wait(backoff)
                    backoff = min(backoff * 2, 30.0)
                    continue
            self.poll()
            self._stop.wait(self.interval_s)

    def poll(self) -> None:
        """Ask the daemon for its state once, through the forward; update the card."""
        url = self.forward.url + "/page.json?images=frame&history=0"
        try:
            with _OPENER.open(url, timeout=self.timeout_s) as r:
                doc = json.load(r)
        except (OSError, ValueError, http.client.HTTPException) as e:  # HTTPException: closed without an answer
            transport = self._transport()
            if transport is None or not transport.is_active():
                self._disconnect()
                self._fail(f"lost the SSH connection to {self.target.address}; reconnecting")
                return
            timed_out = isinstance(e, TimeoutError) or "timed out" in str(e)
            self._timeouts = self._timeouts + 1 if timed_out else 0
            if timed_out:
                self._fail(f"the daemon on {self.target.label} did not answer within {self.timeout_s:g} s")
                if self._timeouts >= RECONNECT_AFTER_TIMEOUTS:
                    self._disconnect()
            else:
                self._fail(self.forward.last_error or f"the daemon on {self.target.label} did not answer: {type(e).__name__}: {e}")
            return
        self._timeouts = 0
        self._update(doc)

    def _update(self, doc: dict[str, Any]) -> None:
        stats = doc.get("stats") or {}
        health = doc.get("health") or {}
        shown = doc.get("shown") or {}
        hw = doc.get("hardware") or {}
        with self._lock:
            s = self.state
            s.ok = bool(health.get("ok"))
            s.reason = str(health.get("reason", ""))
            s.updated = time.time()
            s.failing_since = None if s.ok else (s.failing_since or s.updated)
            s.fps, s.frames = stats.get("fps"), stats.get("frames")
            s.p99_ms = {k: v.get("p99_ms") for k, v in (stats.get("latency_ms") or {}).items() if isinstance(v, dict)}
            s.variant = stats.get("variant")
            s.runtime = " ".join(str(x) for x in (stats.get("runtime"), stats.get("runtime_version")) if x) or None
            s.emulated, s.temperature_c = hw.get("emulated"), hw.get("temperature_c")
            s.throttled_flags = [f for f in hw.get("throttled_flags") or [] if f.endswith("now")]
            if shown:
                top = (shown.get("top") or [{}])[0]
                s.seq, s.label, s.score = shown.get("seq"), top.get("label"), top.get("score")
                src = ((shown.get("images") or {}).get("frame") or {}).get("src")
                if src:
                    s.frame_src = src

    def snapshot(self) -> DeviceState:
        """A consistent copy of the card."""
        with self._lock:
            return DeviceState(**{k: getattr(self.state, k) for k in self.state.__dataclass_fields__})

    def metrics(self) -> tuple[int, bytes]:
        """(status, body) of the device's /metrics through the forward."""
        try:
            with _OPENER.open(self.forward.url + "/metrics", timeout=max(self.timeout_s, 5.0)) as r:
                return int(r.status), r.read()
        except urllib.error.HTTPError as e:
            return int(e.code), e.read()
        except OSError as e:
            return 502, f"{self.forward.last_error or e}\n".encode()

    def stop(self) -> None:
        """Ask the polling thread to end (``close`` waits for it)."""
        self._stop.set()

    def close(self) -> None:
        """Stop polling, close the forward and the SSH connection."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self.timeout_s + 2)
        self.forward.close()
        self._disconnect()


class Fleet:
    """The watchers, and the documents the page gets."""

    def __init__(self, watches: list[DeviceWatch]):
        self.watches = watches

    def doc(self, with_frames: bool = True) -> dict[str, Any]:
        """Every card, in target order."""
        return {"t": round(time.time(), 3), "devices": [w.snapshot().to_json(with_frames) for w in self.watches]}

    def events(self, stop: threading.Event) -> Generator[bytes, None, None]:
        """The fleet page's event stream: frames only when a card's frame changed."""
        yield b"retry: 2000\n\n"
        sent: dict[int, Optional[str]] = {}
        while not stop.is_set():
            doc = self.doc()
            for d in doc["devices"]:
                if sent.get(d["index"]) == d["frame_src"]:
                    d.pop("frame_src")
                else:
                    sent[d["index"]] = d["frame_src"]
            yield b"event: fleet\ndata: " + json.dumps(doc, separators=(",", ":")).encode() + b"\n\n"
            stop.wait(PUSH_INTERVAL_S)


def _handler(fleet: Fleet, stopping: threading.Event) -> type[BaseHTTPRequestHandler]:
    by_name = {w.target.label: w for w in fleet.watches}

    class Handler(BaseHTTPRequestHandler):
        server_version = "edgekit-dashboard"
        timeout = 30.0

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _send(self, code: int, body: bytes, ctype: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if not local_host(self.headers.get("Host")):
                self._send(403, b"the dashboard answers requests for 127.0.0.1 or localhost only\n", "text/plain")
            elif path == "/":
                self._send(200, DASHBOARD_HTML.encode(), "text/html; charset=utf-8")
            elif path == "/fleet.json":
                self._send(200, json.dumps(fleet.doc(), indent=1).encode(), "application/json")
            elif path == "/events":
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream; charset=utf-8")
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                stream = fleet.events(stopping)
                try:
                    for chunk in stream:
                        self.wfile.write(chunk)
                except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, TimeoutError):
                    pass
                finally:
                    stream.close()
                self.close_connection = True
            elif path.startswith("/d/") and path.endswith("/metrics") and unquote(path[3:-8]) in by_name:
                code, body = by_name[unquote(path[3:-8])].metrics()
                self._send(code, body, "text/plain; version=0.0.4; charset=utf-8")
            else:
                self._send(404, b"no such page: / /events /fleet.json /d/NAME/metrics\n", "text/plain")

    return Handler


def run_dashboard(args: argparse.Namespace, targets: list[Target]) -> int:
    """Open the forwards, serve the fleet page until Ctrl-C, close everything; the exit code."""
    options = ConnectOptions(args.known_hosts, args.trust_new, args.connect_timeout_s)
    # paramiko logs every refused forward ("Secsh channel N open FAILED"); the cards say it once, with the reason
    logging.getLogger("paramiko").addHandler(logging.NullHandler())
    logging.getLogger("paramiko").propagate = False
    stopping = threading.Event()
    watches: list[DeviceWatch] = []
    httpd: Optional[ThreadingHTTPServer] = None
    # Ctrl-C and SIGTERM end the loop; set explicitly, as a process started in the background
    # inherits SIGINT ignored and would otherwise never stop on Ctrl-C
    in_main = threading.current_thread() is threading.main_thread()
    previous = {sig: signal.signal(sig, lambda *_: stopping.set()) for sig in (signal.SIGINT, signal.SIGTERM)} if in_main else {}
    try:
        for i, t in enumerate(targets):
            watches.append(DeviceWatch(i, t, options, args.interval_s, args.timeout_s))
        fleet = Fleet(watches)
        try:
            httpd = ThreadingHTTPServer(("127.0.0.1", args.port), _handler(fleet, stopping))
        except OSError as e:
            raise DeployError(f"cannot serve the dashboard on 127.0.0.1:{args.port}: {e.strerror or e}; "
                              "pass another --port (0 picks a free one)") from None
        httpd.daemon_threads = True
        threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.2}, name="dashboard", daemon=True).start()
        url = f"http://127.0.0.1:{httpd.server_address[1]}/"
        for w in watches:
            w.start()
        if args.json:
            print(json.dumps({"url": url, "devices": [{"name": w.target.label, "address": w.target.address,
                                                       "forward": w.forward.url, "daemon_port": w.target.daemon_port}
                                                      for w in watches]}), flush=True)
        else:
            print(f"dashboard: {url}  (Ctrl-C closes the tunnels)")
            for w in watches:
                print(f"  {w.target.label}: {w.forward.url}/ -> {w.target.address}, its 127.0.0.1:{w.target.daemon_port}")
            sys.stdout.flush()
        if not args.no_browser:
            webbrowser.open(url)
        while not stopping.is_set():
            stopping.wait(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        stopping.set()
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
        for w in watches:
            w.stop()
        # close every device at once: one slow Pi must not hold up Ctrl-C for the others
        closers = [threading.Thread(target=w.close, daemon=True) for w in watches]
        for closer in closers:
            closer.start()
        deadline = time.monotonic() + CLOSE_WITHIN_S
        for closer in closers:
            closer.join(max(0.0, deadline - time.monotonic()))
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if not args.json:
        print(f"dashboard: closed {len(watches)} tunnel{'s' if len(watches) != 1 else ''}", flush=True)
    return 0
