"""Render the systemd unit template shipped in ``device/systemd/`` for one Pi."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Optional

TEMPLATE = Path(__file__).with_name("systemd") / "edgekit-device.service"


def render_unit(
    manifest: str,
    user: str = "pi",
    workdir: str = "/opt/edgekit",
    state_dir: str = "/var/lib/edgekit",
    python: Optional[str] = None,
    variant: str = "int8",
    source: str = "picamera2",
    port: int = 8321,
) -> str:
    """The unit text with every @PLACEHOLDER@ filled; raises ValueError if one is left."""
    values = {
        "PYTHON": python or sys.executable,
        "MANIFEST": manifest,
        "VARIANT": variant,
        "SOURCE": source,
        "PORT": str(port),
        "WORKDIR": workdir,
        "STATE_DIR": state_dir,
        "USER": user,
    }
    text = TEMPLATE.read_text()
    for k, v in values.items():
        if any(c.isspace() for c in v):
            raise ValueError(f"{k} must not contain whitespace for a systemd ExecStart line. Got: {v!r}")
        text = text.replace(f"@{k}@", v)
    left = re.findall(r"@[A-Z_]+@", text)
    if left:
        raise ValueError(f"unfilled placeholders in the unit template: {', '.join(sorted(set(left)))}")
    return text
