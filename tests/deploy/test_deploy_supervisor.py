"""The supervisor is decided once and recorded on the device; systemd is never used where it is not meant.

systemd cannot run here (it is not PID 1), so its real behaviour (Type=notify, the watchdog,
journald) is tested on the emulated Pi VM. Here: the record, the refusals, that a failing
``systemctl`` makes ``stop`` fail loudly, and that status and logs read systemd's and journald's
answers, with stand-in ``systemctl``/``journalctl`` on PATH that print what systemd 252 prints.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from deploy_helpers import current_id, remote_root, run_cli

from deploy.agent.build import artifact
from deploy.testing import SSHServer

RID = "0123456789ab"


@pytest.mark.slow
def test_the_recorded_supervisor_is_used_until_a_push_changes_it(pi: SSHServer, deploy_artifacts: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    # systemd is refused on the test sshd (EDGEKIT_NO_SYSTEMD in its sessions), before anything is uploaded.
    code, data, _ = run_cli(capsys, "push", *pi.target.cli_args(), "--artifacts", str(deploy_artifacts), "--supervisor", "systemd")
    assert code == 1 and "EDGEKIT_NO_SYSTEMD=1 is set" in data[0]["summary"] and current_id(pi) is None
    assert not (remote_root(pi) / "supervisor.json").exists()

    code, data, _ = run_cli(capsys, "push", *pi.target.cli_args(), "--artifacts", str(deploy_artifacts))  # auto
    assert code == 0, data
    rec = json.loads((remote_root(pi) / "supervisor.json").read_text())
    assert rec["supervisor"] == "process" and rec["requested"] == "auto" and "EDGEKIT_NO_SYSTEMD" in rec["reason"]
    assert rec["release"] == data[0]["result"]["release"] and data[0]["result"]["supervisor"] == "process"
    assert any(s.startswith("supervisor: process (") and "recorded on the device" in s for s in data[0]["result"]["steps"])

    # Later commands use the record; an explicit other supervisor is refused, saying how to change it.
    code, data, _ = run_cli(capsys, "stop", *pi.target.cli_args(), "--supervisor", "systemd")
    assert code == 1 and "supervised by process" in data[0]["summary"] and "push again with --supervisor systemd" in data[0]["summary"]
    code, data, _ = run_cli(capsys, "status", *pi.target.cli_args())
    assert data[0]["result"]["running"] and data[0]["result"]["supervisor"] == "process"
    code, data, _ = run_cli(capsys, "stop", *pi.target.cli_args())
    assert code == 0 and data[0]["summary"] == "stopped (process)"
    code, data, _ = run_cli(capsys, "start", *pi.target.cli_args())
    assert code == 0 and "(process); healthy" in data[0]["summary"]
    code, data, _ = run_cli(capsys, "logs", *pi.target.cli_args(), "-n", "3")
    assert code == 0 and data[0]["result"]["source"] == "files" and data[0]["result"]["follow"][0] == "tail"

    # A push with --supervisor process (explicit) records that it was asked for.
    code, data, _ = run_cli(capsys, "push", *pi.target.cli_args(), "--artifacts", str(deploy_artifacts), "--variant", "float16",
                            "--supervisor", "process")
    assert code == 0, data
    rec = json.loads((remote_root(pi) / "supervisor.json").read_text())
    assert rec["requested"] == "process" and rec["release"] == data[0]["result"]["release"]


def _agent(tmp: Path) -> Path:
    pyz = tmp / artifact().filename
    pyz.write_bytes(artifact().data)
    return pyz


def _stand_in_systemctl(bin_dir: Path, stop_rc: int, active_after_stop: bool) -> Path:
    """A `systemctl` that answers `show` like systemd 252 and fails `stop` as a denied call does."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    log = bin_dir / "calls.log"
    script = bin_dir / "systemctl"
    state = "active" if active_after_stop else "inactive"
    script.write_text(f"""#!/bin/sh
echo "$@" >> {log}
case "$1" in
  show) if [ -f {bin_dir}/stopped ]; then s={state}; else s=active; fi
        printf 'LoadState=loaded\\nActiveState=%s\\nSubState=running\\nNRestarts=0\\nMainPID=0\\nResult=success\\n' "$s";;
  stop) if [ {stop_rc} != 0 ]; then echo "Failed to stop $2: Access denied" >&2; exit {stop_rc}; fi; touch {bin_dir}/stopped;;
  *) exit 0;;
esac
""")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    for tool in ("journalctl", "sudo"):  # journald is not running here either; sudo is not needed as root
        t = bin_dir / tool
        t.write_text("#!/bin/sh\nexit 0\n" if tool == "journalctl" else '#!/bin/sh\n[ "$1" = -n ] && shift; exec "$@"\n')
        t.chmod(0o755)
    return log


