"""Emulated timings are never reported as Pi latency: hardware info, device bench, agent, deploy tables."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from deploy.bench import BenchResult, format_bench
from deploy.status import StatusRow, format_status
from device.hardware import EMULATED_ENV, arch_family, detect_emulation, read_hardware

EMU = "qemu-user-aarch64"


@pytest.mark.parametrize(("machine", "kernel", "env", "qemu", "want"), [
    ("x86_64", "x86_64", {}, False, None),
    ("armv7l", "aarch64", {}, False, None),           # 32-bit Pi OS userland on a 64-bit kernel: native
    ("i686", "x86_64", {}, False, None),
    ("aarch64", "x86_64", {}, True, "qemu-user-aarch64"),
    ("aarch64", "x86_64", {}, False, "aarch64-on-x86_64"),
    ("aarch64", None, {}, True, None),                 # no /proc/sys/kernel/arch: nothing to compare
    ("x86_64", "x86_64", {EMULATED_ENV: EMU}, False, EMU),
    ("aarch64", "x86_64", {EMULATED_ENV: "0"}, True, "qemu-user-aarch64"),  # "0" does not hide a mismatch
])
def test_detect_emulation(machine: str, kernel: str | None, env: dict[str, str], qemu: bool, want: str | None) -> None:
    assert detect_emulation(machine, kernel, env, qemu) == want


def test_arch_family() -> None:
    assert arch_family("aarch64") == arch_family("armv7l") == arch_family("arm64") == "arm"
    assert arch_family("x86_64") == arch_family("i686") == "x86"
    assert arch_family("riscv64") == "riscv" != arch_family("x86_64")


def test_read_hardware_records_emulation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(EMULATED_ENV, raising=False)
    (tmp_path / "proc" / "sys" / "kernel").mkdir(parents=True)
    arch = tmp_path / "proc" / "sys" / "kernel" / "arch"
    arch.write_text(platform.machine() + "\n")
    assert read_hardware(tmp_path).emulated is None
    assert read_hardware(tmp_path).to_json()["emulated"] is None
    monkeypatch.setenv(EMULATED_ENV, EMU)
    hw = read_hardware(tmp_path)
    assert hw.emulated == EMU and hw.to_json()["emulated"] == EMU
    assert read_hardware(tmp_path, environ={}).emulated is None
    # A kernel of another family than this process's machine: a user-mode emulator runs us.
    other = "riscv64" if arch_family(platform.machine()) != "riscv" else "x86_64"
    arch.write_text(other)
    assert read_hardware(tmp_path, environ={}).emulated == f"{platform.machine()}-on-{other}"
    binfmt = tmp_path / "proc" / "sys" / "fs" / "binfmt_misc"
    binfmt.mkdir(parents=True)
    (binfmt / f"qemu-{platform.machine()}").write_text("enabled\ninterpreter /usr/bin/qemu\n")
    assert read_hardware(tmp_path, environ={}).emulated == f"qemu-user-{platform.machine()}"


def _agent_status(tmp_path: Path, env: dict[str, str]) -> dict:
    from deploy.agent.build import artifact

    pyz = tmp_path / artifact().filename
    pyz.write_bytes(artifact().data)
    clean = {k: v for k, v in os.environ.items() if k != EMULATED_ENV}
    p = subprocess.run([sys.executable, "-E", "-s", str(pyz), "status", "--dir", str(tmp_path / "kit")], capture_output=True,
                       text=True, timeout=60, env={**clean, **env})
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout.strip().splitlines()[-1])


def test_agent_reports_the_session_as_emulated(tmp_path: Path) -> None:
    assert _agent_status(tmp_path, {EMULATED_ENV: EMU})["emulated"] == EMU
    # Here (not emulated) the agent agrees with device.hardware: it imports it (bundled in its zipapp).
    assert _agent_status(tmp_path, {})["emulated"] == read_hardware("/", environ={}).emulated


@pytest.mark.slow
def test_device_bench_prints_the_banner_and_records_the_field(deploy_artifacts: Path) -> None:
    base = [sys.executable, "-m", "device", "bench", "--manifest", str(deploy_artifacts), "--variant", "int8",
            "--runs", "5", "--warmup", "1"]
    env = {**os.environ, EMULATED_ENV: EMU}
    p = subprocess.run(base, capture_output=True, text=True, timeout=120, env=env)
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines()[0].startswith(f"EMULATED ({EMU}): not Pi latency")
    p = subprocess.run([*base, "--json"], capture_output=True, text=True, timeout=120, env=env)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["results"][0]["hardware"]["emulated"] == EMU


def _row(host: str, emulated: str | None) -> StatusRow:
    lat = {"invoke": {"p50_ms": 0.5, "p90_ms": 0.6, "p99_ms": 0.9}, "total": {"p50_ms": 1.0, "p90_ms": 1.2, "p99_ms": 2.0}}
    return StatusRow(host=host, release="abc", variant="int8", running=True, runtime="ai-edge-litert 2.3.0", fps=30.0,
                     frames=100, restarts=0, latency_ms=lat, emulated=emulated)


def test_status_table_marks_emulated_hosts() -> None:
    plain = format_status([_row("pi-a", None)])
    assert "EMULATED" not in plain
    text = format_status([_row("pi-a", None), _row("emu", EMU)])
    lines = text.splitlines()
    assert "hardware" in lines[0]
    assert f"EMULATED ({EMU})" in next(line for line in lines if line.startswith("emu "))
    assert "EMULATED" not in next(line for line in lines if line.startswith("pi-a "))
    assert "not Pi latency" in lines[-1]
    assert _row("emu", EMU).to_json()["emulated"] == EMU


def test_bench_table_marks_emulated_variants(tmp_path: Path) -> None:
    def report(emulated: str | None) -> dict:
        return {"results": [{"variant": "int8", "runtime": "ai-edge-litert", "stages_ms": {"invoke": {"p50_ms": 0.25}},
                             "hardware": {"machine": "aarch64", "emulated": emulated}}]}

    native = BenchResult("pi-a", report(None), tmp_path / "a.json", 0)
    assert "EMULATED" not in format_bench([native])
    # The device benchmark's own record wins; the agent's answer covers device code that predates the field.
    emulated = BenchResult("emu", report(EMU), tmp_path / "b.json", 0)
    old_device = BenchResult("old", {"results": [{"variant": "int8", "stages_ms": {"invoke": {"p50_ms": 0.25}}}]},
                             tmp_path / "c.json", 0, emulated=EMU)
    text = format_bench([native, emulated, old_device])
    rows = {line.split()[1]: line for line in text.splitlines()[2:] if line.startswith("int8 ")}
    assert "native" in rows["pi-a"] and "EMULATED" not in rows["pi-a"]
    assert f"EMULATED ({EMU})" in rows["emu"] and f"EMULATED ({EMU})" in rows["old"]
    assert text.splitlines()[-1].endswith("not Pi latency")
