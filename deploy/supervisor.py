"""Start, stop and health-check the daemon on the device, under systemd or the pidfile supervisor.

``--supervisor auto`` picks systemd where it runs (``/run/systemd/system`` exists), else the
process supervisor: the agent's ``supervise`` command, started with ``setsid`` semantics
(a new session, detached from the SSH channel), writing ``run/supervisor.pid`` and
``run/daemon.pid``, restarting the daemon on failure with a doubling backoff (1 s … 30 s).
``stop`` sends SIGTERM to the supervisor, which stops the daemon (SIGKILL after 10 s).
"""

from __future__ import annotations

from typing import Any

from deploy.errors import HealthError
from deploy.remote import Device

SUPERVISORS = ("auto", "systemd", "process")
ACTIONS = ("start", "stop", "restart")


def control(device: Device, action: str, mode: str = "auto", timeout_s: float = 15.0) -> dict[str, Any]:
    """start / stop / restart the daemon of the current release."""
    if action not in ACTIONS:
        raise ValueError(f"action must be one of {ACTIONS}. Got: {action!r}")
    if mode not in SUPERVISORS:
        raise ValueError(f"supervisor must be one of {SUPERVISORS}. Got: {mode!r}")
    return device.agent("control", action, "--dir", device.root, "--mode", mode, "--timeout-s", str(timeout_s),
                        timeout_s=timeout_s + 60)


def wait_healthy(device: Device, timeout_s: float = 30.0) -> dict[str, Any]:
    """Wait (on the device) for /healthz and classified frames from the current release's daemon."""
    return device.agent("wait", "--dir", device.root, "--timeout-s", str(timeout_s), timeout_s=timeout_s + 60,
                        error_cls=HealthError)
