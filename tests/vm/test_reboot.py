"""A reboot brings the same release back up with no command from the host (the unit is enabled), and status shows it."""

from __future__ import annotations

import guest
from machine import PiVM
from pi_deploy import HEALTH_TIMEOUT_S, Deploy, record_boot


def test_reboot_runs_the_same_release_without_a_host_command(pi: PiVM, deploy_to: Deploy, deployed: str) -> None:
    before = guest.check_release(pi)
    assert before["current"] == deployed
    boots_before = int(pi.ssh("journalctl --list-boots --no-pager -q | wc -l").stdout)
    boot = pi.reboot()
    record_boot(pi)
    # Nothing from the host between the reboot and this wait: only the guest's own boot.
    served = guest.wait_serving(pi, HEALTH_TIMEOUT_S)
    assert served["ok"], f"the daemon did not come back by itself: {served}"
    print(f"EMULATED: reboot → SSH {boot.ssh_s:.1f} s; daemon classifying at guest uptime {served['uptime_s']:.1f} s")
    unit = guest.daemon_unit(pi)
    props = guest.show(pi, unit, "ActiveState", "SubState", "NRestarts")
    assert (props["ActiveState"], props["SubState"]) == ("active", "running"), props
    assert int(props["NRestarts"]) == 0, "it started once at boot, it did not crash into a restart"
    after = guest.check_release(pi)
    assert after["current"] == deployed and after["complete"], after
    rc, data, out = deploy_to("status", timeout_s=300)
    row = data[0]["result"]
    assert rc == 0 and row["running"] and row["release"] == deployed, out
    # The journal is persistent: the boot before this one is still there to read.
    assert int(pi.ssh("journalctl --list-boots --no-pager -q | wc -l").stdout) == boots_before + 1
