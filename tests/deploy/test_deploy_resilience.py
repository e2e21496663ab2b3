"""Against real sshd "Pis": host-key pinning, pushes killed at named points, several hosts at once."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Optional

import pytest
from deploy_helpers import (
    assert_current_complete,
    current_id,
    remote_root,
    run_cli,
    run_cli_process,
)

from deploy.testing import SSHServer, free_port

pytestmark = pytest.mark.slow


def _args_without(pi: SSHServer, *drop: str) -> list[str]:
    args = pi.target.cli_args()
    out = []
    skip = False
    for a in args:
        if skip:
            skip = False
            continue
        if a in drop:
            skip = True
            continue
        out.append(a)
    return out


def test_unknown_and_changed_host_keys_are_refused_before_any_command(make_pi: Callable[..., SSHServer], tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    pi = make_pi()
    known = tmp_path / "known_hosts"
    known.write_text("")
    args = [*_args_without(pi, "--known-hosts"), "--known-hosts", str(known)]
    code, data, _ = run_cli(capsys, "doctor", *args)
    assert code == 1 and data[0]["error_type"] == "HostKeyError"
    assert "is not in" in data[0]["summary"] and "--trust-new" in data[0]["summary"]
    assert not remote_root(pi).exists()  # nothing ran: not even the agent upload

    code, data, _ = run_cli(capsys, "doctor", *args, "--trust-new")
    assert code == 0, data
    assert f"[127.0.0.1]:{pi.target.port} ssh-ed25519 " in known.read_text()
    assert remote_root(pi).exists()
    assert data[0]["result"]["runtime"] in ("ai-edge-litert", "tflite-runtime")
    code, data, _ = run_cli(capsys, "doctor", *args)  # now pinned: no flag needed
    assert code == 0

    # The same address comes back with another host key (a reinstalled device, or someone in the middle).
    port = pi.target.port
    pi.stop()
    other_dir = tmp_path / "never-created"
    imposter = make_pi(port=port, remote_dir=str(other_dir))
    args2 = [*_args_without(imposter, "--known-hosts"), "--known-hosts", str(known)]
    for extra in ((), ("--trust-new",)):
        code, data, _ = run_cli(capsys, "doctor", *args2, *extra)
        assert code == 1 and data[0]["error_type"] == "HostKeyError"
        assert "HOST KEY CHANGED" in data[0]["summary"] and "ssh-keygen -R" in data[0]["summary"]
    code, data, _ = run_cli(capsys, "push", *args2, "--artifacts", "/nonexistent")
    assert code == 2  # bad artifacts are refused before connecting at all
    assert not other_dir.exists()
    assert "Accepted publickey" not in imposter.log.read_text()  # refused during key exchange, before login
    assert known.read_text().count(f"[127.0.0.1]:{port}") == 1  # the pinned key was not replaced


def test_push_killed_at_each_point_then_repeated(make_pi: Callable[..., SSHServer], deploy_artifacts: Path) -> None:
    pi = make_pi()
    base = [*pi.target.cli_args(), "--artifacts", str(deploy_artifacts), "--no-progress"]
    seen: list[tuple[str, str, Optional[str]]] = []
    plan: list[tuple[str, Optional[str]]] = [
        ("int8", "mid-upload"), ("int8", "after-switch"), ("int8", None),
        ("float32", "after-upload"), ("float32", "after-verify"), ("float32", "after-restart"), ("float32", None),
    ]
    for variant, point in plan:
        if point is None:  # the next plain push finishes the job
            p = run_cli_process("push", *base, "--variant", variant, "--json")
            assert p.returncode == 0, p.stdout + p.stderr
            row = json.loads(p.stdout)[0]
            assert current_id(pi) == row["result"]["release"] == assert_current_complete(pi)
            st = run_cli_process("status", *pi.target.cli_args(), "--json")
            s = json.loads(st.stdout)[0]["result"]
            assert st.returncode == 0 and s["release"] == row["result"]["release"] and s["frames"] > 0
            continue
        before = current_id(pi)
        p = run_cli_process("push", *base, "--variant", variant, env={"EDGEKIT_DEPLOY_FAULT": point})
        assert p.returncode == -9, f"{point}: {p.returncode} {p.stderr[-500:]}"
        now = assert_current_complete(pi)  # never a half release behind `current`
        if point in ("mid-upload", "after-upload", "after-verify"):
            assert now == before
        seen.append((variant, point, now))
    assert seen[1][2] is not None and seen[1][2] != seen[0][2]  # after-switch: current moved, complete


def test_two_hosts_at_once(make_pi: Callable[..., SSHServer], deploy_artifacts: Path, tmp_path: Path,
                           capsys: pytest.CaptureFixture[str]) -> None:
    pis = [make_pi(), make_pi()]
    known = tmp_path / "known_hosts"
    known.write_text("".join(p.target.known_hosts.read_text() for p in pis))
    inv = tmp_path / "pis.toml"

    def entry(name: str, spec: str, pi: SSHServer) -> str:
        t = pi.target
        return (f'[hosts.{name}]\nhost = "{spec}"\nidentity = "{t.identity}"\nremote_dir = "{t.remote_dir}"\n'
                f'daemon_port = {t.daemon_port}\npython = "{t.python}"\n\n')

    inv.write_text(entry("pi_a", pis[0].target.spec, pis[0]) + entry("pi_b", pis[1].target.spec, pis[1]))
    common = ["--inventory", str(inv), "--known-hosts", str(known)]
    code, data, _ = run_cli(capsys, "push", *common, "--artifacts", str(deploy_artifacts), "--variant", "int8")
    assert code == 0, data
    assert [r["host"] for r in data] == ["pi_a", "pi_b"] and all(r["ok"] for r in data)
    assert data[0]["result"]["release"] != data[1]["result"]["release"]  # each has its own daemon port in its config
    for pi, row in zip(pis, data):
        assert current_id(pi) == row["result"]["release"]

    # A third host that is down: its row fails, the others still report, the exit code says so.
    dead = tmp_path / "dead.toml"
    dead.write_text(inv.read_text() + f'[hosts.pi_dead]\nhost = "root@127.0.0.1:{free_port()}"\n')
    code, data, _ = run_cli(capsys, "status", "--inventory", str(dead), "--known-hosts", str(known), "--connect-timeout-s", "3")
    assert code == 1
    assert [(r["host"], r["ok"]) for r in data] == [("pi_a", True), ("pi_b", True), ("pi_dead", False)]
    assert "connection refused" in data[2]["summary"]
    assert all(r["result"]["frames"] > 0 and r["result"]["latency_ms"]["invoke"]["p50_ms"] > 0 for r in data[:2])


def test_health_checks_bypass_a_proxy_set_on_the_device(make_pi: Callable[..., SSHServer], deploy_artifacts: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """The device's sessions have http_proxy pointing at a dead port: loopback health checks must not use it."""
    dead = f"http://127.0.0.1:{free_port()}"
    pi = make_pi(extra_config=[f"SetEnv http_proxy={dead} HTTP_PROXY={dead} https_proxy={dead} all_proxy={dead}"])
    code, data, _ = run_cli(capsys, "push", *pi.target.cli_args(), "--artifacts", str(deploy_artifacts),
                            "--supervisor", "process", "--health-timeout-s", "20")
    assert code == 0, data
    assert data[0]["result"]["frames"] > 0
    code, data, _ = run_cli(capsys, "status", *pi.target.cli_args())
    assert code == 0 and data[0]["result"]["frames"] > 0 and data[0]["result"]["error"] is None


