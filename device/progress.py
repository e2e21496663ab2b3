"""A dependency-free progress bar on stderr (the device has no tqdm)."""

from __future__ import annotations

import sys
import time
from typing import Optional, TextIO


class Progress:
    """Redraws ``desc [#####.....] n/total`` on a terminal; silent when stderr is not one."""

    def __init__(self, total: int, desc: str = "", stream: Optional[TextIO] = None, enabled: Optional[bool] = None):
        self.total = max(1, total)
        self.desc = desc
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.n = 0
        self._last = 0.0

    def update(self, k: int = 1) -> None:
        """Advance by k; redraw at most 10 times a second."""
        self.n += k
        now = time.monotonic()
        if self.enabled and (now - self._last > 0.1 or self.n >= self.total):
            self._last = now
            done = int(30 * min(self.n, self.total) / self.total)
            self.stream.write(f"\r{self.desc} [{'#' * done}{'.' * (30 - done)}] {self.n}/{self.total}")
            self.stream.flush()

    def close(self) -> None:
        """End the line."""
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()
