"""A folder of kept frames: each frame's pictures written whole, then one JSON line naming them and their sha256.

Layout of one folder (a label's folder under the data dir, or the uncertain-frames folder)::

    frame/<name>.png     the frame, downscaled (``device.views.frame_view``)
    model/<name>.png     what the model saw (``device.views.model_view``)
    frames.jsonl         one JSON object per frame: time, files with sha256 and bytes, source, camera controls

**Whole files or none.** Each picture is written to a hidden ``.<name>.png.part``, fsynced and
renamed (the directory fsynced after), so a power cut or a full card never leaves a picture cut
short under its real name. The index line is appended last, with ``O_APPEND`` and fsync; a write
that fails part-way is cut back to where the line began, and the frame's pictures are removed
again: every line names complete files, and a frame whose line could not be written is not kept.
A torn last line left by a power cut is ended before the next line is appended, so it never
glues onto a good one (readers skip it).

**Caps.** With ``max_files`` / ``max_bytes`` a frame that would take the folder past either is
not written (``capped``): the folder is counted once when opened, then kept up to date.
Failures (ENOSPC, EROFS, EIO, ...) raise ``OSError`` after the clean-up; the callers count them
and go on, so a full SD card never stops classification.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

INDEX = "frames.jsonl"
PART_SUFFIX = ".part"
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


@dataclass(frozen=True)
class Picture:
    """One file of a kept frame: its kind (``frame``, ``model``), PNG bytes and (width, height)."""

    kind: str
    data: bytes
    size: tuple[int, int]


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | _O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_whole(path: Path, data: bytes, fsync: bool) -> None:
    """``data`` under ``path``, complete or not at all (a hidden temporary file, fsynced, renamed)."""
    tmp = path.with_name(f".{path.name}{PART_SUFFIX}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | _O_CLOEXEC, 0o644)
        try:
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


class FrameStore:
    """Writes kept frames into one folder, whole, with an index line each; optionally capped in files and bytes."""

    def __init__(self, folder: Path | str, max_files: Optional[int] = None, max_bytes: Optional[int] = None,
                 fsync: bool = True):
        self.folder = Path(folder)
        self.max_files = max_files
        self.max_bytes = max_bytes
        self.fsync = fsync
        self.saved = 0
        self.capped = 0
        self.files, self.bytes = (self._count() if max_files is not None or max_bytes is not None else (0, 0))

    def _count(self) -> tuple[int, int]:
        """Pictures and bytes already in the folder (what the caps start from)."""
        files = size = 0
        if not self.folder.is_dir():
            return 0, 0
        for root, _, names in os.walk(self.folder):
            for n in names:
                try:
                    st = os.stat(os.path.join(root, n))
                except OSError:
                    continue
                size += st.st_size
                if n != INDEX and not n.endswith(PART_SUFFIX):
                    files += 1
        return files, size

    def room_for(self, pictures: int) -> bool:
        """False when ``pictures`` more files, or any more bytes, would pass a cap."""
        if self.max_files is not None and self.files + pictures > self.max_files:
            return False
        return not (self.max_bytes is not None and self.bytes >= self.max_bytes)

    def save(self, name: str, pictures: list[Picture], record: dict[str, Any]) -> Optional[dict[str, Any]]:
        """Write the pictures as ``<kind>/<name>.png`` and append ``record`` (with their sha256) to the index.

        Returns the record as written, or None when the frame would pass a cap (counted in ``capped``).
        Raises OSError when the folder cannot take it; nothing of the frame is left behind then.
        """
        files = {p.kind: {"path": f"{p.kind}/{name}.png", "sha256": hashlib.sha256(p.data).hexdigest(),
                          "bytes": len(p.data), "size": list(p.size)} for p in pictures}
        full = {**record, "name": name, "files": files}
        line = (json.dumps(full, separators=(",", ":"), default=_jsonable) + "\n").encode()
        total = sum(len(p.data) for p in pictures) + len(line)
        if (self.max_files is not None and self.files + len(pictures) > self.max_files) or (
                self.max_bytes is not None and self.bytes + total > self.max_bytes):
            self.capped += 1
            return None
        written: list[Path] = []
        try:
            for p in pictures:
                d = self.folder / p.kind
                d.mkdir(parents=True, exist_ok=True)
                path = d / f"{name}.png"
                _write_whole(path, p.data, self.fsync)
                written.append(path)
            if self.fsync:
                for d in {w.parent for w in written}:
                    _fsync_dir(d)
            self._append(line)
        except BaseException:
            for path in written:  # the index does not name them: they must not stay either
                with contextlib.suppress(OSError):
                    path.unlink()
            raise
        self.saved += 1
        self.files += len(pictures)
        self.bytes += total
        return full

    def _append(self, line: bytes) -> None:
        """Append one index line, all of it or nothing (cut back on failure); a torn last line is ended first."""
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / INDEX
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | _O_CLOEXEC, 0o644)
        try:
            start = os.fstat(fd).st_size
            if start and os.pread(fd, 1, start - 1) != b"\n":
                line = b"\n" + line  # a power cut tore the last line: never glue onto it
            try:
                view = memoryview(line)
                while view:
                    n = os.write(fd, view)
                    view = view[n:]
                if self.fsync:
                    os.fsync(fd)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, start)
                raise
        finally:
            os.close(fd)


def _jsonable(value: Any) -> Any:
    """numpy scalars and tuples in records become plain JSON values."""
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    return str(value)


def read_index(folder: Path | str) -> tuple[list[dict[str, Any]], int]:
    """(records, lines skipped) of a folder's index: torn or corrupt lines are skipped and counted."""
    path = Path(folder) / INDEX
    records: list[dict[str, Any]] = []
    skipped = 0
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return records, 0
    for raw in data.split(b"\n"):
        if not raw.strip():
            continue
        try:
            rec = json.loads(raw)
        except ValueError:
            rec = None
        if isinstance(rec, dict):
            records.append(rec)
        else:
            skipped += 1
    return records, skipped