def test_a_dropped_connection_during_rollback_keeps_the_first_cause(make_pi: Callable[..., SSHServer],
                                                                    deploy_artifacts: Path) -> None:
    pi = make_pi()
    base = [*pi.target.cli_args(), "--artifacts", str(deploy_artifacts), "--supervisor", "process", "--no-progress", "--json"]
    p = run_cli_process("push", *base, "--variant", "int8")
    assert p.returncode == 0, p.stdout + p.stderr
    good = current_id(pi)
    # A release that cannot become healthy, and the SSH connection lost as the rollback starts.
    p = run_cli_process("push", *base, "--variant", "float32", "--source", "folder:/nonexistent", "--health-timeout-s", "4",
                        env={"EDGEKIT_DEPLOY_FAULT": "rollback=drop"})
    row = json.loads(p.stdout)[0]
    msg = row["summary"]
    assert p.returncode == 1 and row["error_type"] == "HealthError", row
    first = msg.index("was not healthy within 4 s")  # the first cause comes first
    assert msg.startswith("release ") and " failed after the switch: the daemon of release " in msg
    rollback = msg.index("Rollback: it did not finish (nothing done)")
    assert first < rollback and "lost the connection" in msg[rollback:] and "deploy rollback" in msg[rollback:]
    assert "\n" not in msg and "Traceback" not in p.stdout + p.stderr
    # The device is left on the failed release (the rollback never ran); `deploy rollback` finishes the job.
    assert current_id(pi) != good
    p = run_cli_process("rollback", *pi.target.cli_args(), "--json")
    assert p.returncode == 0, p.stdout
    assert current_id(pi) == good == assert_current_complete(pi)


