"""Host-key pinning: unknown keys are refused (or recorded with --trust-new), changed keys always refused.

fabric's ``Connection`` sets paramiko's ``AutoAddPolicy`` (accept anything); ``pin`` replaces it
on the connection's client before ``open()``, and loads the known-hosts file. paramiko checks
the key during the handshake, before authentication, so a refused host never runs a command.
"""

from __future__ import annotations

import base64
import hashlib
import threading
from pathlib import Path
from typing import Any

import paramiko

from deploy.errors import HostKeyError

DEFAULT_KNOWN_HOSTS = Path("~/.ssh/known_hosts")
_file_lock = threading.Lock()


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH-style SHA256 fingerprint, e.g. ``SHA256:abc…``."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(key.asbytes()).digest()).decode().rstrip("=")


def known_hosts_name(host: str, port: int) -> str:
    """How known_hosts names a host: ``host`` on port 22, else ``[host]:port``."""
    return host if port == 22 else f"[{host}]:{port}"


def append_known_host(path: Path, hostname: str, key: paramiko.PKey) -> None:
    """Add one line to a known_hosts file (creating it 0600), keeping the rest as it is."""
    path = path.expanduser()
    with _file_lock:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        existed = path.exists()
        with open(path, "a") as f:
            f.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")
        if not existed:
            path.chmod(0o600)


class PinnedHostKeyPolicy(paramiko.MissingHostKeyPolicy):
    """Refuse hosts whose key is not in known_hosts; with ``trust_new`` record them instead."""

    def __init__(self, known_hosts: Path, trust_new: bool = False):
        self.known_hosts = known_hosts.expanduser()
        self.trust_new = trust_new
        self.recorded: list[str] = []

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        """Called by paramiko for a host with no known key."""
        fp = fingerprint(key)
        if self.trust_new:
            client.get_host_keys().add(hostname, key.get_name(), key)
            append_known_host(self.known_hosts, hostname, key)
            self.recorded.append(f"{hostname} {key.get_name()} {fp}")
            return
        raise HostKeyError(
            f"host {hostname} is not in {self.known_hosts} (its {key.get_name()} key is {fp}). Nothing was run there. "
            f"Check the fingerprint on the device (`ssh-keygen -lf /etc/ssh/ssh_host_{_short(key)}_key.pub`), "
            "then re-run with --trust-new to record it",
            host=hostname,
            fingerprint=fp,
            changed=False,
        )


def _short(key: paramiko.PKey) -> str:
    name = key.get_name()
    if "ed25519" in name:
        return "ed25519"
    if "ecdsa" in name:
        return "ecdsa"
    return "rsa"


def pin(client: paramiko.SSHClient, known_hosts: Path, trust_new: bool = False) -> PinnedHostKeyPolicy:
    """Load known_hosts into ``client`` and replace its missing-key policy with a pinning one."""
    path = known_hosts.expanduser()
    if path.exists():
        try:
            client.get_host_keys().load(str(path))
        except (OSError, paramiko.SSHException) as e:
            raise HostKeyError(f"cannot read known-hosts file {path}: {e}", host="", fingerprint="", changed=False) from e
    policy = PinnedHostKeyPolicy(path, trust_new)
    client.set_missing_host_key_policy(policy)
    return policy


def changed_key_error(e: paramiko.BadHostKeyException, known_hosts: Path, host: str, port: int) -> HostKeyError:
    """A clear error for paramiko's BadHostKeyException (the key differs from the pinned one)."""
    got: Any = e.key
    name = known_hosts_name(host, port)
    return HostKeyError(
        f"HOST KEY CHANGED for {name}: it offered {fingerprint(got)} but {known_hosts.expanduser()} pins "
        f"{fingerprint(e.expected_key)}. Nothing was run there. This is either a reinstalled device or someone "
        f"in the middle; if you know the device was reinstalled, remove the old entry "
        f"(`ssh-keygen -R '{name}' -f {known_hosts}`) and re-run with --trust-new",
        host=name,
        fingerprint=fingerprint(got),
        changed=True,
    )
