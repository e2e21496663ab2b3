"""Targets: ``--host [USER@]HOST[:PORT]`` values and TOML inventories, parsed into one dataclass.

An inventory names hosts and what differs between them::

    [defaults]                      # optional, applies to every host
    user = "pi"
    identity = "~/.ssh/id_ed25519"
    remote_dir = "~/edgekit"

    [hosts.kitchen]
    host = "192.168.1.20"
    port = 22
    daemon_port = 8080              # the daemon's HTTP port on the device's loopback
    python = "python3"              # the device's interpreter (the venv is made from it)

    [hosts.garage]
    host = "pi@garage.local:2222"   # the --host syntax works here too
"""

from __future__ import annotations

import dataclasses
import getpass
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from deploy.errors import TargetError

DEFAULT_REMOTE_DIR = "~/edgekit"
DEFAULT_DAEMON_PORT = 8686
DEFAULT_PYTHON = "python3"

_HOST_RE = re.compile(r"^(?:(?P<user>[^@\s:]+)@)?(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.\-]+)(?::(?P<port>\d+))?$")


@dataclass(frozen=True)
class Target:
    """One device: where to connect, as whom, and where the kit lives there."""

    host: str
    port: int = 22
    user: str = ""
    identity: Optional[Path] = None
    remote_dir: str = DEFAULT_REMOTE_DIR
    python: str = DEFAULT_PYTHON
    daemon_port: int = DEFAULT_DAEMON_PORT
    name: str = ""

    @property
    def label(self) -> str:
        """How the host is named in tables and file names."""
        return self.name or (f"{self.host}:{self.port}" if self.port != 22 else self.host)

    @property
    def address(self) -> str:
        """user@host:port."""
        return f"{self.user}@{self.host}:{self.port}"


def parse_host(spec: str, **overrides: Any) -> Target:
    """Parse ``[USER@]HOST[:PORT]`` (IPv6 in brackets) into a Target."""
    m = _HOST_RE.match(spec.strip())
    if not m:
        raise TargetError(
            f"cannot parse host {spec!r}: expected [USER@]HOST[:PORT], e.g. pi@raspberrypi.local or pi@10.0.0.5:2222"
        )
    port = int(m["port"]) if m["port"] else int(overrides.pop("port", 22) or 22)
    if not 0 < port < 65536:
        raise TargetError(f"port {port} in {spec!r} is out of range (1-65535)")
    host = m["host"].strip("[]")
    user = m["user"] or overrides.pop("user", "") or getpass.getuser()
    overrides.pop("user", None)
    overrides.pop("port", None)
    fields = {f.name for f in dataclasses.fields(Target)}
    unknown = set(overrides) - fields
    if unknown:
        raise TargetError(f"unknown setting(s) {', '.join(sorted(unknown))} for host {spec!r}; known: {', '.join(sorted(fields))}")
    clean = {k: v for k, v in overrides.items() if v is not None}
    if "identity" in clean:
        clean["identity"] = Path(str(clean["identity"])).expanduser()
    if "daemon_port" in clean:
        clean["daemon_port"] = int(clean["daemon_port"])
    return Target(host=host, port=port, user=user, **clean)


def load_inventory(path: Path, fallback: Optional[dict[str, Any]] = None) -> list[Target]:
    """Read a TOML inventory (see the module docstring) into Targets; ``fallback`` fills omitted fields."""
    try:
        import tomllib
    except ImportError:  # Python < 3.11
        try:
            import tomli as tomllib  # type: ignore[no-redef]
        except ImportError:
            raise TargetError("reading a TOML inventory needs Python 3.11+ or `pip install tomli`") from None
    try:
        data = tomllib.loads(Path(path).read_text())
    except FileNotFoundError:
        raise TargetError(f"inventory {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise TargetError(f"cannot read inventory {path}: {e}") from e
    except tomllib.TOMLDecodeError as e:
        raise TargetError(f"inventory {path} is not valid TOML: {e}") from e
    defaults = dict(data.get("defaults", {}))
    raw = data.get("hosts")
    entries: list[tuple[str, dict[str, Any]]]
    if isinstance(raw, dict):
        entries = [(str(k), dict(v)) for k, v in raw.items() if isinstance(v, dict)]
    elif isinstance(raw, list):
        entries = [(str(v.get("name", "")), dict(v)) for v in raw if isinstance(v, dict)]
    else:
        raise TargetError(f"inventory {path} has no hosts: add [hosts.NAME] tables with host = \"user@addr:port\"")
    if not entries:
        raise TargetError(f"inventory {path} lists no hosts")
    out = []
    for name, entry in entries:
        merged = {**(fallback or {}), **defaults, **entry}
        spec = merged.pop("host", None)
        if not spec:
            raise TargetError(f"inventory {path}: host entry {name or '?'} needs host = \"ADDRESS\"")
        merged.pop("name", None)
        try:
            out.append(parse_host(str(spec), name=name, **merged))
        except TargetError as e:
            raise TargetError(f"inventory {path}, host {name}: {e}") from e
    return out


def resolve_targets(hosts: list[str], inventory: Optional[Path], **common: Any) -> list[Target]:
    """Targets from repeated --host values and/or an inventory; CLI options fill what they omit."""
    targets: list[Target] = []
    given = {k: v for k, v in common.items() if v is not None}
    if inventory is not None:
        # Inventory values win; CLI options fill the fields an entry leaves out.
        targets.extend(load_inventory(inventory, given))
    for spec in hosts:
        targets.append(parse_host(spec, **given))
    if not targets:
        raise TargetError("no target: pass --host [USER@]HOST[:PORT] (repeatable) or --inventory FILE")
    labels = [t.label for t in targets]
    dup = {x for x in labels if labels.count(x) > 1}
    if dup and len({(t.host, t.port, t.remote_dir) for t in targets}) < len(targets):
        raise TargetError(f"the same target is given twice: {', '.join(sorted(dup))}")
    return targets
