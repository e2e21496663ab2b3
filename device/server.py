"""The daemon's HTTP face, on 127.0.0.1 only: /healthz, /stats, /metrics, /latest, the live page, /collect.

Standard library ``http.server`` in a thread; the daemon passes in a ``StatusProvider`` and,
for the page (``/``, ``/events``, ``/page.json``, ``/frame.png``, ``/input.png``), a
``PageProvider`` (``device.page.Page``). Reach it from another machine through an SSH tunnel,
never by binding a public address. The page's routes answer only requests addressed to
127.0.0.1 or localhost (``Host`` header), so a web page elsewhere cannot read the camera
through a DNS-rebinding name that resolves to 127.0.0.1.

``/collect`` (``device.collect``): GET the job's status; ``POST /collect`` with a JSON body
``{"label": ..., "count": N, "interval_s": S}`` starts one, ``POST /collect/cancel`` stops it.
A POST must name 127.0.0.1 or localhost in ``Host`` and carry ``Content-Type:
application/json``: a web page cannot send that type across origins without a CORS preflight,
which this server never grants, so a page open in a browser on the Pi cannot start one.
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Generator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Optional, Protocol
from urllib.parse import parse_qs

from device.errors import ServerError

HOST = "127.0.0.1"
ENDPOINTS = ("/healthz", "/stats", "/metrics", "/latest")
PAGE_ENDPOINTS = ("/", "/events", "/page.json", "/frame.png", "/input.png")
COLLECT_ENDPOINTS = ("/collect", "/collect/cancel")
MAX_POST_BYTES = 4096
LOCAL_NAMES = ("127.0.0.1", "localhost", "[::1]")
IMAGE_WAIT_S = 1.0  # a request for images waits this long for the pipeline to keep a frame


def local_host(header: Optional[str]) -> bool:
    """True when a ``Host`` header names this machine's loopback (127.0.0.1, localhost, [::1]), any port."""
    host = (header or HOST).strip().lower()
    name = host if host.endswith("]") else host.rsplit(":", 1)[0]
    return name in LOCAL_NAMES


HANG_UPS = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, TimeoutError)  # a client that went away


class StatusProvider(Protocol):
    """What the HTTP server asks the daemon for."""

    def health(self) -> tuple[bool, str]:
        """(healthy, reason)."""
        ...

    def stats(self) -> dict[str, Any]:
        """The /stats document."""
        ...

    def metrics(self) -> str:
        """Prometheus text exposition."""
        ...

    def latest(self) -> dict[str, Any]:
        """The last predictions."""
        ...


class PageProvider(Protocol):
    """What the HTTP server asks the live page for (``device.page.Page``)."""

    def html(self) -> bytes:
        """The page."""
        ...

    def state(self, images: tuple[str, ...] = ..., history_after: Optional[float] = ...) -> dict[str, Any]:
        """The /page.json document."""
        ...

    def image(self, kind: str) -> tuple[Optional[bytes], str]:
        """(PNG or None, note) of ``frame`` or ``input``."""
        ...

    def touch(self) -> None:
        """Somebody wants images."""
        ...

    def wait_kept(self, timeout_s: float) -> bool:
        """Wait for a kept frame."""
        ...

    def events(self, stop: threading.Event) -> Generator[bytes, None, None]:
        """An event stream until ``stop``."""
        ...


class CollectProvider(Protocol):
    """What the HTTP server asks the collector for (``device.collect.Collector`` through the daemon)."""

    def collect_status(self) -> dict[str, Any]:
        """The job's status."""
        ...

    def collect_start(self, doc: Any) -> tuple[int, dict[str, Any]]:
        """(HTTP status, document) for a start request."""
        ...

    def collect_cancel(self) -> dict[str, Any]:
        """Stop the job; its status."""
        ...


