"""doctor: what the device is (arch, OS, Python, systemd, camera, disk) and which runtime it gets."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from deploy.agent import protocol
from deploy.remote import Device
from deploy.venv import DoctorError, choose_runtime

MIN_FREE_BYTES = 200 * 1024 * 1024


def probe(device: Device, cached: bool = False) -> dict[str, Any]:
    """Raw facts from the device (the agent's ``probe``); ``cached`` reuses them while its Python's paths are unchanged."""
    return device.agent(protocol.PROBE, "--dir", device.root, *(["--cached"] if cached else []), timeout_s=180)


@dataclass(frozen=True)
class DoctorReport:
    """The device as deploy sees it, with problems that block a push and warnings that do not."""

    host: str
    machine: str
    os: str
    python: str
    systemd: bool
    camera: str
    free_bytes: int
    runtime: Optional[str]
    runtime_reason: str
    requirements: tuple[str, ...]
    problems: tuple[str, ...]
    warnings: tuple[str, ...]
    facts: dict[str, Any]
    emulated: Optional[str] = None
    supervisor: str = ""
    supervisor_reason: str = ""

    @property
    def ok(self) -> bool:
        """True when nothing blocks a push."""
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {k: getattr(self, k) for k in self.__dataclass_fields__} | {"ok": self.ok}


def doctor(device: Device, runtime: str = "auto") -> DoctorReport:
    """Probe the device and decide the runtime; problems are listed, not raised."""
    f = probe(device)
    problems: list[str] = []
    warnings: list[str] = []
    name: Optional[str] = None
    reason = ""
    reqs: tuple[str, ...] = ()
    try:
        choice = choose_runtime(f, runtime)
        name, reason, reqs = choice.name, choice.reason, choice.requirements
    except DoctorError as e:
        problems.append(str(e))
    if not f.get("venv_module"):
        problems.append("Python's venv module is missing: `sudo apt install python3-venv`")
    elif not f.get("ensurepip") and not f.get("pip"):
        warnings.append("neither ensurepip nor pip is available: installs will fail unless the system "
                        "site packages already satisfy the requirements (`sudo apt install python3-venv`)")
    if int(f.get("free_bytes", 0)) < MIN_FREE_BYTES:
        problems.append(f"only {int(f.get('free_bytes', 0)) // 2**20} MiB free under {f.get('remote_dir')}; "
                        f"free at least {MIN_FREE_BYTES // 2**20} MiB")
    cams = f.get("cameras") or []
    models = f.get("camera_models") or []
    pic = f.get("imports", {}).get("picamera2", {}).get("ok")
    if models:
        camera = ", ".join(str(m) for m in models)
    elif pic:
        camera = "none connected (picamera2 sees no camera)"
    else:
        camera = f"unknown: picamera2 not importable ({len(cams)} /dev/video* nodes)"
        if "raspberry" in str(f.get("board", "")).lower():
            warnings.append("picamera2 is not importable: `sudo apt install python3-picamera2` (the venv sees system packages)")
    osr = f.get("os_release", {})
    return DoctorReport(
        host=device.target.label,
        machine=str(f.get("machine")),
        os=str(osr.get("PRETTY_NAME") or osr.get("ID") or f.get("system")),
        python=str(f.get("python")),
        systemd=bool(f.get("systemd")),
        camera=camera,
        free_bytes=int(f.get("free_bytes", 0)),
        runtime=name,
        runtime_reason=reason,
        requirements=reqs,
        problems=tuple(problems),
        warnings=tuple(warnings),
        facts=f,
        emulated=f.get("emulated") or None,
        supervisor=str((f.get("supervisor") or {}).get("auto", "")),
        supervisor_reason=str((f.get("supervisor") or {}).get("reason", "")),
    )
