"""Commands run on the device: the agent zipapp over one SSH channel (``deploy.agent.protocol``), and SFTP uploads."""

from __future__ import annotations

import contextlib
import getpass
import posixpath
import shlex
import socket
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable, Optional

import paramiko
from fabric import Connection

from deploy.agent import protocol
from deploy.agent.build import artifact
from deploy.errors import LockedError, RemoteError
from deploy.targets import Target


def resolve_remote_dir(home: str, remote_dir: str) -> str:
    """Absolute remote path: ``~``/``~/x`` and relative paths start at the login's home."""
    if remote_dir == "~":
        return home
    if remote_dir.startswith("~/"):
        return posixpath.join(home, remote_dir[2:])
    if remote_dir.startswith("/"):
        return posixpath.normpath(remote_dir)
    return posixpath.join(home, remote_dir)


def progress_callback(update: Callable[[int], Any]) -> Callable[[int, int], None]:
    """An SFTP ``callback(sent_so_far, total)`` that feeds ``update`` (e.g. ``tqdm.update``) the increments."""
    done = 0

    def cb(sent: int, total: int) -> None:
        nonlocal done
        update(sent - done)
        done = sent

    return cb


class Device:
    """One connected target: runs the agent and uploads under its remote dir."""

    def __init__(self, conn: Connection, target: Target):
        self.conn = conn
        self.target = target
        self._sftp: Any = None
        home = self.sftp.normalize(".")
        self.root = resolve_remote_dir(home, target.remote_dir)
        self.agent_path = posixpath.join(self.root, "bin", artifact().filename)
        self._agent_ready = False
        self.fsync_count = 0  # durable writes the agent reported, summed over this connection
        self.fsync_s = 0.0
        self._chan: Any = None
        self._stdin: Any = None
        self._stdout: Any = None

    @property
    def sftp(self) -> Any:
        """The connection's SFTP client, opened once."""
        if self._sftp is None:
            self._sftp = self.conn.sftp()
        return self._sftp

    def makedirs(self, path: str) -> None:
        """mkdir -p over SFTP (no shell involved)."""
        parts = path.split("/")
        cur = "/" if path.startswith("/") else ""
        for part in parts:
            if not part:
                continue
            cur = posixpath.join(cur, part) if cur else part
            try:
                st = self.sftp.stat(cur)
                if not stat.S_ISDIR(st.st_mode or 0):
                    raise RemoteError(f"{cur} on {self.target.label} exists and is not a directory")
            except FileNotFoundError:
                self.sftp.mkdir(cur)

    def exists(self, path: str) -> bool:
        """True when a remote path exists."""
        try:
            self.sftp.stat(path)
            return True
        except FileNotFoundError:
            return False

    def ensure_agent(self) -> None:
        """Upload the agent zipapp once per version (named by its hash; checked by size, written then renamed)."""
        if self._agent_ready:
            return
        art = artifact()
        try:
            present = self.sftp.stat(self.agent_path).st_size == len(art.data)
        except FileNotFoundError:
            present = False
        if not present:
            self.makedirs(posixpath.dirname(self.agent_path))
            tmp = self.agent_path + ".part"
            with self.sftp.open(tmp, "wb") as f:
                f.write(art.data)
            self.sftp.posix_rename(tmp, self.agent_path)
        self._agent_ready = True

    def agent_command(self, *argv: str) -> str:
        """The shell command that runs the agent with ``argv`` on the device."""
        return " ".join(shlex.quote(a) for a in (self.target.python, "-E", "-s", self.agent_path, *argv))

    def _open_session(self) -> None:
        """Start ``agent.pyz serve`` on one SSH channel: one interpreter answers every later call."""
        self.ensure_agent()
        transport = self.conn.client.get_transport()
        if transport is None:
            raise RemoteError(f"the SSH connection to {self.target.label} is closed")
        chan = transport.open_session()
        chan.exec_command(self.agent_command(protocol.SERVE))
        self._chan = chan
        self._stdin = chan.makefile_stdin("wb")
        self._stdout = chan.makefile("rb")

    def _close_session(self) -> None:
        # Close and let go of the session's files here, while their buffers live: left for a garbage-collected
        # cycle, paramiko's ``BufferedFile.__del__`` may find its buffer finalised first and print a traceback.
        files, self._stdin, self._stdout = (self._stdin, self._stdout), None, None
        for f in files:
            if f is not None:
                with contextlib.suppress(Exception):  # a dropped transport may raise anything paramiko has
                    f.close()
        del files, f
        chan, self._chan = self._chan, None
        if chan is not None:
            with contextlib.suppress(Exception):
                chan.close()

    def agent(self, command: str, *args: str, timeout_s: Optional[float] = 300.0, check: bool = True,
              error_cls: type[RemoteError] = RemoteError) -> dict[str, Any]:
        """Run one agent command on the device (through the long-lived agent session); returns its JSON answer."""
        if self._chan is None or self._chan.closed or self._chan.exit_status_ready():
            try:
                self._open_session()
            except (paramiko.SSHException, OSError, EOFError) as e:
                self._close_session()
                raise RemoteError(f"lost the connection to {self.target.label} before `{command}`: {e}") from None
        assert self._chan is not None
        self._chan.settimeout(timeout_s)
        try:
            self._stdin.write(protocol.encode_request([command, *args]))
            self._stdin.flush()
            line = self._stdout.readline()
        except (socket.timeout, TimeoutError):
            self._close_session()
            raise RemoteError(f"agent `{command}` on {self.target.label} gave no answer within {timeout_s:.0f} s") from None
        except (OSError, EOFError) as e:
            self._close_session()
            raise RemoteError(f"lost the connection to {self.target.label} during `{command}`: {e}") from None
        answer = protocol.decode_answer(line.decode(errors="replace")) if line else None
        if answer is None:
            err = b""
            with contextlib.suppress(Exception):
                self._chan.settimeout(2.0)
                err = self._chan.makefile_stderr("rb").read()
            detail = (err.decode(errors="replace").strip() or "no answer").splitlines()[-3:]
            hint = ""
            if b"No such file" in err or b"not found" in err:
                hint = f"; is {self.target.python!r} installed there? pass --python PATH"
            self._close_session()
            raise RemoteError(f"agent `{command}` on {self.target.label} failed: {' | '.join(detail)}{hint}")
        self.fsync_count += int(answer.get("fsync_count") or 0)
        self.fsync_s += float(answer.get("fsync_s") or 0.0)
        if check and not answer.get("ok"):
            raise error_cls(str(answer.get("error", "unknown error")), answer)
        return answer

    @contextlib.contextmanager
    def locked(self, purpose: str, timeout_s: float = 0.0) -> Iterator[dict[str, Any]]:
        """Hold the device root's lock for a whole command (see ``deploy.agent.locking``); released on exit."""
        by = f"{getpass.getuser()}@{socket.gethostname()}"
        answer = self.agent(protocol.LOCK, "--dir", self.root, "--purpose", purpose, "--by", by,
                            "--timeout-s", str(timeout_s), timeout_s=timeout_s + 60, error_cls=LockedError)
        try:
            yield answer
        finally:
            # A dropped session has released the lock already (the agent process ended with it).
            with contextlib.suppress(Exception):
                if self._chan is not None and not self._chan.closed:
                    self.agent(protocol.UNLOCK, "--dir", self.root, check=False, timeout_s=30)

    def put(self, local: Path, remote: str, callback: Optional[Callable[[int, int], None]] = None) -> None:
        """Upload one file via SFTP with a byte-progress callback."""
        self.sftp.put(str(local), remote, callback=callback, confirm=True)

    def put_bytes(self, data: bytes, remote: str) -> None:
        """Write bytes to a remote file."""
        with self.sftp.open(remote, "wb") as f:
            f.write(data)

    def close(self) -> None:
        """Close the agent session, SFTP and the connection."""
        self._close_session()
        if self._sftp is not None:
            with contextlib.suppress(Exception):  # a broken transport may raise anything paramiko has
                self._sftp.close()
        with contextlib.suppress(Exception):  # a broken transport may raise anything paramiko has
            self.conn.close()
