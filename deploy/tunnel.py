"""SSH local port forwards (``ssh -L 127.0.0.1:LPORT:127.0.0.1:RPORT``) over an open, pinned connection.

Why not fabric's ``Connection.forward_local``: when the remote port refuses (a stopped
daemon), its tunnel thread dies on the ``ChannelException``, leaving the accepted client
socket open, so the client hangs until its own timeout, and every later connection hangs too,
even once the daemon is back (fabric 3.2, checked against a real sshd). A dashboard must
tell "daemon stopped" in a second and recover by itself, so this forwarder:

- listens on 127.0.0.1 only, on a port that stays the same for its lifetime, even across
  SSH reconnects (it asks ``transport()`` for the current connection per client);
- opens one ``direct-tcpip`` channel per client, so nothing new listens on the Pi;
- on a refused or failed channel closes the client at once and keeps the reason in
  ``last_error`` (e.g. "nothing listens on 127.0.0.1:8686 on kitchen ...: is the daemon running?");
- passes half-closes through and closes every open channel on ``close()``.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
from typing import Any, Callable, Optional

import paramiko

CHUNK = 64 * 1024


class LocalForward:
    """Forward 127.0.0.1:``port`` on this host to ``remote_host:remote_port`` as seen from the SSH server."""

    def __init__(self, transport: Callable[[], Optional[paramiko.Transport]], remote_port: int,
                 remote_host: str = "127.0.0.1", local_port: int = 0, open_timeout_s: float = 5.0, label: str = "the device"):
        self._transport = transport
        self.remote = (remote_host, int(remote_port))
        self.open_timeout_s = open_timeout_s
        self.label = label
        self.last_error: Optional[str] = None
        self.connections = 0
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", local_port))
        self._sock.listen(16)
        self.port = int(self._sock.getsockname()[1])
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._open: set[Any] = set()
        self._thread = threading.Thread(target=self._accept_loop, name=f"forward-{self.port}", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        """http://127.0.0.1:PORT."""
        return f"http://127.0.0.1:{self.port}"

    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            try:
                ready, _, _ = select.select([self._sock], [], [], 0.2)
                if not ready:
                    continue
                client, addr = self._sock.accept()
            except (OSError, ValueError):  # closed under us
                return
            threading.Thread(target=self._serve, args=(client, addr), name=f"forward-{self.port}-conn", daemon=True).start()

    def _describe(self, e: BaseException) -> str:
        where = f"{self.remote[0]}:{self.remote[1]}"
        if isinstance(e, paramiko.ChannelException):
            reason = e.text or str(e)
            if "refused" in reason.lower() or "connect failed" in reason.lower():
                return f"nothing listens on {where} on {self.label} (the SSH server was refused): is the daemon running? `python -m deploy status`"
            return f"{self.label} could not open {where}: {reason}"
        return f"SSH forward to {where} on {self.label} failed: {type(e).__name__}: {e}"

    def _serve(self, client: socket.socket, addr: tuple[str, int]) -> None:
        chan: Any = None
        try:
            transport = self._transport()
            if transport is None or not transport.is_active():
                self.last_error = f"not connected to {self.label} over SSH"
                return
            try:
                chan = transport.open_channel("direct-tcpip", self.remote, addr, timeout=self.open_timeout_s)
            except (paramiko.SSHException, EOFError, OSError) as e:
                self.last_error = self._describe(e)
                return
            self.last_error = None
            self.connections += 1
            with self._lock:
                self._open.add(chan)
                self._open.add(client)
            self._pump(client, chan)
        finally:
            for end in (chan, client):
                if end is not None:
                    with contextlib.suppress(Exception):
                        end.close()
                    with self._lock:
                        self._open.discard(end)

    def _pump(self, client: socket.socket, chan: Any) -> None:
        """Copy both ways until both directions have ended (half-closes passed through)."""
        client_open, chan_open = True, True
        while (client_open or chan_open) and not self._closed.is_set():
            watch = [s for s, live in ((client, client_open), (chan, chan_open)) if live]
            try:
                ready, _, _ = select.select(watch, [], [], 0.5)
            except (OSError, ValueError):
                return
            try:
                if client in ready:
                    data = client.recv(CHUNK)
                    if data:
                        chan.sendall(data)
                    else:
                        client_open = False
                        chan.shutdown_write()
                if chan in ready:
                    data = chan.recv(CHUNK)
                    if data:
                        client.sendall(data)
                    else:
                        chan_open = False
                        with contextlib.suppress(OSError):
                            client.shutdown(socket.SHUT_WR)
            except (OSError, EOFError, paramiko.SSHException):
                return

    def close(self) -> None:
        """Stop listening and close every forwarded connection."""
        self._closed.set()
        with contextlib.suppress(OSError):
            self._sock.close()
        with self._lock:
            ends = list(self._open)
        for end in ends:
            with contextlib.suppress(Exception):
                end.close()
        self._thread.join(timeout=2)

    def __enter__(self) -> LocalForward:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