class _Handler(BaseHTTPRequestHandler):
    provider: StatusProvider  # set on the subclass made per server
    page: Optional[PageProvider]
    collect: Optional[CollectProvider]
    stopping: threading.Event
    server_version = "edgekit-device"
    timeout = 30.0  # a client that stops reading an event stream frees its thread after this

    def log_message(self, format: str, *args: Any) -> None:  # requests are not worth a log line each
        pass

    def _send(self, code: int, body: bytes, ctype: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, code: int, doc: Any) -> None:
        self._send(code, (json.dumps(doc, indent=1) + "\n").encode(), "application/json")


    def _page(self, path: str, query: dict[str, list[str]]) -> None:
        page = self.page
        if page is None:
            self._json(404, {"error": f"no endpoint {path}: this server has no page", "endpoints": list(ENDPOINTS)})
            return
        if not local_host(self.headers.get("Host")):
            port = self.server.server_address[1]  # type: ignore[index]  # an AF_INET (host, port) pair
            self._json(403, {"error": f"the page answers requests for 127.0.0.1 or localhost only, not {self.headers.get('Host')!r}; "
                             f"reach it through an SSH tunnel (`ssh -L {port}:127.0.0.1:{port} pi@HOST`)"})
            return
        if path == "/":
            self._send(200, page.html(), "text/html; charset=utf-8")
        elif path == "/events":
            self._events(page)
        elif path == "/page.json":
            kinds = tuple(k for k in ",".join(query.get("images", ["frame,input"])).split(",") if k in ("frame", "input"))
            history = query.get("history", ["1"])[0] not in ("0", "no", "false")
            if kinds:
                page.touch()
                page.wait_kept(IMAGE_WAIT_S)
            self._json(200, page.state(kinds, 0.0 if history else None))
        else:
            page.touch()
            page.wait_kept(IMAGE_WAIT_S)
            png, note = page.image(path[1:-len(".png")])
            if png is None:
                self._json(503, {"error": note})
            else:
                self._send(200, png, "image/png")

    def _events(self, page: PageProvider) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Accel-Buffering", "no")
        self.end_headers()
        if self.command == "HEAD":
            return
        stream = page.events(self.stopping)
        try:
            for chunk in stream:
                self.wfile.write(chunk)
                self.wfile.flush()
        except HANG_UPS:
            pass  # the page was closed
        finally:
            stream.close()  # leaves Page.watching(): no more frames kept for this viewer
        self.close_connection = True

    def do_GET(self) -> None:
        path, _, qs = self.path.partition("?")
        path = path.rstrip("/") or "/"
        try:
            if path in PAGE_ENDPOINTS:
                self._page(path, parse_qs(qs))
            elif path == "/healthz":
                ok, reason = self.provider.health()
                self._json(200 if ok else 503, {"status": "ok" if ok else "unhealthy", "reason": reason})
            elif path == "/stats":
                self._json(200, self.provider.stats())
            elif path == "/metrics":
                self._send(200, self.provider.metrics().encode(), "text/plain; version=0.0.4; charset=utf-8")
            elif path == "/latest":
                self._json(200, self.provider.latest())
            elif path == "/collect":
                if self.collect is None:
                    self._no_collect()
                else:
                    self._json(200, self.collect.collect_status())
            else:
                self._json(404, {"error": f"no endpoint {path}", "endpoints": list(ENDPOINTS + PAGE_ENDPOINTS + COLLECT_ENDPOINTS)})
        except Exception as e:  # a bug in a report must not take the daemon down
            self._json(500, {"error": f"{type(e).__name__}: {e}"})

    do_HEAD = do_GET

    def _no_collect(self) -> None:
        self._json(404, {"error": "this daemon does not collect: it was started without --data-dir; "
                         "push the release again with this kit, or stop the daemon and run `python -m device collect`"})

    def do_POST(self) -> None:
        path = self.path.partition("?")[0].rstrip("/")
        try:
            if path not in COLLECT_ENDPOINTS:
                self._json(404, {"error": f"no endpoint POST {path}", "endpoints": [f"POST {p}" for p in COLLECT_ENDPOINTS]})
                return
            if not local_host(self.headers.get("Host")):
                self._json(403, {"error": f"POST answers requests for 127.0.0.1 or localhost only, not {self.headers.get('Host')!r}"})
                return
            ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
            if ctype != "application/json":
                self._json(415, {"error": f"POST {path} takes a JSON body (Content-Type: application/json). Got: {ctype or 'none'}"})
                return
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                length = -1
            if not 0 <= length <= MAX_POST_BYTES:
                self._json(413, {"error": f"the body must be 0 to {MAX_POST_BYTES} bytes with a Content-Length"})
                return
            raw = self.rfile.read(length) if length else b""
            if self.collect is None:
                self._no_collect()
                return
            if path == "/collect/cancel":
                self._json(200, self.collect.collect_cancel())
                return
            try:
                doc = json.loads(raw.decode("utf-8") or "null")
            except (UnicodeDecodeError, ValueError) as e:
                self._json(400, {"error": f"the body is not JSON: {e}"})
                return
            code, answer = self.collect.collect_start(doc)
            self._json(code, answer)
        except Exception as e:  # a bug in a request must not take the daemon down
            self._json(500, {"error": f"{type(e).__name__}: {e}"})


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hung up (a probe timing out, a closed page) is not an error; anything else is printed as before."""
        if isinstance(sys.exc_info()[1], HANG_UPS):
            return
        super().handle_error(request, client_address)


class StatusServer:
    """A threaded HTTP server bound to 127.0.0.1; ``port=0`` picks a free port (see ``.port``)."""

    def __init__(self, provider: StatusProvider, port: int = 8321, page: Optional[PageProvider] = None,
                 collect: Optional[CollectProvider] = None):
        self.stopping = threading.Event()  # ends open event streams on close()
        handler = type("Handler", (_Handler,), {"provider": provider, "page": page, "collect": collect, "stopping": self.stopping})
        try:
            self.httpd = _Server((HOST, port), handler)
        except OSError as e:
            raise ServerError(
                f"cannot serve on {HOST}:{port}: {e.strerror or e}. Is another daemon running? "
                "Stop it, or pass another --port (0 picks a free one)"
            ) from e
        self.httpd.daemon_threads = True
        self.port = int(self.httpd.server_address[1])
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.2}, name="http", daemon=True)

    @property
    def url(self) -> str:
        """Base URL, e.g. http://127.0.0.1:8321."""
        return f"http://{HOST}:{self.port}"

    def start(self) -> None:
        """Serve in a background thread."""
        self._thread.start()

    def close(self) -> None:
        """Stop serving and release the port."""
        self.stopping.set()
        self.httpd.shutdown()
        self.httpd.server_close()
