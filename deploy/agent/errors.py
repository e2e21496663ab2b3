"""The agent's one exception: every failure on the device becomes ``{"ok": false, "error", "kind", ...}``.

    AgentError(message, kind, **data)     kind is one of protocol.ERROR_KINDS; data rides along
                                          in the answer (e.g. ``log_tail``, ``holder``, ``files``)
"""

from __future__ import annotations

from typing import Any

from deploy.agent.protocol import ERROR_KINDS


class AgentError(Exception):
    """A failure reported back to the host; the message says what went wrong and what to do."""

    def __init__(self, message: str, kind: str = "internal", **data: Any):
        if kind not in ERROR_KINDS:
            raise ValueError(f"unknown error kind {kind!r}; add it to protocol.ERROR_KINDS")
        super().__init__(message)
        self.kind = kind
        self.data = data
