"""The agent as shipped: one deterministic zipapp, stdlib only, one home per fact, the protocol it speaks.

The zipapp is run for real in child processes (the Debian python3 without numpy stands in for a
Pi's bare python3), with a wrapper that records ``sys.modules`` at exit.
"""

from __future__ import annotations

import ast
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from deploy.agent import protocol
from deploy.agent.build import BUNDLED_DEVICE, artifact, build, sources
from deploy.agent.main import parser

REPO = Path(__file__).resolve().parents[2]
AGENT_DIR = REPO / "deploy" / "agent"
DEVICE_PYTHON = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable
RID = "0123456789ab"

# Runs a zipapp as `python -E -s agent.pyz ARGS` would, then writes {module: __file__} at exit.
WRAPPER = r"""
import atexit, json, sys
out = sys.argv.pop(1)
def dump():
    with open(out, "w") as f:
        json.dump({n: getattr(m, "__file__", None) for n, m in list(sys.modules.items())}, f)
atexit.register(dump)
del sys.argv[0]
import runpy
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "EDGEKIT_"))}
    return {**env, **extra}


def _run_recorded(tmp: Path, pyz: Path, argv: list[str], stdin: str = "", python: str = DEVICE_PYTHON,
                  name: str = "modules") -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    wrapper = tmp / "wrapper.py"
    wrapper.write_text(WRAPPER)
    out = tmp / f"{name}.json"
    p = subprocess.run([python, "-E", "-s", str(wrapper), str(out), str(pyz), *argv], input=stdin, capture_output=True,
                       text=True, timeout=180, cwd=str(tmp), env=_clean_env())
    return p, json.loads(out.read_text())


def _outside_stdlib(modules: dict[str, Any], baseline: set[str], pyz: Path, stdlib: set[str]) -> list[str]:
    """Modules the agent imported that are neither stdlib nor loaded from inside the zipapp."""
    bad = []
    for name, path in modules.items():
        if name in baseline or name.split(".")[0] in stdlib or name == "__main__":
            continue
        if path and str(path).startswith(str(pyz) + os.sep):
            continue  # bundled: deploy.agent.*, device.hardware, ...
        bad.append(f"{name} ({path})")
    return sorted(bad)


def _stdlib_names(python: str) -> set[str]:
    p = subprocess.run([python, "-c", "import sys, json; print(json.dumps(sorted(sys.stdlib_module_names)))"],
                       capture_output=True, text=True, timeout=60, check=True)
    return set(json.loads(p.stdout))


def _session(root: Path) -> str:
    """A serve session that walks every command, most of them into their error paths."""
    d = ["--dir", str(root)]
    lines = [["probe", *d], ["lock", *d, "--purpose", "test"], ["prepare", *d, "--id", RID], ["venv", *d, "--id", RID],
             ["verify", *d, "--id", RID], ["activate", *d, "--id", RID], ["releases", *d], ["rollback-target", *d],
             ["control", "stop", *d], ["status", *d], ["logs", *d], ["wait", *d, "--id", RID, "--timeout-s", "0.5"],
             ["bench", *d], ["tuned", *d], ["tune", *d], ["tune-record", *d, "--record", "{}"], ["unlock", *d],
             ["no-such-command"]]
    return "".join(json.dumps(x) + "\n" for x in lines)


@pytest.fixture(scope="module")
def pyz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("agent") / artifact().filename
    path.write_bytes(artifact().data)
    return path


def test_zipapp_is_deterministic_and_named_by_its_hash(tmp_path: Path) -> None:
    a, b = artifact(), build()
    assert a.data == b.data and a.filename == f"agent-{a.sha256[:12]}.pyz" and a.data.startswith(b"#!/usr/bin/env python3\n")
    # Another process (another import order, other mtimes) builds the very same bytes.
    code = "from deploy.agent.build import build; print(build().sha256)"
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=str(tmp_path))
    assert p.stdout.strip() == a.sha256
    names = set(a.names)
    assert {f"device/{n}" for n in BUNDLED_DEVICE} <= names and "__main__.py" in names
    assert "device/engine.py" not in names and not any("numpy" in n for n in names)
    assert {f"deploy/agent/{p.name}" for p in AGENT_DIR.glob("*.py")} <= names
    changed = dict(sources())
    changed["deploy/agent/logs.py"] += b"\n# changed\n"
    assert build(changed).sha256 != a.sha256


def test_agent_process_imports_only_the_standard_library(pyz: Path, tmp_path: Path) -> None:
    stdlib = _stdlib_names(DEVICE_PYTHON)
    empty = tmp_path / "empty.pyz"
    empty.write_bytes(build({"__main__.py": b"pass\n"}).data)
    _, base = _run_recorded(tmp_path, empty, [], name="baseline")
    baseline = set(base)
    root = tmp_path / "kit"
    p, modules = _run_recorded(tmp_path, pyz, ["serve"], stdin=_session(root))
    answers = [json.loads(line) for line in p.stdout.splitlines()]
    assert p.returncode == 0 and len(answers) == 18, p.stderr
    assert answers[0]["ok"] and answers[0]["python"] and answers[1]["ok"] and answers[2]["ok"]
    assert not answers[-1]["ok"] and answers[-1]["kind"] == "bad-request"
    assert all("fsync_count" in a for a in answers)
    tuned, tune, record = answers[-5:-2]
    assert tuned["ok"] and tuned["record"] is None and tuned["current"] is None
    assert not tune["ok"] and tune["kind"] == "missing" and "push a release first" in tune["error"]
    assert not record["ok"] and record["kind"] == "bad-request"
    # The bundled device modules were really used, from inside the zipapp.
    for name in ("deploy.agent.main", "device.hardware", "device.manifest", "device.service"):
        assert str(modules[name]).startswith(str(pyz) + os.sep), (name, modules[name])
    assert _outside_stdlib(modules, baseline, pyz, stdlib) == []
    # One-shot mode too.
    p, modules = _run_recorded(tmp_path, pyz, ["status", "--dir", str(root)], name="oneshot")
    assert p.returncode == 0 and json.loads(p.stdout.splitlines()[-1])["ok"]
    assert _outside_stdlib(modules, baseline, pyz, stdlib) == []


def test_the_stdlib_check_catches_a_non_stdlib_import(tmp_path: Path) -> None:
    """The same check on a zipapp whose logs module imports fabric: it must name fabric (so the test above can fail)."""
    pytest.importorskip("fabric")
    files = dict(sources())
    files["deploy/agent/logs.py"] += b"\nimport fabric  # noqa\n"
    doctored = tmp_path / "doctored.pyz"
    doctored.write_bytes(build(files).data)
    empty = tmp_path / "empty.pyz"
    empty.write_bytes(build({"__main__.py": b"pass\n"}).data)
    _, base = _run_recorded(tmp_path, empty, [], python=sys.executable, name="baseline")
    p, modules = _run_recorded(tmp_path, doctored, ["status", "--dir", str(tmp_path / "kit")], python=sys.executable)
    assert p.returncode == 0, p.stderr
    bad = _outside_stdlib(modules, set(base), doctored, _stdlib_names(sys.executable))
    assert any(b.startswith("fabric ") for b in bad) and any(b.startswith("paramiko") for b in bad), bad


def test_each_fact_has_one_home() -> None:
    """No copies in the agent: sha256, emulation, manifest reading, variants come from the bundled device modules."""
    device_imports = set()
    for path in AGENT_DIR.glob("*.py"):
        src = path.read_text()
        assert "sys.modules[" not in src and "sys.modules.pop" not in src, f"{path.name} swaps sys.modules"
        tree = ast.parse(src)
        defined = {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
        assert not defined & {"sha256_file", "_sha256", "emulated", "detect_emulation", "arch_family", "_arch_family",
                              "load_manifest", "parse_manifest"}, path.name
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "device":
                device_imports.add(node.module)
            assert not (isinstance(node, ast.Assign) and any(getattr(t, "id", "") in ("VARIANTS", "STAGES") for t in node.targets))
    # Every device module the agent imports is bundled in the zipapp.
    bundled = {"device." + n[:-3].replace("/", ".") for n in BUNDLED_DEVICE if n.endswith(".py")}
    assert device_imports and device_imports <= bundled, device_imports - bundled
    for path in (REPO / "deploy").glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            assert not (isinstance(node, ast.Assign) and any(getattr(t, "id", "") in ("VARIANTS", "STAGES") for t in node.targets)), path


def test_protocol_names_every_command_the_agent_parses() -> None:
    sub = next(a for a in parser()._actions if a.dest == "cmd")
    assert set(sub.choices) == set(protocol.COMMANDS)  # type: ignore[attr-defined]
    assert set(protocol.COMMANDS) >= protocol.MUTATING
    assert protocol.is_release_id(RID) and not protocol.is_release_id("../../etc") and not protocol.is_release_id("ABCDEF012345")
    assert protocol.decode_answer("noise\n" + protocol.encode_answer({"ok": True, "x": "a\nb"})) == {"ok": True, "x": "a\nb"}


def _oneshot(pyz: Path, *argv: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    p = subprocess.run([DEVICE_PYTHON, "-E", "-s", str(pyz), *argv], capture_output=True, text=True, timeout=120,
                       env=_clean_env(**(env or {})))
    return json.loads(p.stdout.splitlines()[-1])


def test_release_ids_are_checked_before_they_become_paths(pyz: Path, tmp_path: Path) -> None:
    root = tmp_path / "kit"
    for bad in ("../../escape", "/etc", "0123456789AB", "x" * 12):
        for cmd in (["prepare", "--id", bad], ["activate", "--id", bad], ["wait", "--id", bad], ["venv", "--id", bad],
                    ["control", "start", "--release", bad]):
            a = _oneshot(pyz, *cmd, "--dir", str(root))
            assert not a["ok"] and a["kind"] == "bad-request" and "not a release id" in a["error"], (cmd, a)
    assert not (tmp_path / "escape").exists() and not (root / "staging").exists()


def _wait_until_blocked_on(pid: int, lock: Path, timeout_s: float = 60.0) -> None:
    """Wait until process ``pid`` has the lock file open (it is then waiting in flock), however slow its start."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for fd in Path(f"/proc/{pid}/fd").glob("*"):
            try:
                if Path(os.readlink(fd)) == lock:
                    return
            except OSError:
                continue
        time.sleep(0.05)
    raise AssertionError(f"process {pid} never opened {lock}")


