"""End to end against a real sshd "Pi": push, status, bench, a second model, rollback, re-push, failures."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path

import pytest
from deploy_helpers import assert_current_complete, current_id, remote_root, run_cli

from deploy.cli import main
from deploy.testing import SSHServer

pytestmark = pytest.mark.slow


def _push(capsys: pytest.CaptureFixture[str], pi: SSHServer, art: Path, *extra: str) -> tuple[int, dict]:
    code, data, err = run_cli(capsys, "push", *pi.target.cli_args(), "--artifacts", str(art), "--supervisor", "process", *extra)
    assert isinstance(data, list) and len(data) == 1, (data, err)
    return code, data[0]


def _status(capsys: pytest.CaptureFixture[str], pi: SSHServer) -> dict:
    code, data, _ = run_cli(capsys, "status", *pi.target.cli_args())
    return {"code": code, **data[0]}


def test_push_status_bench_second_model_rollback(pi: SSHServer, deploy_artifacts: Path, capsys: pytest.CaptureFixture[str],
                                                 tmp_path: Path) -> None:
    code, row = _push(capsys, pi, deploy_artifacts, "--variant", "int8")
    assert code == 0, row
    first = row["result"]
    assert first["action"] == "deployed" and first["uploaded_bytes"] > 0 and first["frames"] > 0
    golden = first["golden"]
    assert golden["count"] > 0 and golden["top1_agree"] >= golden["top1_required"]
    assert golden["max_raw_diff"] <= golden["max_raw_allowed"] and golden["runtime"] == first["runtime"]
    assert any("golden top-1" in s and "allowed" in s for s in first["steps"])  # both figures and limits printed
    # Files, dirs, marker, rename, current, history, supervisor.json: the agent reported its fsyncs.
    assert first["fsync_count"] > len(first["steps"]) and first["fsync_s"] > 0
    assert current_id(pi) == first["release"] == assert_current_complete(pi)
    # The daemon runs the code shipped in the release, with the venv's interpreter.
    daemon_pid = json.loads((remote_root(pi) / "run" / "daemon.json").read_text())["pid"]
    cmdline = Path(f"/proc/{daemon_pid}/cmdline").read_bytes().split(b"\0")
    # The release's own venv (through its link), and the release's own model.
    assert cmdline[0].decode() == str(remote_root(pi) / "releases" / first["release"] / "venv" / "bin" / "python")
    assert os.readlink(remote_root(pi) / "releases" / first["release"] / "venv").startswith("../../venvs/")
    assert f"releases/{first['release']}/model/manifest.json".encode() in b" ".join(cmdline)
    assert json.loads((remote_root(pi) / "supervisor.json").read_text())["supervisor"] == "process"

    st = _status(capsys, pi)
    assert st["code"] == 0 and st["ok"]
    s = st["result"]
    assert s["release"] == first["release"] and s["running"] and s["variant"] == "int8"
    assert s["frames"] > 0 and s["fps"] > 0
    for stage in ("invoke", "total"):
        lat = s["latency_ms"][stage]
        assert 0 < lat["p50_ms"] <= lat["p90_ms"] <= lat["p99_ms"]
    assert s["latency_ms"]["total"]["p50_ms"] >= s["latency_ms"]["invoke"]["p50_ms"]

    out = tmp_path / "bench"
    capsys.readouterr()
    code = main(["bench", *pi.target.cli_args(), "--artifacts", str(deploy_artifacts), "--runs", "20", "--warmup", "2",
                 "--out", str(out)])
    table = capsys.readouterr().out
    assert code == 0, table
    (saved,) = out.glob("*.json")
    assert saved.name.startswith(f"127.0.0.1_{pi.target.port}-") and str(saved) in table
    report = json.loads(saved.read_text())["report"]
    assert {r["variant"] for r in report["results"]} == {"float32", "dynamic", "float16", "int8"}
    # The table compares the variants side by side with the figures from the saved JSON.
    int8 = next(r for r in report["results"] if r["variant"] == "int8")
    assert "invoke p50 ms" in table
    int8_line = next(line for line in table.splitlines() if line.startswith("int8 "))
    assert f"{int8['stages_ms']['invoke']['p50_ms']:.3f}" in int8_line

    code, row = _push(capsys, pi, deploy_artifacts, "--variant", "float32")
    assert code == 0, row
    second = row["result"]
    assert second["release"] != first["release"] and second["previous"] == first["release"]
    assert current_id(pi) == second["release"]
    assert _status(capsys, pi)["result"]["variant"] == "float32"

    code, data, _ = run_cli(capsys, "releases", *pi.target.cli_args())
    rels = data[0]["result"]
    assert code == 0 and rels["current"] == second["release"]
    assert {r["id"] for r in rels["releases"]} == {first["release"], second["release"]}

    code, data, _ = run_cli(capsys, "rollback", *pi.target.cli_args())
    assert code == 0, data
    assert data[0]["result"]["to"] == first["release"]
    assert current_id(pi) == first["release"]
    s = _status(capsys, pi)["result"]
    assert s["release"] == first["release"] and s["variant"] == "int8" and s["running"]


def test_repush_uploads_nothing(pi: SSHServer, deploy_artifacts: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, row = _push(capsys, pi, deploy_artifacts, "--variant", "int8")
    assert code == 0, row
    rid = row["result"]["release"]
    rel = remote_root(pi) / "releases" / rid
    mtimes = {p: p.stat().st_mtime_ns for p in rel.rglob("*") if p.is_file()}
    pid = json.loads((remote_root(pi) / "run" / "state.json").read_text())["daemon_pid"]
    code, row = _push(capsys, pi, deploy_artifacts, "--variant", "int8")
    assert code == 0
    assert row["result"]["action"] == "unchanged" and row["result"]["uploaded_bytes"] == 0
    assert "uploaded nothing" in row["summary"]
    assert {p: p.stat().st_mtime_ns for p in rel.rglob("*") if p.is_file()} == mtimes
    # Nothing restarted either.
    assert json.loads((remote_root(pi) / "run" / "state.json").read_text())["daemon_pid"] == pid


def test_corrupted_upload_is_refused_on_the_device(pi: SSHServer, deploy_artifacts: Path, capsys: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    _push(capsys, pi, deploy_artifacts, "--variant", "int8")
    before = current_id(pi)
    # The host's file is fine; the bytes on the device get damaged after the upload.
    monkeypatch.setenv("EDGEKIT_DEPLOY_FAULT", "after-upload=corrupt")
    code, row = _push(capsys, pi, deploy_artifacts, "--variant", "float16")
    assert code == 1 and not row["ok"] and row["error_type"] == "VerifyError"
    assert "sha256" in row["summary"] and "model_float16.tflite" in row["summary"]
    assert current_id(pi) == before == assert_current_complete(pi)
    assert _status(capsys, pi)["result"]["release"] == before


def test_incompatible_model_is_refused_on_the_device(pi: SSHServer, deploy_artifacts: Path, capsys: pytest.CaptureFixture[str],
                                                     tmp_path: Path) -> None:
    _push(capsys, pi, deploy_artifacts, "--variant", "int8")
    before = current_id(pi)
    # A consistent-looking folder whose "int8" model is really the float32 one: hashes match, the model does not.
    art = tmp_path / "art"
    shutil.copytree(deploy_artifacts, art)
    (art / "model_int8.tflite").write_bytes((art / "model_float32.tflite").read_bytes())
    m = json.loads((art / "manifest.json").read_text())
    m["variants"]["int8"]["sha256"] = m["variants"]["float32"]["sha256"]
    m["variants"]["int8"]["bytes"] = m["variants"]["float32"]["bytes"]
    (art / "manifest.json").write_text(json.dumps(m))
    code, row = _push(capsys, pi, art, "--variant", "int8")
    assert code == 1 and row["error_type"] == "VerifyError"
    assert "failed its check on the device" in row["summary"] and "manifest says" in row["summary"]
    assert current_id(pi) == before == assert_current_complete(pi)


def test_unhealthy_release_is_rolled_back(pi: SSHServer, deploy_artifacts: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _push(capsys, pi, deploy_artifacts, "--variant", "int8")
    before = current_id(pi)
    code, row = _push(capsys, pi, deploy_artifacts, "--variant", "float32", "--source", "folder:/nonexistent",
                      "--health-timeout-s", "5")
    assert code == 1 and row["error_type"] == "HealthError"
    assert f"rolled back to {before}, which is running again" in row["summary"]
    assert current_id(pi) == before
    s = _status(capsys, pi)
    assert s["ok"] and s["result"]["release"] == before and s["result"]["frames"] > 0


def test_supervisor_restarts_a_crashed_daemon_and_stops_cleanly(pi: SSHServer, deploy_artifacts: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    _push(capsys, pi, deploy_artifacts, "--variant", "int8")
    state_file = remote_root(pi) / "run" / "state.json"
    state = json.loads(state_file.read_text())
    old_pid, restarts = state["daemon_pid"], state["restarts"]
    os.kill(old_pid, signal.SIGKILL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        st = json.loads(state_file.read_text())
        if st.get("daemon_pid") not in (None, old_pid):
            break
        time.sleep(0.2)
    assert st["restarts"] == restarts + 1 and st["daemon_pid"] != old_pid
    code, data, _ = run_cli(capsys, "restart", *pi.target.cli_args())
    assert code == 0 and "healthy" in data[0]["summary"]

    sup = json.loads((remote_root(pi) / "run" / "supervisor.json").read_text())["pid"]
    daemon = json.loads(state_file.read_text())["daemon_pid"]
    code, data, _ = run_cli(capsys, "stop", *pi.target.cli_args())
    assert code == 0
    for pid in (sup, daemon):
        assert not Path(f"/proc/{pid}").exists() or Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()[0] == "Z"
    s = _status(capsys, pi)
    assert s["code"] == 1 and not s["result"]["running"]
    code, data, _ = run_cli(capsys, "start", *pi.target.cli_args())
    assert code == 0 and "healthy" in data[0]["summary"]
    code, data, _ = run_cli(capsys, "logs", *pi.target.cli_args(), "-n", "5")
    assert code == 0 and len(data[0]["result"]["results"]) == 5
    assert json.loads(data[0]["result"]["results"][-1])["top"]


def test_bench_benchmarks_the_current_release_and_marks_emulated_hosts(pi: SSHServer, deploy_artifacts: Path,
                                                                       capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, row = _push(capsys, pi, deploy_artifacts, "--variant", "int8")
    assert code == 0, row
    rid = row["result"]["release"]
    out = tmp_path / "bench"
    # The default (--variant all) benchmarks what the release holds: its one model, not all four.
    code, data, err = run_cli(capsys, "bench", *pi.target.cli_args(), "--runs", "10", "--warmup", "1", "--out", str(out))
    assert code == 0, (data, err)
    assert [r["variant"] for r in data[0]["report"]["results"]] == ["int8"]
    assert data[0]["emulated"] is None and "EMULATED" not in data[0]["summary"]
    # A variant the release does not hold: one clear line naming what is there and how to get it there.
    code, data, _ = run_cli(capsys, "bench", *pi.target.cli_args(), "--variant", "float32", "--out", str(out))
    assert code == 1 and not data[0]["ok"]
    msg = data[0]["summary"]
    assert f"release {rid} (current) holds int8" in msg and "push --artifacts DIR --variant float32" in msg, msg
    assert "\n" not in msg and "Traceback" not in msg

    # The same device reached through an sshd whose sessions say they are emulated (as the arm64 target's do).
    emu = SSHServer.start(tmp_path / "emu", host_key=pi.host_key, remote_dir=pi.target.remote_dir,
                          extra_config=["SetEnv EDGEKIT_EMULATED=qemu-user-aarch64"])
    try:
        t = emu.target
        args = ["--host", t.spec, "--identity", str(t.identity), "--known-hosts", str(t.known_hosts),
                "--remote-dir", t.remote_dir, "--python", t.python]
        capsys.readouterr()
        code = main(["status", *args])
        text = capsys.readouterr().out
        assert code == 0, text
        host_line = next(line for line in text.splitlines() if line.startswith(f"127.0.0.1:{t.port} "))
        assert "EMULATED (qemu-user-aarch64)" in host_line and "not Pi latency" in text
        code, data, _ = run_cli(capsys, "status", *args)
        assert data[0]["result"]["emulated"] == "qemu-user-aarch64" and "EMULATED" in data[0]["summary"]
        code, data, _ = run_cli(capsys, "doctor", *args)
        assert data[0]["result"]["emulated"] == "qemu-user-aarch64" and "EMULATED (qemu-user-aarch64)" in data[0]["summary"]

        capsys.readouterr()
        code = main(["bench", *args, "--runs", "10", "--warmup", "1", "--out", str(out)])
        text = capsys.readouterr().out
        assert code == 0, text
        int8_line = next(line for line in text.splitlines() if line.startswith("int8 "))
        assert "EMULATED (qemu-user-aarch64)" in int8_line and "not Pi latency" in text
        saved = max(out.glob(f"127.0.0.1_{t.port}-*.json"))
        report = json.loads(saved.read_text())["report"]
        # The device benchmark itself recorded it, from its own environment.
        assert report["results"][0]["hardware"]["emulated"] == "qemu-user-aarch64"
    finally:
        emu.stop()
