"""Kept frames are whole or absent: pictures renamed into place, then one index line; caps; a full disk (a real tmpfs)."""

from __future__ import annotations

import errno
import hashlib
import json
from pathlib import Path

import pytest
from tmpfs import small_tmpfs

from device.framestore import INDEX, FrameStore, Picture, read_index


def _pics(n: int = 1000, seed: int = 0) -> list[Picture]:
    data = bytes((seed + i) % 251 for i in range(n))
    return [Picture("frame", data, (10, 10)), Picture("model", data[: n // 4], (2, 2))]


def test_save_writes_pictures_then_a_line_naming_them_with_their_sha256(tmp_path: Path) -> None:
    store = FrameStore(tmp_path / "cat")
    rec = store.save("dev-1", _pics(), {"label": "cat", "camera": {"Lux": 400.0}})
    assert rec is not None and rec["name"] == "dev-1"
    records, skipped = read_index(tmp_path / "cat")
    assert skipped == 0 and records == [json.loads(json.dumps(rec))]
    for kind, info in records[0]["files"].items():
        data = (tmp_path / "cat" / info["path"]).read_bytes()
        assert info["path"] == f"{kind}/dev-1.png" and hashlib.sha256(data).hexdigest() == info["sha256"]
        assert info["bytes"] == len(data)
    assert not list((tmp_path / "cat").rglob("*.part"))


def test_caps_in_files_and_bytes_count_what_is_already_there(tmp_path: Path) -> None:
    store = FrameStore(tmp_path, max_files=5)
    assert store.save("a", _pics(), {}) is not None and store.save("b", _pics(), {}) is not None
    assert store.save("c", _pics(), {}) is None and store.capped == 1  # 4 + 2 > 5
    again = FrameStore(tmp_path, max_files=5)  # a restarted daemon counts the folder
    assert again.files == 4 and not again.room_for(2) and again.room_for(1)
    by_bytes = FrameStore(tmp_path, max_bytes=again.bytes + 800)  # the pictures and their index line must fit
    assert by_bytes.save("d", _pics(1000), {}) is None and by_bytes.capped == 1
    assert by_bytes.save("e", _pics(200), {}) is not None


def test_a_torn_last_line_is_ended_before_the_next_and_skipped_by_readers(tmp_path: Path) -> None:
    store = FrameStore(tmp_path)
    store.save("a", _pics(), {})
    with open(tmp_path / INDEX, "ab") as f:
        f.write(b'{"name": "torn", "fi')  # a power cut mid-append
    store.save("b", _pics(seed=1), {})
    records, skipped = read_index(tmp_path)
    assert [r["name"] for r in records] == ["a", "b"] and skipped == 1


def test_a_full_disk_leaves_nothing_half_written_and_the_next_frame_fits_again(tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "card", "64k") as card:
        store = FrameStore(card / "kept")
        saved = 0
        with pytest.raises(OSError) as e:
            for i in range(100):
                store.save(f"f{i}", _pics(6000, i), {"i": i})
                saved += 1
        assert e.value.errno == errno.ENOSPC and saved >= 1
        records, skipped = read_index(card / "kept")
        assert len(records) == saved and skipped == 0  # the failed frame has no line ...
        names = sorted(p.name for p in (card / "kept").rglob("*") if p.is_file())
        assert not [n for n in names if n.endswith(".part")]  # ... no temporary files ...
        assert len([n for n in names if n.endswith(".png")]) == 2 * saved  # ... and none of its pictures
        for rec in records:
            for info in rec["files"].values():
                assert hashlib.sha256((card / "kept" / info["path"]).read_bytes()).hexdigest() == info["sha256"]
        (card / "kept" / "frame" / "f0.png").unlink()  # room again (the index still names f0: readers check files)
        (card / "kept" / "model" / "f0.png").unlink()
        assert store.save("after", _pics(3000, 7), {}) is not None
