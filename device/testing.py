"""Test helpers (like ``fabric.testing``): the real daemon as a process, started and stopped cleanly.

    with DaemonProcess.start(manifest_dir, port=0, extra=("--fps", "10")) as d:
        d.get_json("/stats")        # http://127.0.0.1:PORT/stats, bypassing any http_proxy
        d.stop()                    # SIGTERM, wait; the exit code is d.returncode

Used by the page, dashboard and Prometheus tests, the page-overhead benchmark and the script
that renders the README's screenshots.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Optional

# localhost must never go through a proxy
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class DaemonProcess:
    """``python -m device run`` in a child process, serving on 127.0.0.1:``port``."""

    def __init__(self, proc: subprocess.Popen[bytes], port: int, log: Path, workdir: Path):
        self.proc = proc
        self.port = port
        self.log = log
        self.workdir = workdir

    @classmethod
    def start(cls, manifest: Path | str, port: int = 0, source: str = "synthetic", extra: Sequence[str] = (),
              env: Optional[Mapping[str, str]] = None, workdir: Optional[Path] = None, timeout_s: float = 60.0,
              python: str = sys.executable, wait_healthy: bool = True) -> DaemonProcess:
        """Start the daemon and wait until it serves, and (``wait_healthy``) has classified a frame."""
        wd = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="edgekit-daemon-"))
        wd.mkdir(parents=True, exist_ok=True)
        status = wd / f"status-{os.getpid()}-{time.monotonic_ns()}.json"
        log = wd / f"daemon-{port or 'any'}.log"
        cmd = [python, "-m", "device", "run", "--manifest", str(manifest), "--source", source, "--port", str(port),
               "--status-file", str(status), "--threads", "1", *extra]
        with open(log, "ab") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env={**os.environ, **(env or {})})
        end = time.monotonic() + timeout_s
        while not status.exists():
            if proc.poll() is not None or time.monotonic() > end:
                proc.kill()
                proc.wait()
                raise RuntimeError(f"the daemon did not start ({proc.returncode}): {log.read_text()[-1500:]}")
            time.sleep(0.05)
        d = cls(proc, int(json.loads(status.read_text())["port"]), log, wd)
        while wait_healthy:
            try:
                if d.get("/healthz", timeout_s=2)[0] == 200:
                    return d
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > end:
                d.stop()
                raise RuntimeError(f"the daemon never became healthy: {log.read_text()[-1500:]}")
            time.sleep(0.05)
        return d

    @property
    def url(self) -> str:
        """http://127.0.0.1:PORT."""
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str, timeout_s: float = 10.0) -> tuple[int, bytes]:
        """(status, body) of GET ``path``; HTTP errors are returned, not raised."""
        try:
            with _OPENER.open(self.url + path, timeout=timeout_s) as r:
                return int(r.status), r.read()
        except urllib.error.HTTPError as e:
            return int(e.code), e.read()

    def get_json(self, path: str) -> Any:
        """The JSON document at ``path``."""
        code, body = self.get(path)
        if code != 200:
            raise RuntimeError(f"GET {path}: {code} {body[:200]!r}")
        return json.loads(body)

    @property
    def returncode(self) -> Optional[int]:
        """The exit code once stopped, else None."""
        return self.proc.poll()

    def stop(self, timeout_s: float = 10.0) -> Optional[int]:
        """SIGTERM and wait (SIGKILL after ``timeout_s``); returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def __enter__(self) -> DaemonProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
