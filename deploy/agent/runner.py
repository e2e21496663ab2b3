"""How the agent starts itself again (the process supervisor is ``agent.pyz supervise``)."""

from __future__ import annotations

import sys
import zipimport
from typing import Optional

import deploy.agent as _package


def archive() -> Optional[str]:
    """The zipapp this agent runs from, or None when it runs from a source checkout (tests, development)."""
    loader = getattr(_package, "__loader__", None)
    return str(loader.archive) if isinstance(loader, zipimport.zipimporter) else None


def agent_command() -> list[str]:
    """argv prefix that runs this same agent: ``python3 -E -s agent-<hash>.pyz`` (or ``-m deploy.agent`` from source)."""
    zipapp = archive()
    if zipapp is not None:
        # -E -s: as the host starts it, so the device user's PYTHONPATH and user site cannot interfere.
        return [sys.executable, "-E", "-s", zipapp]
    return [sys.executable, "-m", "deploy.agent"]
