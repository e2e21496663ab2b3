"""Exact process identity: a pid plus its start time and the boot it belongs to, and signals that cannot hit a stranger.

A pid alone is reused by the kernel; a command-line substring names the wrong process as soon
as anything else mentions the same words. A ``ProcessRef`` is (pid, start time in clock ticks
from ``/proc/PID/stat`` field 22, ``/proc/sys/kernel/random/boot_id``): no other process can
match all three. Signals go through a pidfd where the kernel has one (``pidfd_open``, Linux 5.3):
the pidfd is opened first, the identity checked second, and the signal sent through the pidfd,
so the process cannot be replaced in between. Without pidfds (old kernels, qemu-user) it falls
back to ``kill(2)`` right after the check.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional


def _stat_fields(pid: int) -> Optional[list[str]]:
    """Fields of /proc/PID/stat after the command name (which may hold spaces and parentheses).

    Read relative to the ``/proc/PID`` directory: qemu-user rewrites opens of ``/proc/self/stat``
    and ``/proc/<own pid>/stat`` and answers them itself, with a start time often one tick off the
    kernel's, so a process recording itself would never match what others read (the emulated Pi's
    supervisor "did not start"). A path qemu does not recognise reaches the kernel's file.
    """
    try:
        d = os.open(f"/proc/{pid}", os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return None
    try:
        fd = os.open("stat", os.O_RDONLY, dir_fd=d)
        with os.fdopen(fd, "rb") as f:
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return None
    finally:
        os.close(d)
    try:
        return text.rsplit(")", 1)[1].split()
    except IndexError:
        return None


def boot_id() -> str:
    """This boot's id (changes with every boot)."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


@dataclass(frozen=True)
class ProcessRef:
    """One process, exactly."""

    pid: int
    start_ticks: int
    boot_id: str

    @classmethod
    def of(cls, pid: int) -> Optional[ProcessRef]:
        """The process that has ``pid`` now, or None."""
        fields = _stat_fields(pid) if pid > 0 else None
        if not fields or len(fields) < 20:
            return None
        return cls(pid, int(fields[19]), boot_id())

    @classmethod
    def from_json(cls, data: Any) -> Optional[ProcessRef]:
        """Parse what ``to_json`` wrote; None for anything else."""
        try:
            return cls(int(data["pid"]), int(data["start_ticks"]), str(data["boot_id"]))
        except (KeyError, TypeError, ValueError):
            return None

    @classmethod
    def load(cls, path: Path) -> Optional[ProcessRef]:
        """The reference stored in ``path``, or None."""
        try:
            return cls.from_json(json.loads(path.read_text()))
        except (OSError, ValueError):
            return None

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)

    def alive(self) -> bool:
        """True while this very process runs (a zombie counts as gone)."""
        fields = _stat_fields(self.pid)
        if not fields or len(fields) < 20:
            return False
        return fields[0] != "Z" and int(fields[19]) == self.start_ticks and boot_id() == self.boot_id

    def signal(self, sig: int) -> bool:
        """Send ``sig`` to this process if it still runs; False when it is gone."""
        pidfd: Optional[int] = None
        if hasattr(os, "pidfd_open"):
            try:
                pidfd = os.pidfd_open(self.pid)
            except ProcessLookupError:
                return False
            except OSError:
                pidfd = None  # ENOSYS and friends: no pidfd on this kernel
        try:
            if not self.alive():
                return False
            if pidfd is not None:
                signal.pidfd_send_signal(pidfd, sig)
            else:
                os.kill(self.pid, sig)
            return True
        except ProcessLookupError:
            return False
        finally:
            if pidfd is not None:
                os.close(pidfd)

    def wait_gone(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for the process to end; True when it has."""
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            if not self.alive():
                return True
            time.sleep(0.05)
        return not self.alive()

    def cwd(self) -> Optional[str]:
        """The process's working directory (resolved by the kernel), or None."""
        with contextlib.suppress(OSError):
            return os.readlink(f"/proc/{self.pid}/cwd")
        return None


def write_ref(path: Path, ref: ProcessRef) -> None:
    """Store a reference (run/ files are runtime state: atomic, not durable)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(ref.to_json()) + "\n")
    os.replace(str(tmp), str(path))
