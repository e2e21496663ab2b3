"""One lock per device root for a whole push or control command, against a real sshd "Pi"."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
from deploy_helpers import current_id, remote_root, run_cli, run_cli_process

from deploy.connect import ConnectOptions, connect
from deploy.remote import Device
from deploy.targets import parse_host
from deploy.testing import SSHServer

pytestmark = pytest.mark.slow


def _device(pi: SSHServer) -> Device:
    t = pi.target
    target = parse_host(t.spec, identity=t.identity, remote_dir=t.remote_dir, python=t.python, daemon_port=t.daemon_port)
    return Device(connect(target, ConnectOptions(known_hosts=t.known_hosts)), target)


def _supervisors(root: Path) -> list[int]:
    """Processes running `agent … supervise --dir ROOT` for exactly this root."""
    out = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and b"supervise" in argv and str(root).encode() in argv:
            out.append(int(proc.name))
    return out


def test_a_push_or_start_while_another_command_holds_the_lock_fails_fast(pi: SSHServer, deploy_artifacts: Path,
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    push = ["push", *pi.target.cli_args(), "--artifacts", str(deploy_artifacts), "--supervisor", "process"]
    code, data, _ = run_cli(capsys, *push, "--variant", "int8")
    assert code == 0, data
    before = current_id(pi)
    holder = _device(pi)
    try:
        with holder.locked("push of release 0123456789ab"):
            t0 = time.monotonic()
            p = run_cli_process(*push, "--variant", "float32", "--json")
            row = json.loads(p.stdout)[0]
            assert p.returncode == 1 and row["error_type"] == "LockedError" and time.monotonic() - t0 < 30
            assert "is locked: push of release 0123456789ab by " in row["summary"] and "--lock-timeout-s" in row["summary"]
            assert current_id(pi) == before and not list((remote_root(pi) / "staging").iterdir())  # nothing changed
            for cmd in ("start", "stop", "restart", "rollback"):
                code, data, _ = run_cli(capsys, cmd, *pi.target.cli_args())
                assert code == 1 and data[0]["error_type"] == "LockedError", (cmd, data)
            code, data, _ = run_cli(capsys, "status", *pi.target.cli_args())  # reading needs no lock
            assert code == 0 and data[0]["result"]["release"] == before

            # With --lock-timeout-s the push waits, and goes ahead once the holder is done.
            waiting: dict = {}
            waiter = threading.Thread(target=lambda: waiting.update(p=run_cli_process(
                *push, "--variant", "float32", "--lock-timeout-s", "60", "--json", timeout_s=300)))
            waiter.start()
            time.sleep(3.0)
            assert waiter.is_alive() and current_id(pi) == before
        waiter.join(300)
        p = waiting["p"]
        assert p.returncode == 0, p.stdout + p.stderr
        assert current_id(pi) == json.loads(p.stdout)[0]["result"]["release"] != before
    finally:
        holder.close()


def test_two_pushes_at_once_one_wins_one_is_refused(pi: SSHServer, deploy_artifacts: Path) -> None:
    push = ["push", *pi.target.cli_args(), "--artifacts", str(deploy_artifacts), "--supervisor", "process", "--json",
            "--no-progress"]
    results: dict[str, object] = {}

    def one(variant: str) -> None:
        results[variant] = run_cli_process(*push, "--variant", variant, timeout_s=300)

    threads = [threading.Thread(target=one, args=(v,)) for v in ("int8", "float16")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    rows = {v: (p.returncode, json.loads(p.stdout)[0]) for v, p in results.items()}  # type: ignore[attr-defined]
    won = [v for v, (code, row) in rows.items() if code == 0]
    lost = [v for v, (code, row) in rows.items() if code != 0]
    assert len(won) == 1 and len(lost) == 1, rows
    _, row = rows[lost[0]]
    assert row["error_type"] == "LockedError" and "is locked: push of release" in row["summary"]
    assert current_id(pi) == rows[won[0]][1]["result"]["release"]
    time.sleep(1.0)
    assert len(_supervisors(remote_root(pi))) == 1  # never two supervisors fighting over the port


def test_the_lock_is_released_when_the_host_dies(pi: SSHServer, deploy_artifacts: Path) -> None:
    """A push killed mid-way (SIGKILL on the host) leaves no stale lock: the next push goes ahead at once."""
    push = ["push", *pi.target.cli_args(), "--artifacts", str(deploy_artifacts), "--supervisor", "process", "--no-progress"]
    p = run_cli_process(*push, "--variant", "dynamic", env={"EDGEKIT_DEPLOY_FAULT": "after-upload"})
    assert p.returncode == -9
    time.sleep(1.0)  # sshd sees the connection close; the agent gets EOF and exits, and the kernel drops its flock
    p = run_cli_process(*push, "--variant", "dynamic", "--json")
    assert p.returncode == 0, p.stdout + p.stderr
