"""collect and pull-data against a real sshd "Pi": through the running daemon, one-shot when none runs, verified copies.

The device's camera is the fake one showing the table-top scene (``fake-picamera2:scene=FILE``),
which, like a Pi camera, opens in one process at a time.
"""

from __future__ import annotations

import hashlib
import io
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from deploy_helpers import remote_root, run_cli, run_cli_process
from PIL import Image

from deploy.testing import SSHServer
from device.framestore import read_index

pytestmark = pytest.mark.slow


def _scene(path: Path, obj: str, seed: int) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"object": obj, "seed": seed}))
    tmp.replace(path)


def _ok(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, Any]:
    code, data, err = run_cli(capsys, *argv)
    assert code == 0 and isinstance(data, list) and data[0]["ok"], (data, err)
    return dict(data[0])


@pytest.fixture(scope="module")
def loop_pi(tmp_path_factory: pytest.TempPathFactory, deploy_artifacts: Path) -> Iterator[tuple[SSHServer, Path]]:
    """A sshd "Pi" running the Fashion-MNIST release on the fake camera's scene."""
    from deploy.cli import main

    work = tmp_path_factory.mktemp("loop-pi")
    scene = work / "scene.json"
    _scene(scene, "ball", 1)
    s = SSHServer.start(work)
    try:
        code = main(["push", *s.target.cli_args(), "--artifacts", str(deploy_artifacts), "--supervisor", "process",
                     "--source", f"fake-picamera2:scene={scene}", "--no-progress", "--json"])
        assert code == 0
        yield s, scene
    finally:
        s.stop_daemon()
        s.stop()


def _records(folder: Path) -> list[dict[str, Any]]:
    records, skipped = read_index(folder)
    assert skipped == 0
    return records


