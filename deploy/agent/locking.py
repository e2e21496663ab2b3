"""One lock per device root, held for a whole push or control command.

The lock is ``flock(2)`` on ``<remote-dir>/.lock``, taken by the agent process that serves the
host's SSH session (``lock``) and kept until ``unlock`` or the end of the session: the kernel
drops it when that process exits, so a host that dies mid-push (SIGKILL, a dropped connection)
never leaves a stale lock. A mutating command sent without ``lock`` takes the lock for itself.
The holder writes who it is into the lock file (purpose, user@host, pid, since when), so the
one who is refused is told who holds it.

**A second push fails fast**, by default: it stops before changing anything, with one line
naming the holder, instead of queueing silently behind a push that can take minutes (a venv
install, a slow health check) and then overriding it. ``deploy push --lock-timeout-s S`` waits up
to S seconds instead (for scripts that want a queue), as Terraform's ``-lock-timeout`` does.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Optional

from deploy.agent.errors import AgentError
from deploy.agent.protocol import LockHolder

LOCK_NAME = ".lock"
# root → (fd, holder) for the locks this process holds.
_held: dict[str, tuple[int, LockHolder]] = {}


def lock_path(root: Path) -> Path:
    """The lock file of one device root."""
    return root / LOCK_NAME


def holds(root: Path) -> bool:
    """True when this process holds the lock of ``root``."""
    return str(root) in _held


def _read_holder(path: Path) -> LockHolder:
    try:
        data = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}  # type: ignore[return-value]


def _describe(h: LockHolder) -> str:
    if not h:
        return "another deploy command"
    age = f", for {time.time() - float(h['since']):.0f} s" if h.get("since") else ""
    return f"{h.get('purpose', 'a deploy command')} by {h.get('by', '?')} (agent pid {h.get('pid', '?')}{age})"


def acquire(root: Path, purpose: str, by: str, timeout_s: float = 0.0) -> tuple[LockHolder, float]:
    """Take the lock of ``root`` for this process; wait up to ``timeout_s`` (0: fail at once). Returns (holder, waited s)."""
    if holds(root):
        return _held[str(root)][1], 0.0
    root.mkdir(parents=True, exist_ok=True)
    path = lock_path(root)
    fd = os.open(str(path), os.O_CREAT | os.O_RDWR, 0o644)
    t0 = time.monotonic()
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                if time.monotonic() - t0 >= timeout_s:
                    holder = _read_holder(path)
                    waited = f" after waiting {timeout_s:.0f} s" if timeout_s > 0 else ""
                    raise AgentError(
                        f"{root} is locked{waited}: {_describe(holder)} is changing this device. It is released when "
                        "that command ends; run again then, or pass --lock-timeout-s S to wait for it",
                        kind="locked", holder=holder) from None
                time.sleep(0.2)
    except BaseException:
        os.close(fd)
        raise
    mine: LockHolder = {"pid": os.getpid(), "purpose": purpose, "by": by, "since": time.time()}
    # The note is for whoever is refused next; the flock, not the note, is the lock.
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(mine) + "\n").encode(), 0)
    _held[str(root)] = (fd, mine)
    return mine, time.monotonic() - t0


def held_fd(root: Path) -> Optional[int]:
    """The descriptor of the lock this process holds on ``root`` (None when it holds none).

    A child started with it (``pass_fds``) shares the lock: the kernel keeps it until every
    descriptor of that open file is closed, so the child holds it after this process is gone.
    """
    entry = _held.get(str(root))
    return None if entry is None else entry[0]


def release(root: Path) -> bool:
    """Give the lock of ``root`` back; False when this process did not hold it."""
    entry = _held.pop(str(root), None)
    if entry is None:
        return False
    fd, _ = entry
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)
    os.close(fd)  # closing the last descriptor of the open file drops the flock
    return True


@contextlib.contextmanager
def locked(root: Path, purpose: str, by: str = "", timeout_s: float = 0.0) -> Iterator[None]:
    """Hold the lock of ``root`` for a block: the session's lock if it has one, else taken here and given back after."""
    if holds(root):
        yield
        return
    acquire(root, purpose, by or default_by(), timeout_s)
    try:
        yield
    finally:
        release(root)


def default_by() -> str:
    """``user@host`` of this process, for the holder note when the host did not say."""
    import getpass
    import socket

    try:
        user = getpass.getuser()
    except Exception:  # no passwd entry, no LOGNAME: still say something
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


def holder_of(root: Path) -> Optional[LockHolder]:
    """The holder note of ``root``'s lock when it is held by someone, else None (for status)."""
    path = lock_path(root)
    if not path.exists():
        return None
    fd = os.open(str(path), os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return _read_holder(path) or {"purpose": "unknown"}
    finally:
        os.close(fd)
    return None