def test_wait_checks_the_release_it_was_given(make_pi: Callable[..., SSHServer], deploy_artifacts: Path) -> None:
    """`wait --id X` when current is Y fails at once ("superseded"), instead of waiting on (or rolling back) Y."""
    pi = make_pi()
    p = run_cli_process("push", *pi.target.cli_args(), "--artifacts", str(deploy_artifacts), "--supervisor", "process",
                        "--json")
    assert p.returncode == 0, p.stdout
    rid = json.loads(p.stdout)[0]["result"]["release"]
    from deploy.connect import ConnectOptions, connect
    from deploy.errors import HealthError
    from deploy.remote import Device
    from deploy.supervisor import wait_healthy
    from deploy.targets import parse_host

    t = pi.target
    target = parse_host(t.spec, identity=t.identity, remote_dir=t.remote_dir, python=t.python, daemon_port=t.daemon_port)
    device = Device(connect(target, ConnectOptions(known_hosts=t.known_hosts)), target)
    try:
        assert wait_healthy(device, rid, 20)["release"] == rid
        other = "ab" * 6
        with pytest.raises(HealthError, match=f"current is {rid}, not {other}") as e:
            wait_healthy(device, other, 20)
        assert e.value.answer["kind"] == "superseded"
    finally:
        device.close()


def test_a_dropped_session_lets_go_of_its_channel_files(make_pi: Callable[..., SSHServer], monkeypatch: pytest.MonkeyPatch) -> None:
    """After the connection drops, the agent session's paramiko files are closed and freed at once.

    Left on the Device, they die later in a garbage-collected cycle, where paramiko's ``__del__`` can find its own
    buffer finalised first and print a ValueError traceback on stderr (seen once in CI after `rollback=drop`)."""
    import gc
    import sys
    import weakref

    from deploy.connect import ConnectOptions, connect
    from deploy.errors import RemoteError
    from deploy.remote import Device
    from deploy.targets import parse_host

    pi = make_pi()
    t = pi.target
    target = parse_host(t.spec, identity=t.identity, remote_dir=t.remote_dir, python=t.python, daemon_port=t.daemon_port)
    device = Device(connect(target, ConnectOptions(known_hosts=t.known_hosts)), target)
    unraisable: list[str] = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: unraisable.append(f"{u.exc_type.__name__}: {u.exc_value}"))
    try:
        device.agent("status", "--dir", device.root, check=False)
        files = [weakref.ref(device._stdin), weakref.ref(device._stdout)]
        device.conn.client.get_transport().close()  # the network goes, as deploy.push.fault's `drop` does
        with pytest.raises(RemoteError, match="lost the connection"):
            device.agent("status", "--dir", device.root, check=False)
        assert [f() for f in files] == [None, None], "the dead session's files are still held"
    finally:
        device.close()
    del device
    gc.collect()
    assert unraisable == []


def test_a_device_that_never_sends_its_banner_is_one_line_with_a_hint(tmp_path: Path) -> None:
    """sshd too busy to greet (a loaded or emulated Pi): paramiko's thread must not print its traceback; the hint names the option."""
    import socket
    import subprocess
    import sys
    import threading

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:  # accept and say nothing, like an sshd that has not forked yet
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(srv.accept()[0])
            except OSError:
                continue

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    try:
        p = subprocess.run([sys.executable, "-m", "deploy", "status", "--host", f"pi@127.0.0.1:{srv.getsockname()[1]}",
                            "--known-hosts", str(tmp_path / "known_hosts"), "--connect-timeout-s", "1"],
                           capture_output=True, text=True, timeout=120)
    finally:
        stop.set()
        t.join(5)
        for c in held:
            c.close()
        srv.close()
    assert p.returncode != 0
    assert "Traceback" not in p.stderr and "Traceback" not in p.stdout, p.stderr
    assert "banner" in p.stdout and "--connect-timeout-s" in p.stdout, p.stdout
