"""Open a fabric Connection with host-key pinning and turn low-level failures into ConnectErrors."""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paramiko
from fabric import Connection
from paramiko.ssh_exception import NoValidConnectionsError

from deploy.errors import ConnectError, HostKeyError
from deploy.targets import Target
from deploy.trust import DEFAULT_KNOWN_HOSTS, changed_key_error, pin

# paramiko's transport thread logs its own failures with a traceback (on stderr through logging's
# last-resort handler when nobody configured logging); connect() reports them as one ConnectError.
logging.getLogger("paramiko").addHandler(logging.NullHandler())


@dataclass(frozen=True)
class ConnectOptions:
    """How to connect: known-hosts file, whether to record new keys, timeout."""

    known_hosts: Path = DEFAULT_KNOWN_HOSTS
    trust_new: bool = False
    timeout_s: float = 10.0


def connect(target: Target, options: ConnectOptions) -> Connection:
    """An open Connection to ``target``; refuses unknown/changed host keys before any command."""
    kwargs: dict[str, Any] = {"banner_timeout": options.timeout_s, "auth_timeout": options.timeout_s}
    if target.identity is not None:
        ident = Path(target.identity).expanduser()
        if not ident.is_file():
            raise ConnectError(f"identity file {ident} does not exist; pass --identity PATH to a private key")
        kwargs.update(key_filename=[str(ident)], look_for_keys=False, allow_agent=False)
    conn = Connection(
        host=target.host,
        user=target.user,
        port=target.port,
        connect_timeout=max(1, int(options.timeout_s)),
        connect_kwargs=kwargs,
    )
    # fabric just installed AutoAddPolicy on this client; replace it before open().
    pin(conn.client, options.known_hosts, options.trust_new)
    where = f"{target.user}@{target.host}:{target.port}"
    try:
        conn.open()
    except HostKeyError:
        conn.close()
        raise
    except paramiko.BadHostKeyException as e:
        conn.close()
        raise changed_key_error(e, options.known_hosts, target.host, target.port) from None
    except paramiko.AuthenticationException as e:
        conn.close()
        hint = f"the key {target.identity}" if target.identity else "your default keys / agent"
        raise ConnectError(
            f"{where} refused the login ({e}) with {hint}; add the public key to ~{target.user}/.ssh/authorized_keys "
            "on the device or pass --identity PATH"
        ) from None
    except NoValidConnectionsError:
        conn.close()
        raise ConnectError(f"cannot connect to {where}: connection refused; is sshd running there and the port right?") from None
    except (socket.timeout, TimeoutError):
        conn.close()
        raise ConnectError(f"cannot connect to {where}: timed out after {options.timeout_s:.0f} s; is the device on and reachable?") from None
    except socket.gaierror as e:
        conn.close()
        raise ConnectError(f"cannot resolve host {target.host!r}: {e.strerror}; check the name or use an IP address") from None
    except (OSError, paramiko.SSHException, EOFError) as e:
        transport = conn.client.get_transport()
        greeted = transport is not None and bool(getattr(transport, "remote_version", ""))
        conn.close()
        if isinstance(e, paramiko.SSHException) and not greeted:
            raise ConnectError(
                f"cannot connect to {where}: no SSH banner within {options.timeout_s:.0f} s (sshd too busy, or not SSH on "
                "that port); pass a larger --connect-timeout-s for a slow device"
            ) from None
        raise ConnectError(f"SSH to {where} failed: {type(e).__name__}: {e}") from None
    return conn

