"""The daemon's view of its hardware: ``read_hardware`` at most every few seconds, and its metrics.

The page and ``/metrics`` both ask; reading ``/proc`` and ``/sys`` once per ``max_age_s`` keeps
a busy scraper or several open pages from costing the classifier anything. The Prometheus
lines say only what is known: a PC has no ``get_throttled`` word and exports no throttling.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Optional

from device.hardware import THROTTLE_BITS, Hardware, read_hardware

SINCE_BOOT_SHIFT = 16  # bit n + 16 of get_throttled: condition n "has occurred" since boot


def throttle_conditions() -> dict[int, str]:
    """Bit → metric label for the "now" bits of get_throttled, e.g. 0 → ``under_voltage``."""
    out = {}
    for bit, name in THROTTLE_BITS.items():
        if bit < SINCE_BOOT_SHIFT:
            out[bit] = re.sub(r"[^a-z]+", "_", name.removesuffix(" now").lower()).strip("_")
    return out


class HardwareMonitor:
    """Thread-safe cache of ``read_hardware(root)``, re-read when older than ``max_age_s``."""

    def __init__(self, root: Path | str = "/", max_age_s: float = 5.0, environ: Optional[Mapping[str, str]] = None):
        self.root = Path(root)
        self.max_age_s = max_age_s
        self.environ = environ
        self._lock = threading.Lock()
        self._hw: Optional[Hardware] = None
        self._read_at = 0.0

    def get(self) -> Hardware:
        """The hardware state, at most ``max_age_s`` old."""
        with self._lock:
            now = time.monotonic()
            if self._hw is None or now - self._read_at >= self.max_age_s:
                self._hw = read_hardware(self.root, self.environ)
                self._read_at = now
            return self._hw


def hardware_metrics(hw: Hardware) -> str:
    """Prometheus text lines for temperature, throttling and emulation (only what is known)."""
    lines: list[str] = []
    if hw.temperature_c is not None:
        lines += ["# HELP edgekit_cpu_temperature_celsius SoC temperature (thermal_zone0).",
                  "# TYPE edgekit_cpu_temperature_celsius gauge",
                  f"edgekit_cpu_temperature_celsius {hw.temperature_c}"]
    if hw.throttled is not None:
        lines += ["# HELP edgekit_throttled 1 when the firmware reports the condition (get_throttled), now or since boot.",
                  "# TYPE edgekit_throttled gauge"]
        for bit, cond in throttle_conditions().items():
            for when, b in (("now", bit), ("since_boot", bit + SINCE_BOOT_SHIFT)):
                lines.append(f'edgekit_throttled{{condition="{cond}",when="{when}"}} {hw.throttled >> b & 1}')
    lines += ["# HELP edgekit_emulated 1 when the daemon runs under an emulator: its timings are not the hardware's.",
              "# TYPE edgekit_emulated gauge",
              f"edgekit_emulated {1 if hw.emulated else 0}"]
    return "\n".join(lines) + "\n"
