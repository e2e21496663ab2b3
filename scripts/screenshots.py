"""Render the README's screenshots from real runs: the device page and the fleet dashboard, headless.

    python scripts/screenshots.py --artifacts out/ [--out docs/] [--seconds 60]

1. ``docs/device-page.png``: ``python -m device run --source synthetic --fps 15`` on this machine,
   left running ``--seconds`` so the latency chart has history, then opened in headless Chromium.
2. ``docs/dashboard.png``: three sshd "Pis" on 127.0.0.1 (``deploy.testing``), a daemon behind
   each, the third daemon then stopped; ``python -m deploy dashboard`` over them, opened in
   Chromium once the third card is red.

Needs what the tests need: Debian's chromium, Playwright for Python, openssh-server.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

from deploy.headless import chromium, missing
from deploy.testing import SSHServer
from device.testing import DaemonProcess

REPO = Path(__file__).resolve().parents[1]


def device_page(manifest: Path, out: Path, seconds: float) -> None:
    """Screenshot a live device page after ``seconds`` of history."""
    with DaemonProcess.start(manifest, extra=("--fps", "15")) as d:
        time.sleep(seconds)
        with chromium(1280, 900) as browser:
            page = browser.new_page()
            page.goto(d.url + "/")
            page.wait_for_function("document.getElementById('frame-img').naturalWidth > 0", timeout=15000)
            time.sleep(1.5)
            page.screenshot(path=str(out), full_page=True)
    print(f"wrote {out}")


def dashboard(manifest: Path, out: Path) -> None:
    """Screenshot the fleet page with two healthy devices and one whose daemon was stopped."""
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        names = ("kitchen", "garage", "shed")
        servers = [SSHServer.start(base / n) for n in names]
        daemons = [DaemonProcess.start(manifest, port=s.target.daemon_port, extra=("--fps", "15"), workdir=base / f"d-{n}")
                   for n, s in zip(names, servers)]
        dash: Optional[subprocess.Popen[str]] = None
        try:
            known = base / "known_hosts"
            known.write_text("".join(s.target.known_hosts.read_text() for s in servers))
            inv = base / "pis.toml"
            inv.write_text("".join(f'[hosts.{n}]\nhost = "127.0.0.1:{s.target.port}"\nidentity = "{s.target.identity}"\n'
                                   f"daemon_port = {s.target.daemon_port}\n\n" for n, s in zip(names, servers)))
            dash = subprocess.Popen([sys.executable, "-m", "deploy", "dashboard", "--inventory", str(inv), "--known-hosts", str(known),
                                     "--port", "0", "--no-browser", "--json"], stdout=subprocess.PIPE, text=True)
            assert dash.stdout is not None
            url = json.loads(dash.stdout.readline())["url"]
            time.sleep(3)
            daemons[2].stop()
            with chromium(1280, 760) as browser:
                page = browser.new_page()
                page.goto(url)
                page.wait_for_function("document.getElementById('card-2') && document.getElementById('card-2').dataset.ok === '0' && "
                                       "document.getElementById('card-0').dataset.ok === '1'", timeout=30000)
                time.sleep(1.5)
                page.screenshot(path=str(out), full_page=True)
        finally:
            if dash is not None:
                dash.send_signal(signal.SIGINT)
                try:
                    dash.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    dash.kill()
                    dash.wait()
                    print("warning: the dashboard did not exit within 20 s of Ctrl-C", file=sys.stderr)
            for d in daemons:
                d.stop()
            for s in servers:
                s.stop()
    print(f"wrote {out}")


def main(argv: Optional[list[str]] = None) -> int:
    """Render both screenshots."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--artifacts", type=Path, default=REPO / "out", help="the host pipeline's output (manifest.json)")
    ap.add_argument("--out", type=Path, default=REPO / "docs", help="where the PNGs go")
    ap.add_argument("--seconds", type=float, default=60.0, help="how long the device daemon runs before its screenshot")
    ap.add_argument("--only", choices=("device", "dashboard"), default=None, help="render one of the two")
    args = ap.parse_args(argv)
    why = missing()
    if why:
        print(f"error: {why}", file=sys.stderr)
        return 1
    if not (args.artifacts / "manifest.json").is_file():
        print(f"error: no manifest.json in {args.artifacts}; run `python -m host run --out {args.artifacts}` first", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    if args.only != "dashboard":
        device_page(args.artifacts, args.out / "device-page.png", args.seconds)
    if args.only != "device":
        dashboard(args.artifacts, args.out / "dashboard.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
