"""What survives a power cut: the agent fsyncs files and their directories in the order that needs it.

The power cut itself is tested on the emulated Pi VM (SIGKILL to qemu); here the order of the
real ``fsync`` calls is recorded while the real agent code runs on a real release.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploy.agent import durable, releases, venvs
from deploy.agent.layout import VERIFIED_MARKER, Layout
from deploy.layout import ReleaseConfig, build_release


class FsyncLog:
    """Every fsync'd path, in order, with whether a watched path existed at that moment."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, bool]] = []
        self.watch: Path | None = None

    def paths(self) -> list[str]:
        return [p for p, _ in self.calls]


@pytest.fixture
def fsyncs(monkeypatch: pytest.MonkeyPatch) -> Iterator[FsyncLog]:
    log = FsyncLog()
    real = os.fsync

    def recording(fd: int) -> None:
        real(fd)
        log.calls.append((os.readlink(f"/proc/self/fd/{fd}"), bool(log.watch and log.watch.exists())))

    monkeypatch.delenv(durable.NO_FSYNC_ENV, raising=False)
    monkeypatch.setattr(os, "fsync", recording)
    yield log


def test_durable_write_syncs_the_file_then_its_directory(tmp_path: Path, fsyncs: FsyncLog) -> None:
    target = tmp_path / "history.json"
    durable.write_json(target, ["a"])
    assert json.loads(target.read_text()) == ["a"] and [p.name for p in tmp_path.iterdir()] == ["history.json"]
    tmp_name, directory = fsyncs.paths()
    assert Path(tmp_name).parent == tmp_path and Path(tmp_name).name.startswith(".history.json.")  # before the rename
    assert directory == str(tmp_path)  # after it: the new name is on disk


def test_switch_syncs_current_and_history(tmp_path: Path, fsyncs: FsyncLog) -> None:
    lay = Layout(str(tmp_path / "kit"))
    lay.ensure()
    rid = "0123456789ab"
    rel = lay.release(rid)
    (rel / "venv" / "bin").mkdir(parents=True)  # a venv dir stands in for the link target here
    (rel / "venv" / "bin" / "python").symlink_to(sys.executable)
    (rel / VERIFIED_MARKER).write_text("{}")
    releases.switch(lay, rid)
    paths = fsyncs.paths()
    assert paths[0] == str(lay.root)  # the rename of the new `current` link over the old one
    assert Path(paths[1]).name.startswith(".history.json.") and paths[2] == str(lay.root)
    assert os.readlink(lay.current) == f"releases/{rid}"


def test_verify_syncs_every_file_before_the_marker_and_the_rename_after(tmp_path: Path, fsyncs: FsyncLog,
                                                                        deploy_artifacts: Path) -> None:
    release = build_release(deploy_artifacts, ReleaseConfig(variant="int8", port=8000, runtime="ai-edge-litert"), "numpy\n")
    lay = Layout(str(tmp_path / "kit"))
    releases.prepare(lay, release.id)
    staged = lay.staged(release.id)
    for f in release.files:
        dest = staged / f.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(f.local.read_bytes() if f.local is not None else f.data or b"")
    (staged / "release.json").write_bytes(release.meta_bytes())
    # This host's Python has numpy and ai-edge-litert: a system-site-packages venv satisfies the requirements.
    steps = venvs.ensure(lay, release.id)["steps"]
    assert "requirements already satisfied (system site packages); nothing installed" in steps
    fsyncs.calls.clear()
    fsyncs.watch = staged / VERIFIED_MARKER
    out = releases.verify(lay, release.id, count=20, timeout_s=120)
    assert out["verified"] and out["golden"]["ok"]
    published = lay.release(release.id)
    synced_before_marker = {Path(p) for p, marker_there in fsyncs.calls if not marker_there}
    for f in [*release.files, "release.json"]:
        name = f if isinstance(f, str) else f.name
        assert staged / name in synced_before_marker, f"{name} was not fsynced before the marker"
    assert staged in synced_before_marker and staged / "model" in synced_before_marker  # the directories too
    marker_writes = [i for i, (p, _) in enumerate(fsyncs.calls) if Path(p).name.startswith(f".{VERIFIED_MARKER}.")]
    assert len(marker_writes) == 1
    after = fsyncs.paths()[marker_writes[0] + 1:]
    assert after[:1] == [str(staged)]  # the marker's name
    assert str(lay.releases) in after and str(lay.staging) in after  # both sides of the rename
    assert (published / VERIFIED_MARKER).is_file() and not staged.exists()


def test_the_bench_switch_turns_syncing_off(tmp_path: Path, fsyncs: FsyncLog, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(durable.NO_FSYNC_ENV, "1")
    durable.reset_stats()
    durable.write_json(tmp_path / "x.json", {"a": 1})
    durable.sync_tree(tmp_path)
    assert fsyncs.calls == [] and durable.stats()["fsync_count"] == 0
    assert json.loads((tmp_path / "x.json").read_text()) == {"a": 1}
