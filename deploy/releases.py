"""releases, rollback and logs: what is on the device, going back one release, the daemon's output."""

from __future__ import annotations

from typing import Any, Optional

from deploy.agent import protocol
from deploy.agent.protocol import is_release_id
from deploy.errors import DeployError
from deploy.remote import Device
from deploy.supervisor import control, wait_healthy


def list_releases(device: Device) -> dict[str, Any]:
    """Complete releases on the device (oldest first), which one is current, and the history."""
    return device.agent(protocol.RELEASES, "--dir", device.root)


def rollback(device: Device, to: Optional[str] = None, supervisor: str = "auto", health_timeout_s: float = 30.0,
             lock_timeout_s: float = 0.0) -> dict[str, Any]:
    """Switch ``current`` back to the previous release (or ``to``), restart and wait for health, under the device's lock."""
    if to is not None and not is_release_id(to):
        raise DeployError(f"--to {to!r} is not a release id (12 lowercase hex digits); `deploy releases` lists them")
    with device.locked("rollback", lock_timeout_s):
        if to is None:
            back = device.agent(protocol.ROLLBACK_TARGET, "--dir", device.root)  # names current too: one round trip
            to, before = str(back["target"]), back.get("current")
        else:
            before = device.agent(protocol.RELEASES, "--dir", device.root).get("current")
        if to == before:
            raise DeployError(f"release {to} is already current; `deploy releases` lists the others")
        device.agent(protocol.ACTIVATE, "--dir", device.root, "--id", to, "--keep", "0")
        ctl = control(device, "restart", supervisor, release=to, start_timeout_s=health_timeout_s)
        health = wait_healthy(device, to, health_timeout_s)
    return {"from": before, "to": to, "frames": health.get("frames"), "supervisor": ctl.get("supervisor")}


def logs(device: Device, lines: int = 20) -> dict[str, Any]:
    """The last ``lines`` of the daemon's log (journald under systemd), the supervisor's, and the results file."""
    return device.agent(protocol.LOGS, "--dir", device.root, "--lines", str(lines))
