"""The HTTP endpoints on a real server bound to 127.0.0.1."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import pytest

from device.pipeline import Prediction, Result
from device.server import StatusServer
from device.stats import Stats, prometheus_text


class Provider:
    def __init__(self) -> None:
        self.stats_ = Stats(window=100)
        self.healthy = False

    def health(self) -> tuple[bool, str]:
        return self.healthy, "ok" if self.healthy else "no frame yet"

    def stats(self) -> dict[str, Any]:
        return self.stats_.snapshot()

    def metrics(self) -> str:
        return prometheus_text(self.stats_, {"variant": "int8"})

    def latest(self) -> dict[str, Any]:
        return {"frames": []}


def get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.headers["Content-Type"], r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers["Content-Type"], e.read().decode()


@pytest.fixture
def server():  # type: ignore[no-untyped-def]
    prov = Provider()
    s = StatusServer(prov, port=0)
    s.start()
    yield s, prov
    s.close()


def test_binds_loopback_only_and_serves_endpoints(server) -> None:  # type: ignore[no-untyped-def]
    s, prov = server
    assert s.httpd.server_address[0] == "127.0.0.1" and s.port > 0
    code, _, body = get(s.url + "/healthz")
    assert code == 503 and json.loads(body)["status"] == "unhealthy"
    for i in range(50):
        prov.stats_.add(Result(i, f"f{i}", 0, (Prediction(1, "Trouser", 0.9),), (1000, 20000, 40000, 3000, 64000 + i * 1000), 1))
    prov.healthy = True
    code, _, body = get(s.url + "/healthz")
    assert code == 200
    code, ctype, body = get(s.url + "/stats")
    doc = json.loads(body)
    assert code == 200 and ctype == "application/json"
    assert doc["frames"] == 50 and doc["accuracy"] == 1.0
    total = doc["latency_ms"]["total"]
    assert total["count"] == 50 and total["min_ms"] == pytest.approx(0.064) and total["max_ms"] == pytest.approx(0.113)
    assert total["p50_ms"] <= total["p90_ms"] <= total["p99_ms"] <= total["max_ms"]
    code, ctype, body = get(s.url + "/metrics")
    assert code == 200 and ctype.startswith("text/plain; version=0.0.4")
    assert "# TYPE edgekit_stage_latency_seconds histogram" in body
    buckets = [ln for ln in body.splitlines() if ln.startswith('edgekit_stage_latency_seconds_bucket{stage="total"')]
    counts = [int(ln.rsplit(" ", 1)[1]) for ln in buckets]
    assert counts == sorted(counts) and counts[-1] == 50 and buckets[-1].count('le="+Inf"') == 1
    assert 'edgekit_stage_latency_seconds_bucket{stage="invoke",le="3.3e-05"} 0' in body
    assert 'edgekit_stage_latency_seconds_bucket{stage="invoke",le="4.7e-05"} 50' in body
    code, _, body = get(s.url + "/nope")
    assert code == 404 and "/stats" in body


def test_a_client_that_hangs_up_mid_request_is_not_a_traceback(server, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    """A health probe that gives up (curl --max-time, a killed dashboard) resets the connection; the daemon says nothing."""
    import socket
    import struct
    import time

    s, _ = server
    for path in ("/stats", "/metrics", "/healthz") * 10:
        c = socket.create_connection(("127.0.0.1", s.port), timeout=5)
        c.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close with a reset, not a FIN
        c.close()
    time.sleep(0.5)
    code, _, _ = get(s.url + "/stats")  # still serving
    err = capsys.readouterr().err
    assert code == 200 and "Traceback" not in err and "Exception occurred" not in err, err[-1500:]
