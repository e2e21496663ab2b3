"""systemd for real (PID 1 of the emulated Pi): Type=notify, WatchdogSec, Restart=on-failure, stop, journald.

Figures here are EMULATED (qemu TCG): the waits are generous on purpose, and what is asserted
is what systemd did and in which order, never how fast.
"""

from __future__ import annotations

import time

import guest
from machine import PiVM
from pi_deploy import HEALTH_TIMEOUT_S, Deploy

# WatchdogSec + TimeoutAbortSec + RestartSec of the unit, plus an emulated start-up.
RECOVERY_S = 30 + 5 + 3 + HEALTH_TIMEOUT_S

SAMPLE = r"""
import json, subprocess, sys, time, urllib.request
unit, port, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
subprocess.run(["sudo", "-n", "systemctl", "restart", "--no-block", unit], check=True)
samples, t0 = [], time.monotonic()
while time.monotonic() - t0 < timeout:
    p = subprocess.run(["systemctl", "show", unit, "-p", "ActiveState", "-p", "MainPID"], capture_output=True, text=True)
    props = dict(l.split("=", 1) for l in p.stdout.splitlines() if "=" in l)
    frames = None
    try:
        with opener.open(f"http://127.0.0.1:{port}/stats", timeout=1) as r:
            frames = int(json.loads(r.read().decode()).get("frames", 0) or 0)
    except Exception:
        pass
    samples.append([round(time.monotonic() - t0, 2), props.get("ActiveState"), int(props.get("MainPID") or 0), frames])
    if props.get("ActiveState") == "active" and frames:
        break
    time.sleep(0.1)
print(json.dumps(samples))
"""

JOURNAL_SINCE = r"""
import json, subprocess, sys
unit, since = sys.argv[1], int(sys.argv[2])
p = subprocess.run(["journalctl", "-u", unit, "-b", "-o", "json", "--no-pager"], capture_output=True, text=True)
rows = []
for line in p.stdout.splitlines():
    e = json.loads(line)
    if int(e["__MONOTONIC_TIMESTAMP"]) >= since:
        rows.append([int(e["__MONOTONIC_TIMESTAMP"]), e.get("_PID"), str(e.get("MESSAGE"))])
print(json.dumps(rows))
"""


def journal_now(pi: PiVM) -> str:
    """The guest's CLOCK_MONOTONIC in µs (journald's ``__MONOTONIC_TIMESTAMP`` clock): entries from now on are new.

    Not a journal cursor: on Bookworm, ``--after-cursor`` from ``journalctl -n 0 --show-cursor`` (read as pi, over
    the system and user journals) left out the "Main process exited ... status=9/KILL" entry that followed it."""
    return pi.ssh("/usr/bin/python3 -c 'import time; print(time.monotonic_ns() // 1000)'").stdout.strip()


def journal_since(pi: PiVM, unit: str, since: str) -> list[list]:
    """[monotonic µs, pid, message] of the unit's journal entries of this boot from ``since`` (µs, see ``journal_now``) on."""
    return list(guest.run_script(pi, JOURNAL_SINCE, unit, since))


def test_notify_reaches_active_only_after_the_model_is_loaded(pi: PiVM, deployed: str) -> None:
    unit = guest.daemon_unit(pi)
    since = journal_now(pi)
    samples = guest.run_script(pi, SAMPLE, unit, str(guest.DAEMON_PORT), str(HEALTH_TIMEOUT_S), timeout_s=HEALTH_TIMEOUT_S + 60)
    assert samples[-1][1] == "active" and samples[-1][3], f"never became active with frames: {samples[-5:]}"
    new_pid = samples[-1][2]
    starting = [s for s in samples if s[2] == new_pid and s[1] == "activating"]
    assert starting, f"the new daemon was never seen 'activating' (Type=notify waits for READY=1): {samples[:10]}"
    # Every moment systemd called it active, the daemon had already classified frames (READY=1 follows the first).
    early = [s for s in samples if s[1] == "active" and s[2] == new_pid and not s[3]]
    assert not early, f"active before the model was loaded and a frame classified: {early}"
    props = guest.show(pi, unit, "Type", "ExecMainStartTimestampMonotonic", "ActiveEnterTimestampMonotonic")
    assert props["Type"] == "notify"
    started, active = int(props["ExecMainStartTimestampMonotonic"]), int(props["ActiveEnterTimestampMonotonic"])
    entries = journal_since(pi, unit, since)
    serving = [t for t, pid, msg in entries if str(pid) == str(new_pid) and "serving http://" in msg]
    assert serving, f"the daemon's 'serving' line (logged after the model loads) is not in the journal: {entries[-10:]}"
    assert started < serving[0] <= active, (started, serving[0], active)
    print(f"EMULATED: process start → active {(active - started) / 1e6:.1f} s (model load + first frame)")