def test_collect_through_the_daemon_then_one_shot_and_pull_only_new_verified_files(
        loop_pi: tuple[SSHServer, Path], capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    pi, scene = loop_pi
    args = pi.target.cli_args()
    frames0 = _ok(capsys, "status", *args)["result"]["frames"]
    row = _ok(capsys, "collect", *args, "--label", "red ball", "--count", "6", "--interval-s", "0.1")
    r = row["result"]
    assert r["mode"] == "daemon" and r["saved"] == 6 and r["state"] == "done" and "still classifying" in row["summary"]
    st = _ok(capsys, "status", *args)["result"]
    assert st["running"] and st["frames"] > frames0 + 6  # the daemon classified on
    assert st["stats"]["collect"]["saved_total"] == 6

    _ok(capsys, "stop", *args)
    _scene(scene, "box", 2)
    row = _ok(capsys, "collect", *args, "--label", "blue box", "--count", "4", "--interval-s", "0")
    assert row["result"]["mode"] == "one-shot" and row["result"]["saved"] == 4 and "no daemon was running" in row["summary"]

    data = tmp_path / "data"
    row = _ok(capsys, "pull-data", *args, "--to", str(data))
    folders = {f["name"]: f for f in row["result"]["folders"]}
    assert {k: v["copied"] for k, v in folders.items()} == {"red ball": 6, "blue box": 4}
    device_data = remote_root(pi) / "data"
    for label, n in (("red ball", 6), ("blue box", 4)):
        local = _records(data / label)
        remote = {rec["name"]: rec for rec in _records(device_data / label)}
        pngs = sorted((data / label).glob("*.png"))
        assert len(local) == len(pngs) == n
        for rec in local:
            png = data / label / f"{rec['name']}.png"
            assert hashlib.sha256(png.read_bytes()).hexdigest() == remote[rec["name"]]["files"]["frame"]["sha256"]
            with Image.open(io.BytesIO(png.read_bytes())) as im:
                assert im.size == (320, 240) and im.mode == "RGB"  # main, downscaled: any new model's size can be cut from it
            assert rec["pulled"]["view"] == "frame" and rec["camera"]["Lux"] > 0
        # the folder holds what the image-folder loader reads: PNGs, and a JSON-lines index it ignores
        assert {p.suffix for p in (data / label).iterdir()} == {".png", ".jsonl"}
    again = _ok(capsys, "pull-data", *args, "--to", str(data))["result"]
    assert sum(f["copied"] for f in again["folders"]) == 0 and sum(f["already"] for f in again["folders"]) == 10
    code, out, _ = run_cli(capsys, "pull-data", *args, "--to", str(data), "--view", "model")
    assert code == 2 and "holds frame pictures" in out["error"]  # one view per folder


def test_a_one_shot_collection_keeps_the_lock_after_its_host_dies(loop_pi: tuple[SSHServer, Path],
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """No push or start can take the camera from it: the lock goes with the one-shot process, not the SSH session."""
    pi, _ = loop_pi
    args = pi.target.cli_args()
    _ok(capsys, "stop", *args)
    host = subprocess.Popen([sys.executable, "-m", "deploy", "collect", *args, "--label", "slow", "--count", "25",
                             "--interval-s", "0.2", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    status_file = remote_root(pi) / "run" / "collect-status.json"
    try:
        end = time.monotonic() + 60
        while not (status_file.exists() and (st := json.loads(status_file.read_text())).get("label") == "slow"
                   and st.get("saved", 0) >= 2):
            assert time.monotonic() < end and host.poll() is None, host.communicate()
            time.sleep(0.1)
        host.send_signal(signal.SIGKILL)  # the host dies: its session (and its agent) end
        host.wait()
        code, data, _ = run_cli(capsys, "start", *args)
        assert code == 1 and "locked" in data[0]["summary"], data
        job = json.loads((remote_root(pi) / "run" / "collect.json").read_text())
        assert job["mode"] == "one-shot" and job["label"] == "slow"
        end = time.monotonic() + 60
        while json.loads(status_file.read_text())["state"] == "running":
            assert time.monotonic() < end
            time.sleep(0.2)
        time.sleep(0.5)
        assert json.loads(status_file.read_text())["saved"] == 25  # it finished its job alone
        _ok(capsys, "start", *args)  # and then let go of the camera and the lock
    finally:
        if host.poll() is None:
            host.kill()


def test_pull_refuses_a_file_whose_bytes_changed_and_never_shows_a_partial_copy(
        loop_pi: tuple[SSHServer, Path], capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    pi, scene = loop_pi
    args = pi.target.cli_args()
    _scene(scene, "star", 3)
    _ok(capsys, "collect", *args, "--label", "green star", "--count", "3", "--interval-s", "0")
    folder = remote_root(pi) / "data" / "green star"
    victim = folder / _records(folder)[0]["files"]["frame"]["path"]
    raw = bytearray(victim.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # the card flipped a byte after the record was written
    victim.write_bytes(bytes(raw))
    dest = tmp_path / "pulled"
    code, data, _ = run_cli(capsys, "pull-data", *args, "--to", str(dest), "--label", "green star")
    assert code == 1 and "REFUSED (sha256 mismatch, not kept)" in data[0]["summary"]
    f = data[0]["result"]["folders"][0]
    assert f["copied"] == 2 and len(f["refused"]) == 1 and victim.stem in f["refused"][0]
    assert not (dest / "green star" / victim.name).exists() and not list(dest.rglob("*.part"))
    assert len(_records(dest / "green star")) == 2

    # a pull killed in the middle of a file: the final name never appears; the next pull finishes the job
    victim.write_bytes(bytes(raw[: len(raw) // 2] + bytes([raw[len(raw) // 2] ^ 0xFF]) + raw[len(raw) // 2 + 1:]))  # repaired
    fresh = tmp_path / "fresh"
    p = run_cli_process("pull-data", *args, "--to", str(fresh), "--label", "green star", env={"EDGEKIT_PULL_FAULT": "mid-file=kill"})
    assert p.returncode == -signal.SIGKILL
    assert not list((fresh / "green star").glob("*.png")) and list((fresh / "green star").glob(".*.part"))
    p = run_cli_process("pull-data", *args, "--to", str(fresh), "--label", "green star", "--json")
    assert p.returncode == 0, p.stdout + p.stderr
    assert len(list((fresh / "green star").glob("*.png"))) == 3 and not list(fresh.rglob("*.part"))
    # bytes damaged in transit are refused the same way
    again = tmp_path / "transit"
    p = run_cli_process("pull-data", *args, "--to", str(again), "--label", "green star", "--json",
                        env={"EDGEKIT_PULL_FAULT": "mid-file=corrupt"})
    assert p.returncode == 1 and json.loads(p.stdout)[0]["result"]["folders"][0]["refused"]


def test_names_from_the_device_are_checked_before_they_become_paths(loop_pi: tuple[SSHServer, Path],
                                                                      capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    pi, _ = loop_pi
    data = remote_root(pi) / "data"
    (data / " leading space").mkdir(parents=True, exist_ok=True)  # made by hand: not a label
    evil = data / "evil"
    (evil / "frame").mkdir(parents=True, exist_ok=True)
    (evil / "frame" / "x.png").write_bytes(b"\x89PNG")
    line = {"name": "../../escape", "files": {"frame": {"path": "frame/x.png", "sha256": "0" * 64, "bytes": 4}}}
    gone = {"name": "dev-gone", "files": {"frame": {"path": "frame/dev-gone.png", "sha256": "0" * 64, "bytes": 4}}}
    (evil / "frames.jsonl").write_text(json.dumps(line) + "\n" + json.dumps(gone) + "\n")  # the second names no file
    dest = tmp_path / "d"
    code, out, _ = run_cli(capsys, "pull-data", *pi.target.cli_args(), "--to", str(dest), "--label", "evil")
    assert code == 1
    result = out[0]["result"]
    assert " leading space" in result["invalid_labels"] and result["folders"][0]["bad"] == ["../../escape"]
    assert result["folders"][0]["missing"] == 1 and result["folders"][0]["listed"] == 1  # listed by the index, not there
    assert not (tmp_path / "escape.png").exists() and not list(dest.rglob("*.png"))


def test_push_keep_uncertain_and_pull_the_uncertain_frames(loop_pi: tuple[SSHServer, Path], deploy_artifacts: Path,
                                                           capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """The grey garment model is unsure of table-top objects: with margin 1 every frame counts, one kept every 0.2 s."""
    pi, scene = loop_pi
    args = pi.target.cli_args()
    row = _ok(capsys, "push", *args, "--artifacts", str(deploy_artifacts), "--supervisor", "process", "--source",
              f"fake-picamera2:scene={scene}", "--keep-uncertain", "--margin", "1.0", "--daemon-arg=--uncertain-every-s=0.2",
              "--no-progress")
    pid = json.loads((remote_root(pi) / "run" / "daemon.json").read_text())["pid"]
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    i = cmdline.index(b"--keep-uncertain")
    assert cmdline[i + 1].decode() == str(remote_root(pi) / "uncertain") and b"--data-dir" in cmdline, row
    end = time.monotonic() + 60
    while (st := _ok(capsys, "status", *args)["result"]["stats"]["uncertain"])["kept"] < 4:
        assert time.monotonic() < end, st
        time.sleep(0.5)
    assert st["write_errors"] == 0 and st["margin"] == 1.0
    udir = tmp_path / "unsure"
    res = _ok(capsys, "pull-data", *args, "--uncertain-to", str(udir))["result"]
    assert res["folders"][0]["name"] == "uncertain" and res["folders"][0]["copied"] >= 4
    recs = _records(udir)
    assert len(recs) == len(list(udir.glob("*.png"))) >= 4
    assert all(0 <= r["margin"] < 1.0 and len(r["prediction"]) == 3 for r in recs)
    with Image.open(udir / f"{recs[0]['name']}.png") as im:  # the stream it classified: main is read only for frames
        assert np.asarray(im).shape == (84, 112, 3)          # chosen before their capture (collected ones), not for these
