"""Test helpers (like ``fabric.testing``): a real OpenSSH server on 127.0.0.1 acting as a "Pi".

    server = SSHServer.start(Path(tmp))          # sshd -D -f CONFIG on a free high port
    t = server.target                            # host, port, user, identity, known_hosts, remote_dir
    ...  python -m deploy push --host {t.spec} --identity {t.identity} --known-hosts {t.known_hosts} ...
    server.stop()

Each server has its own temporary host key, client key (authorized for the current user),
known_hosts file pinning that host key, remote directory and daemon port. ``command_prefix``
runs sshd some other way (e.g. ``("chroot", ROOT)`` for an emulated arm64 root, where the
paths in ``sshd_path`` and the config are then inside ROOT; pass ``config_root=ROOT`` so files
are written there and named relative to it).

Every session gets ``EDGEKIT_NO_SYSTEMD=1`` (sshd's ``SetEnv``) unless ``allow_systemd=True``: the
agent then never installs units into the systemd of the machine running the tests.
"""

from __future__ import annotations

import getpass
import os
import posixpath
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

SSHD = "/usr/sbin/sshd"
SSH_KEYGEN = "ssh-keygen"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def keygen(path: Path, comment: str = "edgekit-test") -> Path:
    """An ed25519 key pair at ``path`` / ``path.pub`` (no passphrase)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for p in (path, path.with_suffix(".pub")):
        if p.exists():
            p.unlink()
    subprocess.run([SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)], check=True)
    return path


@dataclass(frozen=True)
class SSHTarget:
    """How to reach a test server: what ``--host``/``--identity``/``--known-hosts`` need."""

    host: str
    port: int
    user: str
    identity: Path
    known_hosts: Path
    remote_dir: str
    daemon_port: int
    python: str

    @property
    def spec(self) -> str:
        """``user@host:port`` for --host."""
        return f"{self.user}@{self.host}:{self.port}"

    def cli_args(self) -> list[str]:
        """The deploy CLI options that point at this server."""
        return ["--host", self.spec, "--identity", str(self.identity), "--known-hosts", str(self.known_hosts),
                "--remote-dir", self.remote_dir, "--daemon-port", str(self.daemon_port), "--python", self.python]


class SSHServer:
    """A running ``sshd -D`` on 127.0.0.1 with its own keys and directory."""

    def __init__(self, workdir: Path, process: subprocess.Popen[bytes], target: SSHTarget, host_key: Path,
                 config: Path, log: Path):
        self.workdir = workdir
        self.process = process
        self.target = target
        self.host_key = host_key
        self.config = config
        self.log = log

    @classmethod
    def start(cls, workdir: Path, port: Optional[int] = None, *, command_prefix: Sequence[str] = (),
              sshd_path: str = SSHD, config_root: Optional[Path] = None, python: str = sys.executable,
              remote_dir: Optional[str] = None, host_key: Optional[Path] = None, timeout_s: float = 10.0,
              extra_config: Sequence[str] = (), allow_systemd: bool = False) -> SSHServer:
        """Start sshd; ``host_key`` reuses a key (to restart "the same device"), else a new one is made.

        ``extra_config`` adds sshd_config lines, e.g. ``SetEnv EDGEKIT_EMULATED=qemu-user-aarch64``
        (SetEnv lines are merged into one: sshd uses only the first).
        """
        workdir = Path(workdir)
        root = Path(config_root) if config_root else None
        # Files sshd reads live under config_root (when it runs in a chroot) or workdir.
        sdir = (root / "tmp" / f"edgekit-sshd-{os.getpid()}-{id(workdir):x}") if root else workdir / "sshd"
        sdir.mkdir(parents=True, exist_ok=True)

        def inside(p: Path) -> str:
            return "/" + str(p.relative_to(root)) if root else str(p)

        hk = sdir / "host_ed25519"
        if host_key is not None:
            hk.write_bytes(Path(host_key).read_bytes())
            hk.chmod(0o600)
            hk.with_suffix(".pub").write_bytes(Path(host_key).with_suffix(".pub").read_bytes())
        else:
            keygen(hk, "edgekit-test-host")
        client_key = workdir / "client_ed25519"
        if not client_key.exists():
            keygen(client_key, "edgekit-test-client")
        auth = sdir / "authorized_keys"
        auth.write_text(client_key.with_suffix(".pub").read_text())
        auth.chmod(0o600)
        port = port or free_port()
        user = getpass.getuser()
        pidfile = sdir / "sshd.pid"
        config = sdir / "sshd_config"
        setenv = [] if allow_systemd else ["EDGEKIT_NO_SYSTEMD=1"]
        others = []
        for line in extra_config:
            if line.split(None, 1)[0].lower() == "setenv":
                setenv += line.split()[1:]
            else:
                others.append(line)
        if setenv:
            others.insert(0, "SetEnv " + " ".join(setenv))
        config.write_text(
            f"Port {port}\nListenAddress 127.0.0.1\nHostKey {inside(hk)}\nPidFile {inside(pidfile)}\n"
            f"AuthorizedKeysFile {inside(auth)}\nStrictModes no\nUsePAM no\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nPubkeyAuthentication yes\nPermitRootLogin prohibit-password\n"
            "Subsystem sftp internal-sftp\nMaxStartups 50:30:100\nMaxSessions 50\nLogLevel VERBOSE\n"
            + "".join(f"{line}\n" for line in others)
        )
        # The privilege separation directory sshd insists on (inside the root when chrooted).
        if root is not None:
            (root / "run" / "sshd").mkdir(mode=0o755, parents=True, exist_ok=True)
        elif os.geteuid() == 0:
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        log = workdir / f"sshd-{port}.log"
        cmd = [*command_prefix, sshd_path, "-D", "-e", "-f", inside(config)]
        with open(log, "ab") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        known = workdir / f"known_hosts-{port}"
        pub = hk.with_suffix(".pub").read_text().split()
        known.write_text(f"[127.0.0.1]:{port} {pub[0]} {pub[1]}\n")
        rdir = remote_dir or str(workdir / f"pi-{port}")
        target = SSHTarget("127.0.0.1", port, user, client_key, known, rdir, free_port(), python)
        server = cls(workdir, proc, target, hk, config, log)
        server._wait_listening(timeout_s)
        return server

    def _wait_listening(self, timeout_s: float) -> None:
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            if self.process.poll() is not None:
                raise RuntimeError(f"sshd exited with {self.process.returncode}: {self.log.read_text()[-800:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.target.port), timeout=0.5) as s:
                    if s.recv(4).startswith(b"SSH-"):
                        return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"sshd did not listen on port {self.target.port} within {timeout_s} s: {self.log.read_text()[-800:]}")

    def stop(self) -> None:
        """Stop sshd (the listener; sessions end with their commands)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def stop_daemon(self) -> None:
        """Stop a daemon (and its process supervisor) left running in this server's remote dir, through SSH."""
        from deploy.agent import protocol
        from deploy.connect import ConnectOptions, connect
        from deploy.errors import DeployError
        from deploy.remote import Device
        from deploy.targets import parse_host

        if self.process.poll() is not None:
            return
        t = self.target
        target = parse_host(t.spec, identity=t.identity, remote_dir=t.remote_dir, python=t.python, daemon_port=t.daemon_port)
        try:
            device = Device(connect(target, ConnectOptions(known_hosts=t.known_hosts, timeout_s=5)), target)
        except DeployError:
            return
        try:
            if device.exists(posixpath.join(device.root, "run")):
                device.agent(protocol.CONTROL, "stop", "--dir", device.root, "--mode", "auto", check=False, timeout_s=60)
        except DeployError:
            pass
        finally:
            device.close()

    def __enter__(self) -> SSHServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_daemon()
        self.stop()
