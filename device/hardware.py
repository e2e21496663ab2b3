"""What the benchmark ran on: board model, CPU governor, temperature, throttling, emulation.

Everything is read from files under ``root`` (``/`` on the device) so tests can use a fake root.
Missing files are simply absent from the report, as on a PC.

``emulated`` says that the timings are not the hardware's: it is ``$EDGEKIT_EMULATED`` when set
(the emulated arm64 test target sets ``qemu-user-aarch64`` in every SSH session), else detected
when the kernel's architecture (``/proc/sys/kernel/arch``, which qemu-user passes through) is of
another family than the one this process runs as (``uname -m``, which qemu-user fakes).
"""

from __future__ import annotations

import os
import platform
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

EMULATED_ENV = "EDGEKIT_EMULATED"
_NOT_EMULATED = ("", "0", "no", "false", "off", "none")

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
    emulated: Optional[str] = None

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


def arch_family(machine: str) -> str:
    """``x86`` / ``arm`` / ... for a ``uname -m`` value, so 32-bit userlands on 64-bit kernels match."""
    m = machine.strip().lower()
    if m in ("x86_64", "amd64", "x86", "i386", "i486", "i586", "i686"):
        return "x86"
    for family in ("aarch64", "arm", "ppc", "powerpc", "riscv", "s390", "mips", "loongarch", "sparc"):
        if m.startswith(family):
            return {"aarch64": "arm", "powerpc": "ppc"}.get(family, family)
    return m


def detect_emulation(machine: str, kernel_arch: Optional[str], environ: Mapping[str, str],
                     qemu_registered: bool = False) -> Optional[str]:
    """What emulates this process, or None: ``$EDGEKIT_EMULATED``, else a name from an arch mismatch.

    The mismatch is named ``qemu-user-<machine>`` when binfmt_misc has a qemu handler for that
    machine, else ``<machine>-on-<kernel arch>`` (another user-mode emulator).
    """
    declared = environ.get(EMULATED_ENV, "").strip()
    if declared.lower() not in _NOT_EMULATED:
        return declared
    if kernel_arch and machine and arch_family(kernel_arch) != arch_family(machine):
        return f"qemu-user-{machine}" if qemu_registered else f"{machine}-on-{kernel_arch}"
    return None


def emulation(root: Path | str = "/", environ: Optional[Mapping[str, str]] = None) -> Optional[str]:
    """What emulates this process, read from ``root`` (``/proc`` files) and ``environ`` (default os.environ).

    The one place that decides it: ``read_hardware`` uses it, and so does the deploy agent
    (this module is stdlib-only and ships inside the agent's zipapp).
    """
    r = Path(root)
    machine = platform.machine()
    return detect_emulation(machine, _read(r, "proc/sys/kernel/arch"), os.environ if environ is None else environ,
                            (_read(r, f"proc/sys/fs/binfmt_misc/qemu-{machine}") or "").startswith("enabled"))


def read_hardware(root: Path | str = "/", environ: Optional[Mapping[str, str]] = None) -> Hardware:
    """Read board, governor, temperature, throttling and emulation from ``root`` (and ``environ``, default os.environ)."""
    r = Path(root)
    machine = platform.machine()
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
        machine=machine,
        cpu_count=os.cpu_count() or 1,
        model=model or None,
        cpu_model=cpu_model,
        governor=governor,
        temperature_c=temperature_c,
        throttled=throttled,
        throttled_flags=decode_throttled(throttled) if throttled else (),
        emulated=emulation(r, environ),
    )
