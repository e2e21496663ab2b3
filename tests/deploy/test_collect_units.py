"""The pieces of collect / pull-data / keep-uncertain that need no device: daemon options, the unit, the CLI's refusals."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from deploy_helpers import release_dir, run_cli

from deploy.agent import daemon as daemon_cmd
from deploy.agent.collect import camera_options
from deploy.agent.layout import Layout
from deploy.errors import ArtifactsError
from deploy.layout import KeepUncertain, ReleaseConfig

CONFIG = {"variant": "int8", "port": 9123, "source": "picamera2", "runtime": "ai-edge-litert", "collect": True,
          "keep_uncertain": {"margin": 0.15, "every_s": 2.0}, "extra_args": ["--lores", "224x168"]}


def test_the_agent_adds_the_layouts_folders_to_the_daemons_options(tmp_path: Path) -> None:
    lay = Layout(str(tmp_path / "kit"))
    args = daemon_cmd.config_args(CONFIG, lay)
    i = args.index("--data-dir")
    assert args[i + 1] == str(lay.data)
    j = args.index("--keep-uncertain")
    assert args[j + 1] == str(lay.uncertain) and args[j + 2 : j + 6] == ["--margin", "0.15", "--uncertain-every-s", "2.0"]
    assert args[-2:] == ["--lores", "224x168"]  # the release's own extra arguments last: they win
    assert "--data-dir" not in daemon_cmd.config_args({**CONFIG, "collect": False, "keep_uncertain": None}, lay)
    assert daemon_cmd.writable_dirs(CONFIG, lay) == [str(lay.data), str(lay.uncertain)]
    cfg = ReleaseConfig("int8", 1, keep_uncertain=KeepUncertain(0.3)).to_json()
    assert cfg["collect"] is True and cfg["keep_uncertain"] == {"margin": 0.3}
    with pytest.raises(ArtifactsError, match="--margin"):
        KeepUncertain(1.5)


def test_a_one_shot_collection_takes_the_daemons_camera_options() -> None:
    extra = ["--lores", "224x168", "--keep-uncertain", "/x", "--main=1280x720", "--fps", "15", "--threads", "2"]
    assert camera_options(extra) == ["--lores", "224x168", "--main=1280x720", "--fps", "15"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
@pytest.mark.parametrize("dirname", ["kit", "my kit"])
def test_the_unit_lets_the_daemon_write_its_data_and_uncertain_folders(tmp_path: Path, dirname: str) -> None:
    """ProtectHome=read-only and ProtectSystem=strict would make every collected frame fail with EROFS otherwise."""
    from deploy.agent import systemd

    root = tmp_path / dirname
    rid = "abc123abc123"
    release_dir(root, rid, CONFIG)
    lay = Layout(str(root))
    lay.ensure()
    assert lay.data.is_dir() and lay.uncertain.is_dir()
    text = systemd.render(lay, rid, user="root")
    rw = next(line for line in text.splitlines() if line.startswith("ReadWritePaths="))
    if " " in dirname:  # quoted whole, the "-" (ignore while missing) inside the quotes, as systemd.exec reads it
        assert rw == f'ReadWritePaths="{lay.logs}" "-{lay.data}" "-{lay.uncertain}"'
    else:
        assert rw == f"ReadWritePaths={lay.logs} -{lay.data} -{lay.uncertain}"
    exec_line = next(line for line in text.splitlines() if line.startswith("ExecStart="))
    assert "--data-dir" in exec_line and "--keep-uncertain" in exec_line and "--margin 0.15" in exec_line
    unit = tmp_path / "edgekit-test.service"
    unit.write_text(text)
    p = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and unit.name not in p.stderr, p.stderr


@pytest.mark.parametrize(("argv", "msg"), [
    (["collect", "--label", "T-shirt/top", "--count", "3"], "not a valid file name on the Pi"),
    (["collect", "--label", "ok", "--count", "0"], "count must be a whole number from 1"),
    (["collect", "--label", "ok", "--count", "2", "--view-px", "8"], "view_px must be"),
    (["pull-data"], "needs --to DIR"),
    (["pull-data", "--to", "x", "--label", ".x"], "not a valid file name on the Pi"),
    (["push", "--artifacts", "ART", "--keep-uncertain", "--margin", "2"], "--margin must be above 0"),
])
def test_bad_options_are_one_line_before_connecting(argv: list[str], msg: str, capsys: pytest.CaptureFixture[str],
                                                    deploy_artifacts: Path) -> None:
    argv = [str(deploy_artifacts) if a == "ART" else a for a in argv]
    code, data, err = run_cli(capsys, *argv, "--host", "root@127.0.0.1:1")
    assert code == 2 and isinstance(data, dict) and msg in data["error"] and "\n" not in data["error"], (data, err)


@pytest.mark.parametrize("command", ["collect", "pull-data"])
def test_help_explains_the_loop(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`--help` says where frames go and how, and shows the commands of the whole loop, in lines a terminal can show."""
    from deploy.cli import build_parser

    with pytest.raises(SystemExit) as e:
        build_parser().parse_args([command, "--help"])
    out = capsys.readouterr().out
    assert e.value.code == 0
    loop = out[out.index("the loop"):]
    for step in ("deploy collect", "deploy pull-data", "--to photos/", "host run --data folder:photos", "deploy push"):
        assert step in loop, (step, loop)
    assert "/<label>/" in out and "sha256" in out
    assert {"collect": "daemon", "pull-data": ".part"}[command] in out
    assert max(len(line) for line in out[out.index("\n\n"):].splitlines()) <= 110, out  # descriptions are wrapped
