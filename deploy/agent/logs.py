"""The last lines of the logs: files under ``logs/`` for the process supervisor, journald under systemd."""

from __future__ import annotations

import os
from pathlib import Path

from deploy.agent.layout import Layout
from deploy.agent.protocol import LogsAnswer


def tail(path: Path, lines: int) -> list[str]:
    """The last ``lines`` lines of a file (reading only its end)."""
    if lines <= 0:
        return []
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 64 * 1024 * (lines // 100 + 1)))
            data = f.read().decode(errors="replace")
    except OSError:
        return []
    return data.splitlines()[-lines:]


def file_logs(lay: Layout, lines: int) -> LogsAnswer:
    """daemon.log, supervisor.log and results.jsonl, and the command that follows them."""
    return {
        "source": "files",
        "daemon": tail(lay.daemon_log, lines),
        "supervisor": tail(lay.supervisor_log, lines),
        "results": tail(lay.results, lines),
        "follow": ["tail", "-n", str(int(lines)), "-F", str(lay.supervisor_log), str(lay.daemon_log), str(lay.results)],
    }
