"""The daemon's HTTP face, on 127.0.0.1 only: /healthz, /stats, /metrics, /latest.

Standard library ``http.server`` in a thread; the daemon passes in a ``StatusProvider``.
Reach it from another machine through an SSH tunnel, never by binding a public address.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

from device.errors import ServerError

HOST = "127.0.0.1"
ENDPOINTS = ("/healthz", "/stats", "/metrics", "/latest")


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


class _Handler(BaseHTTPRequestHandler):
    provider: StatusProvider  # set on the subclass made per server
    server_version = "edgekit-device"

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

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0].rstrip("/") or "/"
        try:
            if path == "/healthz":
                ok, reason = self.provider.health()
                self._json(200 if ok else 503, {"status": "ok" if ok else "starting", "reason": reason})
            elif path == "/stats":
                self._json(200, self.provider.stats())
            elif path == "/metrics":
                self._send(200, self.provider.metrics().encode(), "text/plain; version=0.0.4; charset=utf-8")
            elif path == "/latest":
                self._json(200, self.provider.latest())
            else:
                self._json(404, {"error": f"no endpoint {path}", "endpoints": list(ENDPOINTS)})
        except Exception as e:  # a bug in a report must not take the daemon down
            self._json(500, {"error": f"{type(e).__name__}: {e}"})

    do_HEAD = do_GET


class StatusServer:
    """A threaded HTTP server bound to 127.0.0.1; ``port=0`` picks a free port (see ``.port``)."""

    def __init__(self, provider: StatusProvider, port: int = 8321):
        handler = type("Handler", (_Handler,), {"provider": provider})
        try:
            self.httpd = ThreadingHTTPServer((HOST, port), handler)
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
        self.httpd.shutdown()
        self.httpd.server_close()
