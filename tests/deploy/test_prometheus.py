"""deploy/prometheus/: promtool on the shipped rules and configs, and a real Prometheus scraping a daemon
behind a real sshd "Pi" through the shipped SSH tunnel command."""

from __future__ import annotations

import bisect
import json
import re
import shlex
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import pytest

from deploy.testing import SSHServer, free_port
from device.stats import BUCKETS_S
from device.testing import DaemonProcess

PROM_DIR = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"
PROMETHEUS, PROMTOOL = "/usr/bin/prometheus", "/usr/bin/promtool"
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _need(tool: str) -> None:
    if not Path(tool).exists():
        pytest.skip(f"{tool} missing: `apt-get install prometheus` (it ships promtool)")


def test_promtool_passes_the_alert_rule_tests_and_the_example_configs() -> None:
    _need(PROMTOOL)
    p = subprocess.run([PROMTOOL, "test", "rules", "edgekit-rules.test.yml"], cwd=PROM_DIR, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and "SUCCESS" in p.stdout, p.stdout + p.stderr
    for config in ("prometheus.yml", "prometheus-dashboard.yml"):
        p = subprocess.run([PROMTOOL, "check", "config", config], cwd=PROM_DIR, capture_output=True, text=True, timeout=60)
        assert p.returncode == 0 and "5 rules found" in p.stdout, p.stdout + p.stderr
    rules = (PROM_DIR / "edgekit-rules.yml").read_text()
    for alert in ("EdgekitDaemonDown", "EdgekitFpsBelowTarget", "EdgekitInvokeP99OverBudget", "EdgekitThrottled"):
        assert f"alert: {alert}" in rules and alert in (PROM_DIR / "edgekit-rules.test.yml").read_text()


def test_tunnel_unit_verifies(tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze missing: `apt-get install systemd`")
    unit = tmp_path / "edgekit-tunnel@kitchen.service"
    unit.write_text((PROM_DIR / "edgekit-tunnel@.service").read_text())
    p = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr


def tunnel_command(env: dict[str, str]) -> list[str]:
    """The shipped unit's ExecStart, with its ${VARS} filled in as systemd would."""
    line = next(ln for ln in (PROM_DIR / "edgekit-tunnel@.service").read_text().splitlines() if ln.startswith("ExecStart="))
    return [re.sub(r"\$\{(\w+)\}", lambda m: env[m.group(1)], w) for w in shlex.split(line[len("ExecStart="):])]


def query(port: int, promql: str, at: float | None = None) -> list[dict[str, Any]]:
    params = {"query": promql, **({"time": f"{at:.3f}"} if at is not None else {})}
    with _OPENER.open(f"http://127.0.0.1:{port}/api/v1/query?{urllib.parse.urlencode(params)}", timeout=10) as r:
        doc = json.load(r)
    assert doc["status"] == "success", doc
    return list(doc["data"]["result"])


def wait_for(cond: Callable[[], Any], timeout_s: float, what: str) -> Any:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        try:
            v = cond()
        except OSError:
            v = None
        if v:
            return v
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for p in procs:
        p.terminate()
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def bucket(seconds: float) -> int:
    return bisect.bisect_left(BUCKETS_S, seconds)


@pytest.mark.slow
def test_real_prometheus_scrapes_through_the_tunnel_and_agrees_with_stats(
        make_pi: Callable[..., SSHServer], deploy_artifacts: Path, tmp_path: Path, processes: list[subprocess.Popen[bytes]]) -> None:
    _need(PROMETHEUS)
    _need(PROMTOOL)
    pi = make_pi()
    t = pi.target
    fps = 100  # the /stats window of 1000 frames is then the last 10 s, as the rate() window below
    daemon = DaemonProcess.start(deploy_artifacts, port=t.daemon_port, extra=("--fps", str(fps)), workdir=tmp_path / "daemon")
    try:
        lport = free_port()
        cmd = tunnel_command({"KNOWN_HOSTS": str(t.known_hosts), "IDENTITY": str(t.identity), "LOCAL_PORT": str(lport),
                              "DAEMON_PORT": str(t.daemon_port), "TARGET": f"ssh://{t.user}@127.0.0.1:{t.port}"})
        processes.append(subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_for(lambda: socket.create_connection(("127.0.0.1", lport), timeout=1).close() or True, 20, "the ssh tunnel")

        # the shipped config, with a 1 s scrape interval and this test's ports
        config = (PROM_DIR / "prometheus.yml").read_text()
        nothing = free_port()  # garage: no tunnel there, so up must be 0
        for old, new in (("scrape_interval: 15s", "scrape_interval: 1s"), ("127.0.0.1:19101", f"127.0.0.1:{lport}"),
                         ("127.0.0.1:19102", f"127.0.0.1:{nothing}")):
            assert old in config, f"deploy/prometheus/prometheus.yml no longer has {old!r}"
            config = config.replace(old, new)
        conf_dir = tmp_path / "prometheus"
        conf_dir.mkdir()
        (conf_dir / "prometheus.yml").write_text(config)
        shutil.copy(PROM_DIR / "edgekit-rules.yml", conf_dir)
        check = subprocess.run([PROMTOOL, "check", "config", "prometheus.yml"], cwd=conf_dir, capture_output=True, text=True, timeout=60)
        assert check.returncode == 0, check.stdout + check.stderr
        pport = free_port()
        with open(tmp_path / "prometheus.log", "wb") as log:  # the child keeps its own descriptor
            processes.append(subprocess.Popen(
                [PROMETHEUS, f"--config.file={conf_dir / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                 f"--web.listen-address=127.0.0.1:{pport}", "--log.level=warn"], stdout=log, stderr=log, stdin=subprocess.DEVNULL))

        def ups() -> dict[str, str]:
            return {r["metric"]["instance"]: r["value"][1] for r in query(pport, 'up{job="edgekit"}')}

        assert wait_for(lambda: ups() if len(ups()) == 2 and ups()["kitchen"] == "1" else None, 60,
                        "a scrape through the tunnel") == {"kitchen": "1", "garage": "0"}
        wait_for(lambda: float((query(pport, 'count_over_time(up{instance="kitchen"}[15s])') or [{"value": [0, "0"]}])[0]["value"][1]) >= 12,
                 60, "12 s of scrapes")
        assert query(pport, 'edgekit_target_fps{instance="kitchen"}')[0]["value"][1] == str(fps)

        for _attempt in range(3):
            at = time.time()
            stats = daemon.get_json("/stats")
            agree = {}
            for stage in ("invoke", "total"):
                q = f'histogram_quantile(0.99, rate(edgekit_stage_latency_seconds_bucket{{instance="kitchen",stage="{stage}"}}[10s]))'
                prom_s = float(query(pport, q, at)[0]["value"][1])
                stats_s = stats["latency_ms"][stage]["p99_ms"] / 1e3
                agree[stage] = (prom_s, stats_s, abs(bucket(prom_s) - bucket(stats_s)))
            print(f"p99 Prometheus vs /stats: {agree}")
            if all(d <= 1 for _, _, d in agree.values()):
                break
            time.sleep(2)  # the two windows differ by up to a scrape at their edges; a stall there can tip one
        for stage, (prom_s, stats_s, d) in agree.items():
            assert d <= 1, f"{stage}: Prometheus p99 {prom_s * 1e3:.3f} ms, /stats p99 {stats_s * 1e3:.3f} ms, {d} buckets apart"
    finally:
        daemon.stop()
