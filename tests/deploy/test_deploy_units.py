"""Fast deploy tests without a server: targets, inventories, runtime choice, wheel tags, releases, CLI input errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from deploy.errors import ArtifactsError, TargetError, WheelhouseError
from deploy.layout import ReleaseConfig, build_release, device_code_files
from deploy.remote import resolve_remote_dir
from deploy.targets import DEFAULT_REMOTE_DIR, load_inventory, parse_host, resolve_targets
from deploy.venv import DoctorError, choose_runtime, platform_tags


def test_parse_host_forms() -> None:
    t = parse_host("pi@raspberrypi.local:2222")
    assert (t.user, t.host, t.port, t.remote_dir) == ("pi", "raspberrypi.local", 2222, DEFAULT_REMOTE_DIR)
    t = parse_host("10.0.0.5", user="me")
    assert (t.user, t.host, t.port) == ("me", "10.0.0.5", 22)
    t = parse_host("root@[::1]:2200")
    assert (t.host, t.port) == ("::1", 2200)
    assert parse_host("a@b:22").label == "b"


@pytest.mark.parametrize("bad", ["", "pi@", "pi@host:99999", "pi@host:port", "a b", "@host"])
def test_parse_host_rejects(bad: str) -> None:
    with pytest.raises(TargetError, match=r"USER@\]HOST|out of range"):
        parse_host(bad)


def test_inventory(tmp_path: Path) -> None:
    inv = tmp_path / "pis.toml"
    inv.write_text(
        '[defaults]\nuser = "pi"\nremote_dir = "/srv/kit"\n\n'
        '[hosts.kitchen]\nhost = "10.0.0.2"\ndaemon_port = 9000\n\n'
        '[hosts.garage]\nhost = "root@garage.local:2222"\nidentity = "~/.ssh/k"\n'
    )
    kitchen, garage = load_inventory(inv, {"python": "/usr/bin/python3"})
    assert (kitchen.name, kitchen.user, kitchen.port, kitchen.remote_dir, kitchen.daemon_port) == ("kitchen", "pi", 22, "/srv/kit", 9000)
    assert kitchen.python == "/usr/bin/python3"
    assert (garage.user, garage.port, garage.identity) == ("root", 2222, Path("~/.ssh/k").expanduser())
    both = resolve_targets(["x@10.0.0.9"], inv)
    assert [t.label for t in both] == ["kitchen", "garage", "10.0.0.9"]


@pytest.mark.parametrize("text, msg", [
    ("[hosts.a]\nport = 22\n", "needs host"),
    ("hosts = 3\n", "no hosts"),
    ("[hosts.a\n", "not valid TOML"),
    ('[hosts.a]\nhost = "h"\ncolour = "red"\n', "unknown setting"),
])
def test_inventory_errors(tmp_path: Path, text: str, msg: str) -> None:
    inv = tmp_path / "bad.toml"
    inv.write_text(text)
    with pytest.raises(TargetError, match=msg):
        load_inventory(inv)


def test_no_target() -> None:
    with pytest.raises(TargetError, match="--host"):
        resolve_targets([], None)


def _probe(machine: str, python: str, **imports: bool) -> dict:
    return {"machine": machine, "python": python, "imports": {k.replace("_", "-"): {"ok": v, "version": "9"} for k, v in imports.items()}}


def test_choose_runtime() -> None:
    c = choose_runtime(_probe("aarch64", "3.11.2"))
    assert c.name == "tflite-runtime" and "numpy<2" in c.requirements
    assert choose_runtime(_probe("aarch64", "3.13.1")).name == "ai-edge-litert"
    # What already imports on the device wins over a new install.
    assert choose_runtime(_probe("x86_64", "3.11.7", ai_edge_litert=True)).name == "ai-edge-litert"
    assert choose_runtime(_probe("aarch64", "3.11.2"), "ai-edge-litert").name == "ai-edge-litert"
    with pytest.raises(DoctorError, match=r"no wheel for Python 3\.13"):
        choose_runtime(_probe("aarch64", "3.13.1"), "tflite-runtime")
    with pytest.raises(DoctorError, match="64-bit Raspberry Pi OS"):
        choose_runtime(_probe("armv7l", "3.11.2"))


def test_platform_tags() -> None:
    tags = platform_tags("aarch64", "glibc 2.36")
    assert tags[0] == "manylinux_2_36_aarch64" and "manylinux2014_aarch64" in tags and "manylinux_2_17_aarch64" in tags
    assert all(t.endswith("aarch64") for t in tags)
    with pytest.raises(WheelhouseError, match="armv7l"):
        platform_tags("armv7l")


def test_resolve_remote_dir() -> None:
    assert resolve_remote_dir("/home/pi", "~/edgekit") == "/home/pi/edgekit"
    assert resolve_remote_dir("/home/pi", "kit") == "/home/pi/kit"
    assert resolve_remote_dir("/home/pi", "/srv//kit/") == "/srv/kit"


def test_release_id_is_content_hash(deploy_artifacts: Path, tmp_path: Path) -> None:
    cfg = ReleaseConfig(variant="int8", port=8686, runtime="ai-edge-litert")
    a = build_release(deploy_artifacts, cfg, "numpy\n")
    b = build_release(deploy_artifacts, cfg, "numpy\n")
    assert a.id == b.id and len(a.id) == 12
    assert build_release(deploy_artifacts, ReleaseConfig(variant="float32", port=8686), "numpy\n").id != a.id
    assert build_release(deploy_artifacts, ReleaseConfig(variant="int8", port=8687, runtime="ai-edge-litert"), "numpy\n").id != a.id
    assert build_release(deploy_artifacts, cfg, "numpy<2\n").id != a.id
    names = {f.name for f in a.files}
    assert {"model/manifest.json", "model/model_int8.tflite", "model/golden.npz", "code/edgekit_agent.py",
            "config.json", "requirements.txt", "code/device/engine.py"} <= names
    assert "model/model_float32.tflite" not in names  # only the chosen variant ships
    assert not any("__pycache__" in n for n in names)
    assert len(device_code_files()) >= 5


def test_release_refuses_damaged_model(deploy_artifacts: Path, tmp_path: Path) -> None:
    art = tmp_path / "art"
    shutil.copytree(deploy_artifacts, art)
    model = art / "model_int8.tflite"
    model.write_bytes(model.read_bytes()[:-100])
    with pytest.raises(ArtifactsError, match="sha256"):
        build_release(art, ReleaseConfig(variant="int8", port=1), "numpy\n")
    with pytest.raises(ArtifactsError, match="variant 'int9'"):
        build_release(art, ReleaseConfig(variant="int9", port=1), "numpy\n")
    with pytest.raises(ArtifactsError, match="no manifest"):
        build_release(tmp_path / "nowhere", ReleaseConfig(variant="int8", port=1), "numpy\n")


def test_deploy_does_not_import_tensorflow() -> None:
    code = ("import sys; sys.modules['tensorflow'] = None\n"
            "import deploy.cli, deploy.push, deploy.bench, deploy.status, deploy.doctor, deploy.releases, deploy.testing\n"
            "print('ok')")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and p.stdout.strip() == "ok", p.stderr


def test_agent_is_stdlib_only() -> None:
    """The agent runs with the device's bare python3: importing it must need nothing outside the stdlib."""
    agent = Path(__file__).resolve().parents[2] / "deploy" / "agent.py"
    code = ("import sys\n"
            "for m in ('numpy', 'fabric', 'paramiko', 'device', 'deploy', 'tensorflow'): sys.modules[m] = None\n"
            "import runpy; sys.argv = ['agent', '--help']\n"
            f"runpy.run_path({str(agent)!r}, run_name='__main__')\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and "probe" in p.stdout, p.stderr


def test_cli_bad_input_is_a_clear_error(tmp_path: Path) -> None:
    p = subprocess.run([sys.executable, "-m", "deploy", "push", "--host", "pi@nowhere:99999", "--artifacts", str(tmp_path)],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "out of range" in p.stderr and "Traceback" not in p.stderr
    p = subprocess.run([sys.executable, "-m", "deploy", "push", "--host", "pi@nowhere", "--artifacts", str(tmp_path), "--json"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert "no manifest" in json.loads(p.stdout)["error"]
    p = subprocess.run([sys.executable, "-m", "deploy", "push", "--help"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and "--trust-new" in p.stdout and "--wheelhouse" in p.stdout and "(default: int8)" in p.stdout


def test_cli_unreachable_host_is_a_row_not_a_traceback(tmp_path: Path) -> None:
    from deploy.testing import free_port

    port = free_port()  # nothing listens there
    p = subprocess.run([sys.executable, "-m", "deploy", "doctor", "--host", f"root@127.0.0.1:{port}",
                        "--known-hosts", str(tmp_path / "kh"), "--connect-timeout-s", "3"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 1 and "connection refused" in p.stdout and "FAILED" in p.stdout and "Traceback" not in p.stdout + p.stderr


CLI_COMMANDS = [["doctor"], ["push", "--artifacts", "ART"], ["start"], ["stop"], ["restart"], ["status"],
                ["status", "--watch", "--count", "1", "--interval-s", "0"], ["logs"], ["logs", "-f"], ["bench"], ["releases"],
                ["rollback"]]


@pytest.mark.parametrize("fault", ["refused", "dns", "identity"])
def test_every_command_fails_in_one_clear_line(fault: str, deploy_artifacts: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    from deploy.cli import COMMANDS, main
    from deploy.testing import free_port

    # dashboard keeps running and shows these faults on the device's card (tests/deploy/test_dashboard.py)
    assert {c[0] for c in CLI_COMMANDS} | {"dashboard"} == set(COMMANDS)
    host, extra, want = {
        "refused": (f"root@127.0.0.1:{free_port()}", [], "connection refused"),
        "dns": ("root@no-such-host.invalid", [], "cannot resolve host 'no-such-host.invalid'"),
        "identity": (f"root@127.0.0.1:{free_port()}", ["--identity", str(tmp_path / "no-key")], f"identity file {tmp_path / 'no-key'} does not exist"),
    }[fault]
    for argv in CLI_COMMANDS:
        argv = [str(deploy_artifacts) if a == "ART" else a for a in argv]
        capsys.readouterr()
        code = main([*argv, "--host", host, "--known-hosts", str(tmp_path / "kh"), "--connect-timeout-s", "3", *extra])
        out, err = capsys.readouterr()
        lines = [line for line in (out + err).splitlines() if want in line]
        assert code == 1 and len(lines) == 1, (argv, out, err)
        assert "FAILED" in lines[0] and "Traceback" not in out + err, (argv, out, err)
    # --json: the same message, in one string, for scripts.
    code = main(["releases", "--host", host, "--known-hosts", str(tmp_path / "kh"), "--connect-timeout-s", "3", *extra, "--json"])
    (row,) = json.loads(capsys.readouterr().out)
    assert code == 1 and not row["ok"] and want in row["summary"] and "\n" not in row["summary"]


@pytest.mark.parametrize("command", ["push", "bench"])
def test_missing_artifacts_dir_is_refused_before_connecting(command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from deploy.cli import main

    missing = tmp_path / "no-such-dir"
    code = main([command, "--host", "root@no-such-host.invalid", "--artifacts", str(missing)])
    out, err = capsys.readouterr()
    assert code == 2 and out == "" and err.count("\n") == 1
    assert err.startswith(f"error: --artifacts {missing}: no manifest") and "python -m host run" in err


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_systemd_unit_rendered_from_the_device_template_verifies(tmp_path: Path) -> None:
    """--supervisor systemd fills the device package's unit template for the release; systemd-analyze accepts it."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "deploy"))
    try:
        import agent  # the stdlib-only script as it runs on the device
    finally:
        sys.path.pop(0)
    root = tmp_path / "kit"
    rel = root / "releases" / "abc123"
    shutil.copytree(Path(__file__).resolve().parents[2] / "device", rel / "code" / "device",
                    ignore=shutil.ignore_patterns("__pycache__"))
    lay = agent.Layout(str(root))
    lay.ensure()
    (root / "current").symlink_to("releases/abc123")
    text = agent.render_unit(lay, rel, {"variant": "float16", "port": 9123, "source": "synthetic", "runtime": "ai-edge-litert"},
                             "root")
    assert "@" not in text.replace("127.0.0.1:9123", "")
    exec_line = next(line for line in text.splitlines() if line.startswith("ExecStart="))
    assert f"--manifest {root}/current/model/manifest.json" in exec_line and "--variant float16" in exec_line
    assert exec_line.endswith("--runtime ai-edge-litert") and "--port 9123" in exec_line
    assert f"Environment=PYTHONPATH={root}/current/code" in text
    unit = tmp_path / "edgekit-test.service"
    unit.write_text(text)
    p = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr


def _agent_module() -> Any:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "deploy"))
    try:
        import agent
    finally:
        sys.path.pop(0)
    return agent


def test_switch_is_atomic_and_prune_keeps_current_and_previous(tmp_path: Path) -> None:
    import os

    agent = _agent_module()
    lay = agent.Layout(str(tmp_path / "kit"))
    lay.ensure()
    ids = [f"r{i}" for i in range(6)]
    for i, rid in enumerate(ids):
        (lay.releases / rid).mkdir()
        marker = lay.releases / rid / agent.VERIFIED_MARKER
        marker.write_text("{}")
        os.utime(marker, (1000 + i, 1000 + i))  # verification order
    (lay.releases / "half").mkdir()  # no marker: never listed, never a switch target
    for rid in ("r1", "r0", "r3"):  # r3 current, r0 before it
        agent._switch(lay, rid)
    assert os.readlink(lay.current) == "releases/r3" and lay.current_id() == "r3"
    with pytest.raises(agent.AgentError, match="not on the device"):
        agent._switch(lay, "half")
    assert lay.current_id() == "r3"
    removed = agent._prune(lay, keep=2)
    left = sorted(p.name for p in lay.releases.iterdir() if p.name != "half")
    # The newest two (r4, r5) stay, and so do current (r3) and the previous one (r0), whatever their age.
    assert left == ["r0", "r3", "r4", "r5"] and sorted(removed) == ["r1", "r2"]
    assert not list(lay.root.glob(".current.*"))  # no temporary link left behind
