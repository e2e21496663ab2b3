"""The deploy CLI against the whole emulated Pi: doctor, push --supervisor auto, status, bench, logs, restart, rollback.

Bookworm (Python 3.11) must get tflite-runtime with numpy<2; Trixie (Python 3.13) must get
ai-edge-litert with numpy 2, and doctor must say why tflite-runtime is out. On both, ``auto``
must choose systemd (it is PID 1 there), record that choice on the device, and every later
command must use it.
"""

from __future__ import annotations

import json
from pathlib import Path

import guest
from machine import PiVM
from pi_deploy import Deploy

EXPECT = {
    "bookworm": {"python": "3.11.", "runtime": "tflite-runtime", "numpy_major": 1},
    "trixie": {"python": "3.13.", "runtime": "ai-edge-litert", "numpy_major": 2},
}


def test_doctor_picks_the_runtime_for_the_release(pi: PiVM, deploy_to: Deploy) -> None:
    want = EXPECT[pi.image.release]
    rc, data, out = deploy_to("doctor", timeout_s=600)
    assert rc == 0, out
    r = data[0]["result"]
    assert r["machine"] == "aarch64", out
    assert r["python"].startswith(want["python"]), out
    assert pi.image.release in r["os"].lower(), out
    assert r["systemd"] is True, out
    assert r["emulated"], "timings from this machine must be marked EMULATED"
    assert r["runtime"] == want["runtime"], out
    if pi.image.release == "bookworm":
        assert "numpy<2" in r["requirements"], out
    else:
        assert not any(req.startswith("numpy<") for req in r["requirements"]), out
        reason = r["runtime_reason"]
        assert "tflite-runtime" in reason and "no wheel" in reason and "3.13" in reason, reason


def test_push_auto_chooses_systemd(pi: PiVM, deploy_to: Deploy, artifacts_dir: Path) -> None:
    want = EXPECT[pi.image.release]
    rc, data, out = deploy_to.push(artifacts_dir, "--variant", "int8", "--supervisor", "auto")
    assert rc == 0 and data[0]["ok"], out
    unit = guest.daemon_unit(pi)
    props = guest.show(pi, unit, "ActiveState", "SubState", "Type", "UnitFileState", "ExecStart")
    assert (props["ActiveState"], props["SubState"], props["Type"]) == ("active", "running", "notify"), props
    assert props["UnitFileState"] == "enabled", "enabled, so it starts at boot"
    # No pidfile supervisor next to it: systemd is the only supervisor.
    assert pi.ssh("pgrep -u pi -f 'supervise --dir'", check=False).returncode == 1
    # The venv the unit runs has the runtime and numpy the release needs.
    python = props["ExecStart"].split("path=", 1)[1].split(" ", 1)[0].strip(" ;")
    versions = pi.ssh(f"{python} -c 'import numpy, importlib.metadata as m; "
                      f"print(numpy.__version__, m.version(\"{want['runtime']}\"))'").stdout.split()
    assert int(versions[0].split(".")[0]) == want["numpy_major"], versions


def test_status_shows_the_release_running(pi: PiVM, deploy_to: Deploy) -> None:
    want = EXPECT[pi.image.release]
    rc, data, out = deploy_to("status", timeout_s=300)
    assert rc == 0, out
    row = data[0]["result"]
    current = guest.check_release(pi)["current"]
    assert row["running"] and row["release"] == current and row["variant"] == "int8", out
    assert str(row["runtime"]).startswith(want["runtime"]), out
    assert (row["frames"] or 0) > 0, out
    assert row.get("emulated"), out


def test_bench_is_marked_emulated(pi: PiVM, deploy_to: Deploy, tmp_path: Path) -> None:
    rc, data, out = deploy_to("bench", "--variant", "int8", "--runs", "20", "--warmup", "3", "--out", str(tmp_path),
                              timeout_s=900)
    assert rc == 0 and data[0]["ok"], out
    saved = list(tmp_path.glob("*.json"))
    assert len(saved) == 1, out
    doc = json.loads(saved[0].read_text())
    assert "EMULATED" in json.dumps(doc) or doc.get("emulated") or "emulated" in json.dumps(doc), doc
    assert EXPECT[pi.image.release]["runtime"] in saved[0].read_text()


def test_logs_read_journald(pi: PiVM, deploy_to: Deploy) -> None:
    rc, data, out = deploy_to("logs", "-n", "40", timeout_s=300)
    assert rc == 0, out
    daemon_lines = data[0]["result"]["daemon"]
    assert daemon_lines, f"no daemon log lines: {out}"
    unit = guest.daemon_unit(pi)
    journal = "\n".join(guest.journal(pi, unit, since_boot=False, lines=2000))
    # The daemon's own message, as journald recorded it for this unit.
    assert any("serving http://127.0.0.1" in line for line in daemon_lines), daemon_lines
    assert "serving http://127.0.0.1" in journal
    results = data[0]["result"]["results"]
    assert results and all(json.loads(line) for line in results), "the results file's last lines are JSON"


def test_later_commands_use_the_recorded_supervisor(pi: PiVM, deploy_to: Deploy) -> None:
    unit = guest.daemon_unit(pi)
    before = guest.show(pi, unit, "InvocationID", "MainPID")
    rc, _data, out = deploy_to("restart", "--health-timeout-s", "240", timeout_s=900)  # no --supervisor given
    assert rc == 0, out
    after = guest.show(pi, unit, "InvocationID", "MainPID", "ActiveState")
    assert after["InvocationID"] != before["InvocationID"] and after["ActiveState"] == "active", (before, after)
    assert pi.ssh("pgrep -u pi -f 'supervise --dir'", check=False).returncode == 1, "restart went around systemd"


def test_rollback_returns_to_the_previous_release(pi: PiVM, deploy_to: Deploy, artifacts_dir: Path) -> None:
    first = guest.check_release(pi)["current"]
    rc, data, out = deploy_to.push(artifacts_dir, "--variant", "float32")
    assert rc == 0, out
    second = guest.check_release(pi)
    assert second["current"] != first and second["variant"] == "float32" and second["complete"], second
    rc, data, out = deploy_to("rollback", "--health-timeout-s", "240", timeout_s=900)
    assert rc == 0, out
    back = guest.check_release(pi)
    assert back["current"] == first and back["complete"] and back["variant"] == "int8", back
    rc, data, out = deploy_to("status", timeout_s=300)
    row = data[0]["result"]
    assert row["running"] and row["release"] == first and row["variant"] == "int8", out