def test_watchdog_kills_and_restarts_a_frozen_daemon(pi: PiVM, deployed: str) -> None:
    unit = guest.daemon_unit(pi)
    before = guest.show(pi, unit, "MainPID", "NRestarts", "WatchdogUSec")
    # systemctl shows the running unit's watchdog as a time span ("30s"); "infinity" or "0" when it has none.
    assert before["WatchdogUSec"] not in ("", "0", "infinity"), before
    since = journal_now(pi)
    pid = before["MainPID"]
    t0 = time.monotonic()
    pi.ssh(f"sudo kill -STOP {pid}")
    after = guest.wait_for(pi, unit, lambda p: p["MainPID"] not in ("0", pid) and p["ActiveState"] == "active",
                           RECOVERY_S)
    waited = time.monotonic() - t0
    assert int(after["NRestarts"]) == int(before["NRestarts"]) + 1, (before, after)
    messages = [m for _, _, m in journal_since(pi, unit, since)]
    assert any("watchdog timeout" in m.lower() for m in messages), messages[-15:]
    assert waited > 10, f"restarted after {waited:.0f} s: too soon for the 30 s watchdog, something else killed it"
    assert guest.wait_serving(pi, HEALTH_TIMEOUT_S)["ok"]


def test_sigkill_is_restarted_by_restart_on_failure(pi: PiVM, deployed: str) -> None:
    unit = guest.daemon_unit(pi)
    before = guest.show(pi, unit, "MainPID", "NRestarts", "Restart")
    assert before["Restart"] == "on-failure"
    since = journal_now(pi)
    pi.ssh(f"sudo kill -KILL {before['MainPID']}")
    after = guest.wait_for(pi, unit, lambda p: p["MainPID"] not in ("0", before["MainPID"]) and p["ActiveState"] == "active",
                           RECOVERY_S)
    assert int(after["NRestarts"]) == int(before["NRestarts"]) + 1, (before, after)
    messages = [m for _, _, m in journal_since(pi, unit, since)]
    assert any("status=9/KILL" in m for m in messages), messages[-15:]
    assert guest.wait_serving(pi, HEALTH_TIMEOUT_S)["ok"]


def test_deploy_stop_leaves_it_stopped_and_says_so(pi: PiVM, deploy_to: Deploy, deployed: str) -> None:
    unit = guest.daemon_unit(pi)
    rc, data, out = deploy_to("stop", timeout_s=300)
    assert rc == 0 and data[0]["ok"], out
    assert "stopped" in data[0]["summary"], out
    time.sleep(10)  # longer than RestartSec: a stop that systemd undid would show by now
    props = guest.show(pi, unit, "ActiveState", "MainPID")
    assert props["ActiveState"] in ("inactive", "failed") and props["MainPID"] == "0", props
    rc, data, out = deploy_to("status", timeout_s=300)
    assert not data[0]["result"]["running"], out
    # And back: start brings the same release up, under systemd.
    rc, data, out = deploy_to("start", "--health-timeout-s", str(HEALTH_TIMEOUT_S), timeout_s=900)
    assert rc == 0, out
    assert guest.show(pi, unit, "ActiveState")["ActiveState"] == "active"


def test_deploy_stop_fails_loudly_when_systemctl_fails(pi: PiVM, deploy_to: Deploy, deployed: str) -> None:
    unit = guest.daemon_unit(pi)
    dropin = f"/etc/systemd/system/{unit}.d/refuse-stop.conf"
    pi.ssh(f"sudo mkdir -p /etc/systemd/system/{unit}.d && printf '[Unit]\\nRefuseManualStop=yes\\n' | sudo tee {dropin} "
           "> /dev/null && sudo systemctl daemon-reload")
    try:
        rc, data, out = deploy_to("stop", timeout_s=300)
        assert rc != 0 and not data[0]["ok"], f"systemctl refused the stop, deploy must fail: {out}"
        assert "systemctl" in data[0]["summary"] and "Traceback" not in out, out
        assert guest.show(pi, unit, "ActiveState")["ActiveState"] == "active"
    finally:
        pi.ssh(f"sudo rm -f {dropin} && sudo systemctl daemon-reload")
