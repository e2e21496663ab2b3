"""Start, stop and health-check the daemon on the device, under systemd or the process supervisor.

The agent decides and records the supervisor (``deploy.agent.supervisor``): a push chooses it
(``--supervisor auto``: systemd where it runs and this user can install units, else the process
supervisor; an explicit value changes the record), and every later command uses the recorded
one. ``wait_healthy`` waits for the daemon of one named release, never "whatever is current".
"""

from __future__ import annotations

from typing import Any, Optional

from deploy.agent.protocol import ACTIONS, CONTROL, SUPERVISORS, WAIT
from deploy.errors import HealthError
from deploy.remote import Device


def control(device: Device, action: str, mode: str = "auto", timeout_s: float = 15.0, release: Optional[str] = None,
            push: bool = False, start_timeout_s: float = 0.0) -> dict[str, Any]:
    """start / stop / restart the daemon of the current release (``release``: refuse if current is another one).

    ``start_timeout_s``: how long the caller lets the daemon come up (its health timeout). Under systemd
    ``systemctl start`` returns at READY=1, which on a slow device may take longer than the default wait.
    """
    if action not in ACTIONS:
        raise ValueError(f"action must be one of {ACTIONS}. Got: {action!r}")
    if mode not in SUPERVISORS:
        raise ValueError(f"supervisor must be one of {SUPERVISORS}. Got: {mode!r}")
    args = [action, "--dir", device.root, "--mode", mode, "--timeout-s", str(timeout_s)]
    if release:
        args += ["--release", release]
    if push:
        args.append("--push")
    # systemctl start waits for READY=1 (up to the unit's TimeoutStartSec) and a stop may need the grace time.
    return device.agent(CONTROL, *args, timeout_s=max(timeout_s, start_timeout_s) + 180)


def wait_healthy(device: Device, release: str, timeout_s: float = 30.0) -> dict[str, Any]:
    """Wait (on the device) for /healthz and classified frames from the daemon of ``release``."""
    return device.agent(WAIT, "--dir", device.root, "--id", release, "--timeout-s", str(timeout_s),
                        timeout_s=timeout_s + 60, error_cls=HealthError)
