"""Results as JSON lines with size-based rotation, so the host can pull them back."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional


class JsonLinesWriter:
    """Appends one JSON object per line; rotates ``file`` → ``file.1`` … ``file.N`` past ``max_bytes``."""

    def __init__(self, path: Path | str, max_bytes: int = 10 * 1024 * 1024, backups: int = 3):
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.backups = max(0, backups)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f: Optional[Any] = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - lives as long as the writer
        self._size = self.path.stat().st_size
        self.lines = 0
        self.rotations = 0

    def write(self, record: dict[str, Any]) -> None:
        """Append a record, rotating first if it would push the file past ``max_bytes``."""
        line = json.dumps(record, separators=(",", ":")) + "\n"
        n = len(line.encode("utf-8"))
        if self._size and self._size + n > self.max_bytes:
            self._rotate()
        assert self._f is not None, "writer is closed"
        self._f.write(line)
        self._size += n
        self.lines += 1

    def flush(self) -> None:
        """Push buffered lines to the OS."""
        if self._f is not None:
            self._f.flush()

    def _rotate(self) -> None:
        assert self._f is not None
        self._f.close()
        if self.backups == 0:
            self.path.unlink(missing_ok=True)
        else:
            for i in range(self.backups - 1, 0, -1):
                src = self.path.with_name(f"{self.path.name}.{i}")
                if src.exists():
                    os.replace(src, self.path.with_name(f"{self.path.name}.{i + 1}"))
            os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        self._f = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - lives as long as the writer
        self._size = 0
        self.rotations += 1

    def close(self) -> None:
        """Flush and close; safe to call twice."""
        if self._f is not None:
            self._f.flush()
            os.fsync(self._f.fileno())
            self._f.close()
            self._f = None
