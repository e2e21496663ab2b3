"""The agent as one artifact: a zipapp built in memory, deterministically, so its sha256 names it.

The archive is ``#!/usr/bin/env python3`` followed by a zip of, in sorted order:

* ``__main__.py`` (runs ``deploy.agent.main``),
* ``deploy/__init__.py`` and every ``deploy/agent/*.py``,
* the stdlib-only device modules the agent imports instead of keeping copies: ``device/__init__.py``,
  ``errors.py``, ``hardware.py``, ``manifest.py``, ``service.py``, ``labels.py``, ``framestore.py``
  and the unit template.

Entries are stored (not deflated: no dependence on the host's zlib), dated 1980-01-01 00:00:00,
mode 0644, so the same sources give the same bytes and the same hash on any host. The device
runs it as ``python3 -E -s agent-<sha256[:12]>.pyz`` (zipimport is in every Python since 2.6).
"""

from __future__ import annotations

import functools
import hashlib
import io
import zipfile
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import Optional

SHEBANG = b"#!/usr/bin/env python3\n"
MAIN = b'"""edgekit agent zipapp."""\nimport sys\n\nfrom deploy.agent.main import main\n\nsys.exit(main())\n'
BUNDLED_DEVICE = ("__init__.py", "errors.py", "hardware.py", "manifest.py", "service.py", "systemd/edgekit-device.service",
                  "labels.py", "framestore.py")
_EPOCH = (1980, 1, 1, 0, 0, 0)


@dataclass(frozen=True)
class Artifact:
    """The zipapp's bytes, their sha256 and the names inside."""

    data: bytes
    sha256: str
    names: tuple[str, ...]

    @property
    def filename(self) -> str:
        """``agent-<sha256[:12]>.pyz``: a new version never overwrites a running one."""
        return f"agent-{self.sha256[:12]}.pyz"


def package_dir(name: str) -> Path:
    """Where a package's source lives on this host (found like an import would, without importing its modules)."""
    spec = find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the `{name}` package is not importable here; `pip install -e .` in the edgekit checkout")
    return Path(next(iter(spec.submodule_search_locations)))


def sources() -> dict[str, bytes]:
    """archive name → bytes of everything the zipapp holds."""
    agent = Path(__file__).resolve().parent
    files = {"__main__.py": MAIN, "deploy/__init__.py": (agent.parent / "__init__.py").read_bytes()}
    for p in sorted(agent.glob("*.py")):
        files[f"deploy/agent/{p.name}"] = p.read_bytes()
    device = package_dir("device")
    for rel in BUNDLED_DEVICE:
        files[f"device/{rel}"] = (device / rel).read_bytes()
    return files


def build(files: Optional[dict[str, bytes]] = None) -> Artifact:
    """Build the zipapp from ``files`` (default: ``sources()``)."""
    files = sources() if files is None else files
    buf = io.BytesIO()
    buf.write(SHEBANG)
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as z:
        for name in sorted(files):
            info = zipfile.ZipInfo(name, date_time=_EPOCH)
            info.create_system = 3  # unix, so the mode bits below mean what they say
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_STORED
            z.writestr(info, files[name])
    data = buf.getvalue()
    return Artifact(data, hashlib.sha256(data).hexdigest(), tuple(sorted(files)))


@functools.lru_cache(maxsize=1)
def artifact() -> Artifact:
    """The zipapp of this checkout (built once per process)."""
    return build()
