"""What the benchmark ran on: board model, CPU governor, temperature, throttling.

Everything is read from files under ``root`` (``/`` on the device) so tests can use a fake root.
Missing files are simply absent from the report, as on a PC.
"""

from __future__ import annotations

import os
import platform
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

# Bits of the firmware's get_throttled word (as `vcgencmd get_throttled` prints).
THROTTLE_BITS = {
    0: "under-voltage now",
    1: "frequency capped now",
    2: "throttled now",
    3: "soft temperature limit now",
    16: "under-voltage has occurred",
    17: "frequency capping has occurred",
    18: "throttling has occurred",
    19: "soft temperature limit has occurred",
}


@dataclass(frozen=True)
class Hardware:
    """The machine a benchmark ran on."""

    machine: str
    cpu_count: int
    model: Optional[str] = None
    cpu_model: Optional[str] = None
    governor: Optional[str] = None
    temperature_c: Optional[float] = None
    throttled: Optional[int] = None
    throttled_flags: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict."""
        d = asdict(self)
        d["throttled"] = None if self.throttled is None else hex(self.throttled)
        d["throttled_flags"] = list(self.throttled_flags)
        return d


def _read(root: Path, rel: str) -> Optional[str]:
    try:
        return (root / rel).read_bytes().replace(b"\0", b"").decode("utf-8", "replace").strip()
    except OSError:
        return None


def decode_throttled(value: int) -> tuple[str, ...]:
    """Names of the bits set in a get_throttled word."""
    return tuple(name for bit, name in THROTTLE_BITS.items() if value >> bit & 1)


def read_hardware(root: Path | str = "/") -> Hardware:
    """Read board, governor, temperature and throttling from ``root``."""
    r = Path(root)
    model = _read(r, "proc/device-tree/model")
    cpu_model = None
    cpuinfo = _read(r, "proc/cpuinfo") or ""
    for line in cpuinfo.splitlines():
        key, _, val = line.partition(":")
        if key.strip() in ("model name", "Model", "Hardware") and val.strip():
            cpu_model = val.strip()
            break
    governor = _read(r, "sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")
    temp = _read(r, "sys/class/thermal/thermal_zone0/temp")
    temperature_c = None
    if temp and temp.lstrip("-").isdigit():
        temperature_c = int(temp) / 1000.0
    throttled = None
    raw = _read(r, "sys/devices/platform/soc/soc:firmware/get_throttled")
    if raw:
        try:
            throttled = int(raw.split("=")[-1], 16)
        except ValueError:
            throttled = None
    return Hardware(
        machine=platform.machine(),
        cpu_count=os.cpu_count() or 1,
        model=model or None,
        cpu_model=cpu_model,
        governor=governor,
        temperature_c=temperature_c,
        throttled=throttled,
        throttled_flags=decode_throttled(throttled) if throttled else (),
    )
