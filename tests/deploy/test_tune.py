"""deploy tune against a real sshd "Pi": the sweep on the device, the durable record, push --variant auto running it.

A real daemon, a real interpreter: the choice is checked in the daemon's own command line and in
what its interpreter reports (/stats: threads, XNNPACK, the delegate nodes of its plan). Few
frames and golden images per configuration, so the default suite stays short.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from deploy_helpers import current_id, remote_root, run_cli

from deploy.cli import main
from deploy.testing import SSHServer
from device.hardware import EMULATED_ENV
from device.manifest import load_manifest
from device.runtime import load_runtime

pytestmark = pytest.mark.slow

# 30 golden images: one image flipped is 3.3 points, so the 0.3-point gate would make these plumbing checks hinge
# on one image of a one-epoch model; the gate itself is checked in tests/device/test_tuning.py.
QUICK = ("--frames", "8", "--warmup", "2", "--rounds", "2", "--golden-count", "30", "--gate-points", "20")
EMU = "qemu-user-aarch64"


def _push(capsys: pytest.CaptureFixture[str], pi: SSHServer, art: Path, *extra: str) -> dict:
    code, data, err = run_cli(capsys, "push", *pi.target.cli_args(), "--artifacts", str(art), "--supervisor", "process",
                              "--no-progress", *extra)
    assert code == 0, (data, err)
    return data[0]["result"]


def _daemon(pi: SSHServer) -> tuple[list[str], dict]:
    """The running daemon's argv (from /proc) and its /stats, read through the agent's status."""
    pid = json.loads((remote_root(pi) / "run" / "daemon.json").read_text())["pid"]
    argv = [a.decode() for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if a]
    from deploy.agent import protocol
    from deploy.connect import ConnectOptions, connect
    from deploy.remote import Device
    from deploy.targets import parse_host

    t = pi.target
    target = parse_host(t.spec, identity=t.identity, remote_dir=t.remote_dir, python=t.python, daemon_port=t.daemon_port)
    device = Device(connect(target, ConnectOptions(known_hosts=t.known_hosts)), target)
    try:
        stats = device.agent(protocol.STATUS, "--dir", device.root)["stats"]
    finally:
        device.close()
    return argv, stats


def _opt(argv: list[str], flag: str) -> str | None:
    return argv[argv.index(flag) + 1] if flag in argv else None


def test_tune_records_the_choice_and_push_auto_runs_it(make_pi, deploy_artifacts: Path,  # type: ignore[no-untyped-def]
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    pi = make_pi()
    art = deploy_artifacts
    manifest = load_manifest(art)
    # Never tuned: one line says so and what the push used instead.
    first = _push(capsys, pi, art, "--variant", "auto")
    notes = [s for s in first["steps"] if s.startswith("--variant auto")]
    assert len(notes) == 1 and "was never tuned" in notes[0] and "using int8" in notes[0], first["steps"]
    assert _opt(_daemon(pi)[0], "--variant") == "int8"
    pid_before = json.loads((remote_root(pi) / "run" / "daemon.json").read_text())["pid"]

    # A sweep narrowed so that the choice is not the default: 2 threads, XNNPACK off where the runtime can.
    off = load_runtime("auto").can_disable_xnnpack
    xnn = "off" if off else "on"
    code, data, err = run_cli(capsys, "tune", *pi.target.cli_args(), "--variant", "int8", "--variant", "float32",
                              "--threads", "2", "--xnnpack", xnn, *QUICK, "--budget-ms", "10000")
    assert code == 0, (data, err)
    res = data[0]["result"]
    rows = res["report"]["results"]
    assert [(r["variant"], r["threads"], r["xnnpack"]) for r in rows] == [("float32", 2, xnn), ("int8", 2, xnn)]
    for r in rows:
        assert r["ok"] and r["frames"] == 8 and r["golden_count"] == 30 and r["cpu_per_frame_ms"] > 0
        assert r["invoke_ms"]["p50_ms"] <= r["total_ms"]["p50_ms"] and r["passes_gate"] is not None
        assert (r["delegate_nodes"] == 0) == off  # the interpreter on the device really ran without XNNPACK
    assert res["emulated"] is None and res["meets_budget"] is True and "every variant of" in res["swept"]
    choice = res["choice"]
    assert choice["threads"] == 2 and choice["xnnpack"] == xnn
    # The record on the device: written whole, what the host was told, naming the model it measured.
    path = remote_root(pi) / "tuning.json"
    record = json.loads(path.read_text())
    assert record == res["record"] and res["record_path"] == str(path)
    assert record["variant"] == choice["variant"] and record["model_sha256"] == manifest.variant(choice["variant"]).sha256
    assert record["runtime"] == res["report"]["runtime"] and record["measured"]["golden_count"] == 30
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".tuning.json")]  # no temp file left behind
    # The daemon was paused for the sweep and runs again, the same release.
    _, stats = _daemon(pi)
    assert stats["frames"] > 0 and current_id(pi) == first["release"]
    assert json.loads((remote_root(pi) / "run" / "daemon.json").read_text())["pid"] != pid_before

    # push --variant auto runs exactly that.
    second = _push(capsys, pi, art, "--variant", "auto")
    note = next(s for s in second["steps"] if s.startswith("--variant auto"))
    assert "as tuned on this device" in note, second["steps"]
    argv, stats = _daemon(pi)
    assert _opt(argv, "--variant") == choice["variant"] and _opt(argv, "--threads") == "2" and _opt(argv, "--xnnpack") == xnn
    assert stats["variant"] == choice["variant"] and stats["threads"] == 2 and stats["xnnpack"] == xnn
    assert (stats["delegate_nodes"] == 0) == off and stats["frames"] > 0
    rel = json.loads((remote_root(pi) / "releases" / second["release"] / "config.json").read_text())
    assert rel["threads"] == 2 and rel["xnnpack"] == xnn
    # Its golden check ran the same kernels as the daemon (XNNPACK off is "other kernels" for the tolerance).
    if off:
        assert second["golden"]["max_raw_allowed"] >= 16 or second["golden"]["raw_unit"] == "score"

    # A record measured on other models is not inherited: the push says so and falls back.
    path.write_text(json.dumps({**record, "model_sha256": "0" * 64}))
    third = _push(capsys, pi, art, "--variant", "auto")
    note = next(s for s in third["steps"] if s.startswith("--variant auto"))
    assert "measured on other models" in note and "using int8" in note
    assert _opt(_daemon(pi)[0], "--xnnpack") is None and _opt(_daemon(pi)[0], "--threads") is None


def test_tune_prints_the_table_and_refuses_emulated_timings(make_pi, deploy_artifacts: Path,  # type: ignore[no-untyped-def]
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    pi = make_pi()
    code, data, _ = run_cli(capsys, "tune", *pi.target.cli_args(), *QUICK)
    assert code == 1 and "has no release yet" in data[0]["summary"] and "push one first" in data[0]["summary"]
    _push(capsys, pi, deploy_artifacts, "--variant", "int8")
    # The same device seen through a session that declares itself emulated (as the arm64 target's sshd does).
    emu = make_pi(remote_dir=pi.target.remote_dir, extra_config=[f"SetEnv {EMULATED_ENV}={EMU}"])
    args = [*emu.target.cli_args(), "--variant", "int8", "--threads", "1", "--xnnpack", "on", *QUICK, "--keep-daemon-running"]
    capsys.readouterr()
    code = main(["tune", *args])
    out = capsys.readouterr().out
    assert code == 1
    assert f"EMULATED ({EMU})" in out and "--allow-emulated" in out and "nothing chosen" in out
    head = next(line for line in out.splitlines() if "invoke p50" in line)
    for col in ("variant", "threads", "XNNPACK", "delegated", "workers", "invoke p99", "total p50", "total p99", "CPU/frame",
                "golden %", "agree float32 %", "gate"):
        assert col in head
    assert any(line.split()[:3] == ["int8", "1", "on"] for line in out.splitlines())
    assert not (remote_root(pi) / "tuning.json").exists()
    code, data, _ = run_cli(capsys, "tune", *args, "--allow-emulated")
    assert code == 0, data
    res = data[0]["result"]
    assert res["emulated"] == EMU and res["report"]["hardware"]["emulated"] == EMU
    assert json.loads((remote_root(pi) / "tuning.json").read_text())["emulated"] == EMU
    assert os.environ.get(EMULATED_ENV) is None  # only the session was emulated, not this test process

    # The daemon restarted after the sweep is not healthy in time: the sweep's table and record are kept, the exit is 1.
    (remote_root(pi) / "tuning.json").unlink()
    code, data, _ = run_cli(capsys, "tune", *pi.target.cli_args(), "--variant", "int8", "--threads", "1", "--xnnpack", "on",
                            *QUICK, "--health-timeout-s", "0")
    assert code == 1, data
    res = data[0]["result"]
    assert [r["variant"] for r in res["report"]["results"]] == ["int8"] and res["choice"]["variant"] == "int8"
    assert "not healthy" in res["restart_problem"] and "deploy status" in res["restart_problem"]
    assert "not healthy" in data[0]["summary"] and "\n" not in data[0]["summary"]
    assert json.loads((remote_root(pi) / "tuning.json").read_text()) == res["record"]


def test_tune_refuses_bad_options_in_one_line(make_pi, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    pi = make_pi()
    code, data, _ = run_cli(capsys, "tune", *pi.target.cli_args(), "--artifacts", str(tmp_path))
    assert code == 2 and "--artifacts" in data["error"] and "\n" not in data["error"]
    with pytest.raises(SystemExit) as e:
        main(["tune", *pi.target.cli_args(), "--threads", "0"])
    assert e.value.code == 2 and "thread counts of at least 1" in capsys.readouterr().err