def test_a_held_lock_refuses_changes_and_names_its_holder(pyz: Path, tmp_path: Path) -> None:
    root = tmp_path / "kit"
    holder = subprocess.Popen([DEVICE_PYTHON, "-E", "-s", str(pyz), "serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True, env=_clean_env())
    assert holder.stdin is not None and holder.stdout is not None
    try:
        holder.stdin.write(json.dumps(["lock", "--dir", str(root), "--purpose", "push of release " + RID,
                                       "--by", "alice@laptop"]) + "\n")
        holder.stdin.flush()
        assert json.loads(holder.stdout.readline())["ok"]
        t0 = time.monotonic()
        a = _oneshot(pyz, "prepare", "--dir", str(root), "--id", RID)
        assert not a["ok"] and a["kind"] == "locked" and time.monotonic() - t0 < 10  # fails fast
        assert f"push of release {RID} by alice@laptop (agent pid {holder.pid}" in a["error"]
        assert "--lock-timeout-s" in a["error"] and not (root / "staging" / RID).exists()
        for cmd in (["control", "stop"], ["activate", "--id", RID], ["lock", "--purpose", "x"]):
            assert _oneshot(pyz, *cmd, "--dir", str(root))["kind"] == "locked", cmd
        assert _oneshot(pyz, "status", "--dir", str(root))["ok"]  # reading needs no lock
        # Waiting for it: the holder's session ends (its process exits) after 1 s, the waiter gets the lock.
        waiter = subprocess.Popen([DEVICE_PYTHON, "-E", "-s", str(pyz), "lock", "--dir", str(root), "--timeout-s", "30"],
                                  stdout=subprocess.PIPE, text=True, env=_clean_env())
        _wait_until_blocked_on(waiter.pid, root / ".lock")
        time.sleep(0.6)
        holder.stdin.close()
        out, _ = waiter.communicate(timeout=60)
        answer = json.loads(out.splitlines()[-1])
        assert answer["ok"] and answer["waited_s"] >= 0.5
    finally:
        holder.kill()
        holder.wait()


def test_stop_kills_only_the_exact_processes(pyz: Path, tmp_path: Path) -> None:
    """Pid files that name a stranger (a reused pid whose command line mentions the root and "supervise device") are ignored."""
    root = tmp_path / "kit"
    (root / "run").mkdir(parents=True)
    decoy = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", "supervise", "device", "--dir",
                              str(root) + "-other"])
    try:
        fields = Path(f"/proc/{decoy.pid}/stat").read_text().rsplit(")", 1)[1].split()
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        wrong_start = {"pid": decoy.pid, "start_ticks": int(fields[19]) - 1, "boot_id": boot}
        for name in ("supervisor.json", "daemon.json"):
            (root / "run" / name).write_text(json.dumps(wrong_start))
        for name in ("supervisor.pid", "daemon.pid"):  # the old agent's pid files
            (root / "run" / name).write_text(f"{decoy.pid}\n")
        a = _oneshot(pyz, "control", "stop", "--dir", str(root), "--mode", "process")
        assert a["ok"] and a["was_running"] is False
        time.sleep(0.3)
        assert decoy.poll() is None, "stop killed a process that was not the supervisor"
        st = _oneshot(pyz, "status", "--dir", str(root))
        assert st["ok"] and not st["running"] and st["supervisor_pid"] is None
    finally:
        decoy.send_signal(signal.SIGKILL)
        decoy.wait()
