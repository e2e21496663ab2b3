"""What the tests read inside the guest, without the deploy code they check: unit, releases, results, health.

Each check is a small stdlib script run by the guest's own /usr/bin/python3 over SSH, so it
sees the disk exactly as the machine does after a reboot or a power cut.
"""

from __future__ import annotations

import json
import time
from typing import Any, Optional

from machine import PiVM, VMError

REMOTE_DIR = "/home/pi/edgekit"  # the deploy CLI's default (~/edgekit) for the pi user
DAEMON_PORT = 8686  # the deploy CLI's default daemon port

CHECK_RELEASE = r"""
import hashlib, json, os, sys
root = sys.argv[1]
out = {"current": None, "complete": False, "bad_files": [], "history_ok": False, "config_ok": False, "error": None}
try:
    target = os.readlink(os.path.join(root, "current"))
    rid = os.path.basename(target.rstrip("/"))
    out["current"] = rid
    rel = os.path.join(root, "releases", rid)
    meta = json.load(open(os.path.join(rel, "release.json")))
    files = meta["files"]
    for name, want in sorted(files.items()):
        p = os.path.join(rel, name)
        try:
            h = hashlib.sha256(open(p, "rb").read()).hexdigest()
        except OSError as e:
            out["bad_files"].append(f"{name}: {e}")
            continue
        if h != want["sha256"] or os.path.getsize(p) != want["bytes"]:
            out["bad_files"].append(f"{name}: sha256 or size differs")
    out["files"] = len(files)
    out["complete"] = bool(files) and not out["bad_files"]
    cfg = json.load(open(os.path.join(rel, "config.json")))
    out["config_ok"] = isinstance(cfg, dict) and "variant" in cfg
    out["variant"] = cfg.get("variant")
    out["threads"] = cfg.get("threads")
except Exception as e:
    out["error"] = f"{type(e).__name__}: {e}"
try:
    h = json.load(open(os.path.join(root, "history.json")))
    out["history_ok"] = True
    out["history"] = h
except FileNotFoundError:
    out["history_ok"] = None  # never written (one release only)
except Exception as e:
    out["history_error"] = f"{type(e).__name__}: {e}"
print(json.dumps(out))
"""

CHECK_RESULTS = r"""
import json, os, sys
path = sys.argv[1]
out = {"exists": os.path.exists(path), "good": 0, "torn_last": 0, "bad_middle": 0, "bytes": 0}
if out["exists"]:
    data = open(path, "rb").read()
    out["bytes"] = len(data)
    lines = data.split(b"\n")
    last = lines.pop()  # after the final newline: b"" when the file ends on a line boundary
    for i, line in enumerate(lines):
        try:
            json.loads(line)
            out["good"] += 1
        except ValueError:
            out["bad_middle"] += 1
    if last:
        try:
            json.loads(last)
            out["good"] += 1
            out["unterminated_last"] = True
        except ValueError:
            out["torn_last"] = 1
print(json.dumps(out))
"""

WAIT_SERVING = r"""
import json, sys, time, urllib.request
port, timeout = int(sys.argv[1]), float(sys.argv[2])
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
t0 = time.monotonic()
up = float(open("/proc/uptime").read().split()[0])
last = "no answer"
while time.monotonic() - t0 < timeout:
    try:
        with opener.open(f"http://127.0.0.1:{port}/stats", timeout=3) as r:
            stats = json.loads(r.read().decode())
        if int(stats.get("frames", 0) or 0) > 0:
            print(json.dumps({"ok": True, "uptime_s": up + time.monotonic() - t0, "frames": stats["frames"],
                              "stats": stats}))
            sys.exit(0)
        last = "answering, no frame yet"
    except Exception as e:
        last = f"{type(e).__name__}: {e}"
    time.sleep(0.5)
print(json.dumps({"ok": False, "last": last, "uptime_s": up + time.monotonic() - t0}))
"""


def run_script(vm: PiVM, script: str, *args: str, sudo: bool = False, timeout_s: float = 300) -> Any:
    """Run a stdlib script with the guest's python3 and parse the JSON it prints last."""
    quoted = " ".join(json.dumps(a) for a in args)
    p = vm.ssh(f"{'sudo ' if sudo else ''}/usr/bin/python3 - {quoted}", input_text=script, timeout_s=timeout_s)
    return json.loads(p.stdout.strip().splitlines()[-1])


def check_release(vm: PiVM, root: str = REMOTE_DIR) -> dict[str, Any]:
    """What ``current`` names, and whether that release's files match release.json; history and config parsed."""
    return dict(run_script(vm, CHECK_RELEASE, root))


def check_results(vm: PiVM, root: str = REMOTE_DIR) -> dict[str, Any]:
    """The results log read line by line: good lines, a torn last line, bad lines before it."""
    return dict(run_script(vm, CHECK_RESULTS, f"{root}/logs/results.jsonl"))


def wait_serving(vm: PiVM, timeout_s: float, port: int = DAEMON_PORT) -> dict[str, Any]:
    """Wait (inside the guest) until the daemon's /stats counts a classified frame; includes the guest's uptime then."""
    return dict(run_script(vm, WAIT_SERVING, str(port), str(timeout_s), timeout_s=timeout_s + 60))


def daemon_units(vm: PiVM) -> list[str]:
    """The edgekit daemon units systemd knows (``edgekit-<hash>.service``)."""
    out = vm.ssh("systemctl list-units --type=service --all --plain --no-legend 'edgekit-*.service'; "
                 "systemctl list-unit-files --plain --no-legend 'edgekit-*.service'").stdout
    names = {line.split()[0] for line in out.splitlines() if line.strip()}
    return sorted(n for n in names if n.startswith("edgekit-") and n.endswith(".service"))


def daemon_unit(vm: PiVM) -> str:
    """The one daemon unit on the machine."""
    units = daemon_units(vm)
    if len(units) != 1:
        raise VMError(f"expected one edgekit daemon unit, found {units}")
    return units[0]


def show(vm: PiVM, unit: str, *props: str) -> dict[str, str]:
    """``systemctl show`` properties of ``unit``."""
    return vm.systemctl_show(unit, *props)


def wait_for(vm: PiVM, unit: str, predicate: Any, timeout_s: float, props: tuple[str, ...] = ("ActiveState", "SubState", "MainPID", "NRestarts"),
             interval_s: float = 1.0) -> dict[str, str]:
    """Poll ``systemctl show`` until ``predicate(props)`` holds; the props then, or VMError."""
    deadline = time.monotonic() + timeout_s
    last: Optional[dict[str, str]] = None
    while time.monotonic() < deadline:
        last = show(vm, unit, *props)
        if predicate(last):
            return last
        time.sleep(interval_s)
    raise VMError(f"{unit} did not reach the expected state within {timeout_s:.0f} s; last {last}")


def journal(vm: PiVM, unit: str, since_boot: bool = True, lines: int = 500) -> list[str]:
    """journald's lines for ``unit`` (read as pi, who is in adm)."""
    p = vm.ssh(f"journalctl -u {unit} {'-b' if since_boot else ''} -n {lines} --no-pager -q -o short-monotonic")
    return p.stdout.splitlines()
