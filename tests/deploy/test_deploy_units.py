"""Fast deploy tests without a server: targets, inventories, runtime choice, wheel tags, releases, CLI input errors."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from deploy_helpers import release_dir

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
    assert {"model/manifest.json", "model/model_int8.tflite", "model/golden.npz", "config.json", "requirements.txt",
            "code/device/engine.py", "code/device/golden.py"} <= names
    assert not any("agent" in n for n in names)  # the agent ships once per version to bin/, not in every release
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
                ["status", "--watch", "--count", "1", "--interval-s", "0"], ["logs"], ["logs", "-f"], ["bench"], ["tune"],
                ["releases"], ["rollback"], ["collect", "--label", "cat", "--count", "2"], ["pull-data", "--to", "DATA"]]


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
        argv = [str(deploy_artifacts) if a == "ART" else str(tmp_path / "data") if a == "DATA" else a for a in argv]
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


@pytest.mark.parametrize("command", ["push", "bench", "tune"])
def test_missing_artifacts_dir_is_refused_before_connecting(command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from deploy.cli import main

    missing = tmp_path / "no-such-dir"
    code = main([command, "--host", "root@no-such-host.invalid", "--artifacts", str(missing)])
    out, err = capsys.readouterr()
    assert code == 2 and out == "" and err.count("\n") == 1
    assert err.startswith(f"error: --artifacts {missing}: no manifest") and "python -m host run" in err


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
@pytest.mark.parametrize("dirname", ["kit", "my kit %h $HOME"])
def test_systemd_unit_for_a_release_verifies(tmp_path: Path, dirname: str) -> None:
    """The agent fills the device template for one release; systemd-analyze accepts it, also for a remote dir
    with a space, a specifier and a dollar (quoted and escaped per systemd.syntax), with no warning."""
    from deploy.agent import systemd
    from deploy.agent.layout import Layout

    root = tmp_path / dirname
    rid = "abc123abc123"
    rel = release_dir(root, rid, {"variant": "float16", "port": 9123, "source": "synthetic", "runtime": "ai-edge-litert"})
    lay = Layout(str(root))
    lay.ensure()
    text = systemd.render(lay, rid, user="root")
    assert not re.search(r"@[A-Z_]+@", text), "every template placeholder is filled (systemd's own @sets stay)"
    exec_line = next(line for line in text.splitlines() if line.startswith("ExecStart="))
    assert "--variant float16" in exec_line and exec_line.endswith("--runtime ai-edge-litert") and "--port 9123" in exec_line
    assert "Group=root" in text  # root's primary group, looked up
    if " " in dirname:
        # Whole words quoted, % and $ doubled: systemd would otherwise split the path and expand %h / $HOME.
        esc = str(root).replace("%", "%%")
        assert f'ExecStart="{esc}/releases/{rid}/venv/bin/python" -m device run' in exec_line
        assert f'--manifest "{esc.replace("$", "$$")}/releases/{rid}/model/manifest.json"' in exec_line
        assert f'"PYTHONPATH={esc}/releases/{rid}/code"' in text
        assert f"WorkingDirectory={esc}/releases/{rid}\n" in text
    else:
        assert f"--manifest {rel}/model/manifest.json" in exec_line and f"PYTHONPATH={rel}/code" in text
    unit = tmp_path / "edgekit-test.service"
    unit.write_text(text)
    p = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and unit.name not in p.stderr, p.stderr
    if " " in dirname:  # the same unit without the quoting is refused: the test can fail
        bad = tmp_path / "edgekit-bad.service"
        bad.write_text(text.replace('"', "").replace("%%", "%"))
        p = subprocess.run(["systemd-analyze", "verify", str(bad)], capture_output=True, text=True, timeout=60)
        assert p.returncode != 0 or bad.name in p.stderr


def test_unit_group_is_the_users_primary_group() -> None:
    import grp
    import pwd

    from device.service import primary_group

    for user in pwd.getpwall()[:20]:
        try:
            want = grp.getgrgid(user.pw_gid).gr_name
        except KeyError:
            continue
        assert primary_group(user.pw_name) == want
    # A user whose primary group is not named after it (Debian: "sync" is in group "nogroup", "games" in "users").
    mismatched = [u for u in pwd.getpwall() if (g := _group_name(u.pw_gid)) is not None and g != u.pw_name]
    assert mismatched, "no user whose primary group differs from its name on this machine"
    assert primary_group(mismatched[0].pw_name) != mismatched[0].pw_name
    with pytest.raises(ValueError, match="no user"):
        primary_group("no-such-user-edgekit")


def _group_name(gid: int) -> Any:
    import grp

    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return None


def test_switch_is_atomic_and_prune_keeps_current_and_previous(tmp_path: Path) -> None:
    import os

    from deploy.agent import releases
    from deploy.agent.errors import AgentError
    from deploy.agent.layout import VERIFIED_MARKER, Layout

    lay = Layout(str(tmp_path / "kit"))
    lay.ensure()
    ids = [f"{i:x}" * 12 for i in range(6)]
    for i, rid in enumerate(ids):
        release_dir(lay.root, rid, {"variant": "int8", "port": 1})
        marker = lay.releases / rid / VERIFIED_MARKER
        os.utime(marker, (1000 + i, 1000 + i))  # verification order
    half = "f" * 12
    (lay.releases / half).mkdir()  # no marker: never listed, never a switch target
    for rid in (ids[1], ids[0], ids[3]):  # ids[3] current, ids[0] before it
        releases.switch(lay, rid)
    assert os.readlink(lay.current) == f"releases/{ids[3]}" and lay.current_id() == ids[3]
    with pytest.raises(AgentError, match="not on the device"):
        releases.switch(lay, half)
    with pytest.raises(AgentError, match="not a release id"):
        releases.switch(lay, "../../etc")
    assert lay.current_id() == ids[3]
    removed = releases.prune(lay, keep=2)
    left = sorted(p.name for p in lay.releases.iterdir() if p.name != half)
    # The newest two stay, and so do current and the previous one, whatever their age.
    assert left == sorted([ids[0], ids[3], ids[4], ids[5]]) and sorted(removed) == sorted([ids[1], ids[2]])
    assert not list(lay.root.glob(".current.*"))  # no temporary link left behind
    assert json.loads(lay.history.read_text()) == [ids[1], ids[0], ids[3]]


@pytest.mark.parametrize("span", ["1min 30s", "10min", "5s", "100ms", "1h 2min 3s", "1min 30.500000s", "2d 4h", "1w", "750us"])
def test_timespan_parser_agrees_with_systemd(span: str) -> None:
    """The agent waits for `systemctl start` as long as the unit allows; it reads the limit as systemd prints it."""
    from deploy.agent.systemd import parse_timespan

    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze missing: `apt-get install systemd`")
    out = subprocess.run(["systemd-analyze", "timespan", span], capture_output=True, text=True, check=True).stdout
    usec = int(next(line.split(":", 1)[1] for line in out.splitlines() if line.strip().startswith("μs:")))
    got = parse_timespan(span)
    assert got is not None and abs(got - usec / 1e6) < 1e-6, (span, got, usec)


def test_timespan_parser_infinity_and_garbage() -> None:
    from deploy.agent.systemd import parse_timespan

    assert parse_timespan("infinity") is None
    assert parse_timespan("") is None
    assert parse_timespan("soon") is None
    assert parse_timespan("5s later") is None
