"""releases, rollback and logs: what is on the device, going back one release, the daemon's output."""

from __future__ import annotations

from typing import Any, Optional

from deploy.errors import DeployError
from deploy.remote import Device
from deploy.supervisor import control, wait_healthy


def list_releases(device: Device) -> dict[str, Any]:
    """Complete releases on the device (oldest first), which one is current, and the history."""
    return device.agent("releases", "--dir", device.root)


def rollback(device: Device, to: Optional[str] = None, supervisor: str = "auto", health_timeout_s: float = 30.0) -> dict[str, Any]:
    """Switch ``current`` back to the previous release (or ``to``), restart and wait for health."""
    if to is None:
        back = device.agent("rollback-target", "--dir", device.root)  # names current too: one round trip
        to, before = str(back["target"]), back.get("current")
    else:
        before = device.agent("releases", "--dir", device.root).get("current")
    if to == before:
        raise DeployError(f"release {to} is already current; `deploy releases` lists the others")
    device.agent("activate", "--dir", device.root, "--id", to, "--keep", "0")
    control(device, "restart", supervisor)
    health = wait_healthy(device, health_timeout_s)
    return {"from": before, "to": to, "frames": health.get("frames")}


def logs(device: Device, lines: int = 20) -> dict[str, Any]:
    """The last ``lines`` of the daemon log, supervisor log and results file."""
    return device.agent("logs", "--dir", device.root, "--lines", str(lines))
