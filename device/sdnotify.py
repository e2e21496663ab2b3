"""sd_notify over ``$NOTIFY_SOCKET`` with a plain datagram socket: READY=1, WATCHDOG=1, STOPPING=1.

Without ``NOTIFY_SOCKET`` (not started by systemd with ``Type=notify``) every call is a no-op.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from typing import Optional


class Notifier:
    """Sends state lines to systemd; ``watchdog_interval_s`` says how often to ping (half of WatchdogSec)."""

    def __init__(self, environ: Optional[Mapping[str, str]] = None):
        env = os.environ if environ is None else environ
        addr = env.get("NOTIFY_SOCKET", "")
        self.address: Optional[str] = None
        if addr.startswith("@"):
            self.address = "\0" + addr[1:]  # abstract namespace
        elif addr.startswith("/"):
            self.address = addr
        self.watchdog_interval_s: Optional[float] = None
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        if usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            self.watchdog_interval_s = int(usec) / 1e6 / 2.0

    @property
    def enabled(self) -> bool:
        """True when systemd gave us a socket."""
        return self.address is not None

    def notify(self, state: str) -> bool:
        """Send one datagram like ``READY=1``; False (never an exception) when it cannot."""
        if self.address is None:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
                s.connect(self.address)
                s.sendall(state.encode("utf-8"))
            return True
        except OSError:
            return False

    def ready(self, status: str = "") -> bool:
        """Tell systemd start-up has finished."""
        return self.notify("READY=1" + (f"\nSTATUS={status}" if status else ""))

    def watchdog(self) -> bool:
        """Keep-alive ping for WatchdogSec."""
        return self.notify("WATCHDOG=1")

    def stopping(self) -> bool:
        """Tell systemd we are shutting down."""
        return self.notify("STOPPING=1")

    def status(self, text: str) -> bool:
        """A free-form status line for `systemctl status`."""
        return self.notify(f"STATUS={text}")