@pytest.mark.parametrize(("stop_rc", "active_after", "want"), [
    (1, False, "Access denied"),                          # systemctl fails
    (0, True, "systemd reports it active/running"),       # systemctl says yes, systemd still runs it
    (0, False, None),                                     # a real stop
])
def test_systemd_stop_fails_loudly(tmp_path: Path, stop_rc: int, active_after: bool, want: str | None) -> None:
    root = tmp_path / "kit"
    root.mkdir()
    (root / "supervisor.json").write_text(json.dumps({"supervisor": "systemd", "unit": "edgekit-x.service",
                                                      "requested": "systemd", "reason": "test", "release": RID}))
    log = _stand_in_systemctl(tmp_path / "bin", stop_rc, active_after)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "EDGEKIT_"))}
    env["PATH"] = f"{tmp_path / 'bin'}:{env['PATH']}"
    p = subprocess.run([sys.executable, "-E", "-s", str(_agent(tmp_path)), "control", "stop", "--dir", str(root)],
                       capture_output=True, text=True, timeout=60, env=env)
    answer = json.loads(p.stdout.splitlines()[-1])
    calls = log.read_text()
    assert "stop edgekit-" in calls
    if want is None:
        assert answer["ok"] and answer["was_running"] and "disable edgekit-" in calls, answer
    else:
        assert not answer["ok"] and answer["kind"] == "supervisor" and want in answer["error"], answer
        assert p.returncode == 1


def test_systemd_is_refused_where_it_is_not_meant(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "EDGEKIT_"))}
    root = tmp_path / "kit"
    for extra, want in (({"EDGEKIT_NO_SYSTEMD": "1"}, "EDGEKIT_NO_SYSTEMD=1 is set"),
                        ({}, "systemd is not running on this device" if not Path("/run/systemd/system").is_dir() else None)):
        if want is None:
            continue
        p = subprocess.run([sys.executable, "-E", "-s", str(_agent(tmp_path)), "prepare", "--dir", str(root), "--id", RID,
                            "--supervisor", "systemd"], capture_output=True, text=True, timeout=60, env={**env, **extra})
        answer = json.loads(p.stdout.splitlines()[-1])
        assert not answer["ok"] and answer["kind"] == "supervisor" and want in answer["error"], answer
        p = subprocess.run([sys.executable, "-E", "-s", str(_agent(tmp_path)), "prepare", "--dir", str(root), "--id", RID],
                           capture_output=True, text=True, timeout=60, env={**env, **extra})
        answer = json.loads(p.stdout.splitlines()[-1])
        assert answer["ok"] and answer["supervisor"] == "process", answer


def test_status_and_logs_under_systemd_are_systemds_own(tmp_path: Path) -> None:
    """With systemd recorded, status is `systemctl show` (MainPID's release from its cwd) and logs are journald's."""
    root = tmp_path / "kit"
    rel = root / "releases" / RID
    rel.mkdir(parents=True)
    (rel / "config.json").write_text(json.dumps({"variant": "int8", "port": 1, "source": "synthetic"}))
    (rel / ".verified").write_text("{}")
    (root / "current").symlink_to(f"releases/{RID}")
    (root / "supervisor.json").write_text(json.dumps({"supervisor": "systemd", "unit": "x", "requested": "auto",
                                                      "reason": "test", "release": RID}))
    daemon = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], cwd=str(root / "current"))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "systemctl").write_text(
        "#!/bin/sh\n[ \"$1\" = show ] && printf 'LoadState=loaded\\nActiveState=active\\nSubState=running\\n"
        f"NRestarts=2\\nMainPID={daemon.pid}\\nResult=success\\nUnitFileState=enabled\\n'\n")
    (bin_dir / "journalctl").write_text("#!/bin/sh\necho \"$@\" > " + str(bin_dir / "journal.args") +
                                        "\nprintf '2025-11-02T10:00:00+0000 pi python[42]: one\\n2025-11-02T10:00:01+0000 pi python[42]: two\\n'\n")
    for t in bin_dir.iterdir():
        t.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "EDGEKIT_"))}
    env["PATH"] = f"{bin_dir}:{env['PATH']}"
    pyz = _agent(tmp_path)
    try:
        def run(*argv: str) -> dict:
            p = subprocess.run([sys.executable, "-E", "-s", str(pyz), *argv, "--dir", str(root)], capture_output=True,
                               text=True, timeout=60, env=env)
            return json.loads(p.stdout.splitlines()[-1])

        st = run("status")
        assert st["ok"] and st["supervisor"] == "systemd" and st["running"] and st["daemon_pid"] == daemon.pid
        assert st["release"] == RID and st["restarts"] == 2 and st["systemd"]["SubState"] == "running"
        logs = run("logs", "--lines", "2")
        assert logs["source"] == "journald" and logs["daemon"][-1].endswith("python[42]: two")
        assert (bin_dir / "journal.args").read_text().split()[:2] == ["-u", logs["follow"][2]]
        assert "-o short-iso" in (bin_dir / "journal.args").read_text() and logs["follow"][:2] == ["journalctl", "-u"]
        assert "ActiveState=active" in logs["supervisor"]
    finally:
        daemon.kill()
        daemon.wait()
