"""Power cuts at named points of a push: SIGKILL the whole VM (RAM and page cache lost), boot again, check what the card kept.

Points: ``mid-upload`` (after the first file reached the device), ``after-verify`` (release
verified, not yet switched), ``after-switch`` (``current`` switched and the host told so),
``during-restart`` (the new daemon is starting under systemd). The first three use deploy's
own fault hook (``EDGEKIT_DEPLOY_FAULT=<point>``: the host's deploy process SIGKILLs itself
there) and the machine is cut the moment that process dies; ``during-restart`` watches the
unit inside the guest and cuts when systemd reports the new daemon ``activating``.

After every cut, on the next boot and with no command from the host:
- ``current`` names a complete release: every file matches the sha256 in its release.json;
- history.json and the release's config.json parse;
- the daemon classifies within SERVE_AFTER_POWER_ON_S of power-on (EMULATED, qemu TCG);
- the results log reads line by line: at most a torn last line, skipped and counted;
then the interrupted push, run again, succeeds. ``EDGEKIT_VM_CUT_ROUNDS`` (default 1) repeats
each point; the outcome of every round is appended to ``$EDGEKIT_VM_CUT_LOG`` if set.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import guest
import pytest
from machine import PiVM
from pi_deploy import HEALTH_TIMEOUT_S, WHEELHOUSE, Deploy, record_boot

POINTS = ("mid-upload", "after-verify", "after-switch", "during-restart")
ROUNDS = int(os.environ.get("EDGEKIT_VM_CUT_ROUNDS", "1"))
# Stated bound (EMULATED): power-on → the daemon has classified a frame. Boot ~1 min under TCG,
# an fsck if the card needs one, then the runtime's import and model load.
SERVE_AFTER_POWER_ON_S = float(os.environ.get("EDGEKIT_VM_SERVE_AFTER_POWER_ON_S", "420"))
# Which release `current` must name after the cut: the one before the push, or the one pushed.
EXPECT_CURRENT = {"mid-upload": "old", "after-verify": "old", "after-switch": "new", "during-restart": "new"}
_threads = itertools.count(1)


def push_argv(pi: PiVM, artifacts: Path, threads: int) -> list[str]:
    """A push of a release that differs from every earlier one (its config names ``threads``)."""
    return [sys.executable, "-m", "deploy", "push", *pi.deploy_args(), "--artifacts", str(artifacts), "--variant", "int8",
            "--threads", str(threads), "--wheelhouse", str(WHEELHOUSE / pi.image.release), "--supervisor", "auto",
            "--health-timeout-s", str(HEALTH_TIMEOUT_S), "--no-progress", "--json"]


def cut_at_fault(pi: PiVM, argv: list[str], point: str) -> str:
    """Run the push with deploy's fault hook at ``point``; cut the power the moment the host process dies there."""
    p = subprocess.run(argv, capture_output=True, text=True, timeout=1800, env={**os.environ, "EDGEKIT_DEPLOY_FAULT": point})
    pi.power_cut()
    assert p.returncode == -9, f"the push did not reach {point} (exit {p.returncode}): {p.stdout[-1500:]} {p.stderr[-1500:]}"
    return p.stderr


def cut_during_restart(pi: PiVM, argv: list[str], unit: str) -> str:
    """Run the push; cut the power when systemd reports the unit starting a new daemon."""
    watch = subprocess.Popen(pi.ssh_argv(f"while :; do systemctl show {unit} -p ActiveState --value; sleep 0.05; done"),
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    push = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = []
    try:
        assert watch.stdout is not None
        for line in watch.stdout:
            seen.append(line.strip())
            if line.strip() == "activating":
                pi.power_cut()
                break
            if push.poll() is not None:
                break
    finally:
        pi.power_cut()
        watch.kill()
        push.kill()
        out, err = push.communicate(timeout=60)
        watch.wait(30)
    assert "activating" in seen, f"never saw the unit activating; states {seen[-10:]}; push: {out[-1500:]} {err[-1500:]}"
    return err


def record(row: dict[str, Any]) -> None:
    """Append one round's outcome to $EDGEKIT_VM_CUT_LOG (JSON lines) when set."""
    path = os.environ.get("EDGEKIT_VM_CUT_LOG")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps(row) + "\n")


@pytest.mark.parametrize("round_", range(1, ROUNDS + 1), ids=lambda r: f"round{r}")
@pytest.mark.parametrize("point", POINTS)
def test_power_cut(pi: PiVM, deploy_to: Deploy, artifacts_dir: Path, deployed: str, point: str, round_: int) -> None:
    old = guest.check_release(pi)
    assert old["complete"] and old["current"], old
    unit = guest.daemon_unit(pi)
    threads = next(_threads)
    argv = push_argv(pi, artifacts_dir, threads)
    if point == "during-restart":
        cut_during_restart(pi, argv, unit)
    else:
        cut_at_fault(pi, argv, point)

    powered_on = time.monotonic()
    boot = pi.start()
    record_boot(pi)
    served = guest.wait_serving(pi, SERVE_AFTER_POWER_ON_S)
    serve_s = time.monotonic() - powered_on
    after = guest.check_release(pi)
    results = guest.check_results(pi)
    row = {"release": pi.image.release, "point": point, "round": round_, "boot_to_ssh_s": round(boot.ssh_s or -1, 1),
           "serve_after_power_on_s": round(serve_s, 1), "current": after.get("current"), "old": old["current"],
           "config_threads": after.get("threads"), "results": results, "served": served.get("ok"), "emulated": True}
    try:
        assert served["ok"], f"no daemon classifying within {SERVE_AFTER_POWER_ON_S:.0f} s of power-on: {served}"
        assert after["complete"], f"current names an incomplete release: {after}"
        assert after["config_ok"] and after["history_ok"] is not False, after
        if EXPECT_CURRENT[point] == "old":
            assert after["current"] == old["current"], f"{point}: current moved although the push never switched: {after}"
        else:
            assert after["current"] != old["current"] and after["threads"] == threads, \
                f"{point}: the switch the host was told about did not survive the cut: {after}"
        assert results["exists"] and results["bad_middle"] == 0 and results["good"] > 0, results
        assert results["torn_last"] in (0, 1)
        # The daemon now serving runs the release current names.
        assert served["stats"]["threads"] == after["threads"], f"the daemon serving is not the release current names: {served}"

        # The interrupted push, run again, finishes.
        p = subprocess.run(argv, capture_output=True, text=True, timeout=1800)
        assert p.returncode == 0, f"the next push failed: {p.stdout[-2000:]} {p.stderr[-2000:]}"
        # What the durable writes cost this push (EMULATED: the guest's fsync is qemu's flush to the host file).
        pushed = json.loads(p.stdout)[0]["result"]
        row.update(push_s=round(pushed["elapsed_s"], 1), fsyncs=pushed["fsync_count"], fsync_s=round(pushed["fsync_s"], 3))
        done = guest.check_release(pi)
        assert done["complete"] and done["threads"] == threads, done
        assert guest.wait_serving(pi, HEALTH_TIMEOUT_S)["ok"]
        row["ok"] = True
    except AssertionError as e:
        row["ok"] = False
        row["error"] = str(e)[:500]
        raise
    finally:
        record(row)
        print(json.dumps(row))
