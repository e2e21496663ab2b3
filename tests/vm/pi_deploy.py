"""The deploy CLI pointed at one emulated Pi, and the session's records (boots, power cuts), for the vm tests."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from build_image import RELEASES
from machine import PiVM, run_deploy

WHEELHOUSE = Path(os.environ.get("EDGEKIT_VM_WHEELHOUSE", "/var/cache/edgekit/vm/wheelhouse"))
# Emulated start-up (imports under TCG, rendering frames) is slow: health checks get this long.
HEALTH_TIMEOUT_S = float(os.environ.get("EDGEKIT_VM_HEALTH_TIMEOUT_S", "600"))


def releases_from_env() -> list[str]:
    """The releases to run on: ``EDGEKIT_VM_RELEASES`` (comma-separated), default all; ValueError names an unknown one."""
    names = [n.strip() for n in os.environ.get("EDGEKIT_VM_RELEASES", ",".join(RELEASES)).split(",") if n.strip()]
    unknown = [n for n in names if n not in RELEASES]
    if unknown:
        raise ValueError(f"EDGEKIT_VM_RELEASES names {unknown}; known: {', '.join(RELEASES)}")
    return names


class Deploy:
    """The deploy CLI pointed at one machine (``--json``), with its output kept for failure messages."""

    def __init__(self, vm: PiVM):
        self.vm = vm

    def __call__(self, command: str, *args: str, timeout_s: float = 1800, env: dict[str, str] | None = None,
                 json_out: bool = True) -> tuple[int, Any, str]:
        argv = [command, *self.vm.deploy_args(), *args, *(["--json"] if json_out else [])]
        p = run_deploy(argv, timeout_s=timeout_s, env=env)
        data: Any = None
        if json_out:
            try:
                data = json.loads(p.stdout)
            except json.JSONDecodeError:
                data = None
        return p.returncode, data, f"deploy {command}: exit {p.returncode}\nstdout: {p.stdout[-3000:]}\nstderr: {p.stderr[-3000:]}"

    def push(self, artifacts: Path, *args: str, env: dict[str, str] | None = None, timeout_s: float = 1800) -> tuple[int, Any, str]:
        """``deploy push`` with the host's wheelhouse (the guest reaches no index) and emulation-sized timeouts."""
        return self("push", "--artifacts", str(artifacts), "--wheelhouse", str(WHEELHOUSE / self.vm.image.release),
                    "--health-timeout-s", str(HEALTH_TIMEOUT_S), "--no-progress", *args, env=env, timeout_s=timeout_s)


def record_boot(vm: PiVM) -> None:
    """Append the boot's figures to the session's boots.json (EMULATED: qemu TCG, not a Pi)."""
    path = vm.workdir.parent / "boots.json"
    rows: list[Any] = json.loads(path.read_text()) if path.exists() else []
    b = vm.boots[-1]
    rows.append({"release": vm.image.release, "how": b.how, "boot_to_ssh_s": round(b.ssh_s or -1, 2), "emulated": True})
    path.write_text(json.dumps(rows, indent=1))
