"""Durable writes on the device: the one helper every write that must survive a power cut goes through.

A rename is atomic, not durable. On ext4 (the Pi's SD card) a power cut can keep a rename and
lose the data of the file it names (a zero-length ``current`` target, a half ``history.json``),
or lose a rename whose directory was never synced. So a durable write here is: write a
temporary file in the same directory, ``fsync`` it, ``rename`` it over the target, ``fsync``
the directory; a durable rename or symlink switch ``fsync``\\s the directories it changed.

**Durable** (and why):

* every file and directory of a staged release, before its ``.verified`` marker is written:
  the marker vouches for the files, so it must never reach the disk before them;
* the ``.verified`` marker and the rename ``staging/<id>`` → ``releases/<id>``: a verified
  release is never lost, nor present half-written;
* the ``current`` symlink switch: after power returns, ``current`` names a release that was
  complete before the switch (the old one or the new one, never a broken link);
* ``history.json`` (what rollback goes back to), ``supervisor.json`` (the chosen supervisor) and
  each release's ``venv`` link: what later commands and a reboot rely on;
* a virtual environment's completion marker, after ``os.sync()``: pip writes thousands of files
  without syncing them, and the marker must not outlive them (a rare write: once per requirements).

**Not durable**, on purpose: ``run/`` (pid files, supervisor state: meaningless after a reboot),
``logs/``, the probe cache, the wheelhouse (pip checks wheels; a torn wheel fails the next
install, which a re-push repairs), the lock file's holder note.

``EDGEKIT_AGENT_NO_FSYNC=1`` turns the syncs off; only ``bench/deploy_push.py`` sets it, to
measure what durability costs a push. Every answer reports ``fsync_count`` and ``fsync_s``.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path
from typing import Any, Union

PathLike = Union[str, Path]
NO_FSYNC_ENV = "EDGEKIT_AGENT_NO_FSYNC"
_stats = {"count": 0, "seconds": 0.0}


def enabled() -> bool:
    """False only when the benchmark switched syncing off."""
    return os.environ.get(NO_FSYNC_ENV, "").strip().lower() in ("", "0", "no", "false", "off")


def reset_stats() -> None:
    """Zero the counters (the agent does it before each command)."""
    _stats.update(count=0, seconds=0.0)


def stats() -> dict[str, Any]:
    """fsync calls and seconds spent in them since the last reset."""
    return {"fsync_count": _stats["count"], "fsync_s": round(_stats["seconds"], 6)}


def _fsync_fd(fd: int) -> None:
    t0 = time.perf_counter()
    os.fsync(fd)
    _stats["count"] += 1
    _stats["seconds"] += time.perf_counter() - t0


def fsync_path(path: PathLike, directory: bool = False) -> None:
    """fsync one file or directory by path (whoever wrote it)."""
    if not enabled():
        return
    flags = os.O_RDONLY | (os.O_DIRECTORY if directory else 0)
    fd = os.open(str(path), flags)
    try:
        _fsync_fd(fd)
    finally:
        os.close(fd)


def fsync_dir(path: PathLike) -> None:
    """fsync a directory, so the names created, renamed or removed in it are on disk."""
    fsync_path(path, directory=True)


def write_bytes(path: PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically and durably: temp file, fsync, rename over, fsync the directory."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            if enabled():
                _fsync_fd(f.fileno())
        os.replace(str(tmp), str(path))
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)


def write_json(path: PathLike, data: Any) -> None:
    """``write_bytes`` of ``data`` as indented JSON."""
    write_bytes(path, (json.dumps(data, indent=1, sort_keys=True) + "\n").encode())


def rename(src: PathLike, dst: PathLike) -> None:
    """``os.replace(src, dst)``, then fsync the directories that changed."""
    os.replace(str(src), str(dst))
    fsync_dir(Path(dst).parent)
    if Path(src).parent.resolve() != Path(dst).parent.resolve():
        fsync_dir(Path(src).parent)


def symlink(target: str, link: PathLike) -> None:
    """Point ``link`` at ``target`` atomically and durably (new link, rename over the old one, fsync the directory)."""
    link = Path(link)
    tmp = link.with_name(f".{link.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    os.symlink(target, str(tmp))
    os.replace(str(tmp), str(link))  # rename(2) over the old link: never a moment without it
    fsync_dir(link.parent)


def sync_tree(root: PathLike) -> int:
    """fsync every regular file and directory under ``root`` (symlinks not followed), deepest first; returns files synced."""
    if not enabled():
        return 0
    files = 0
    for dirpath, _dirnames, filenames in os.walk(str(root), topdown=False):
        for name in filenames:
            p = os.path.join(dirpath, name)
            if os.path.isfile(p) and not os.path.islink(p):
                fsync_path(p)
                files += 1
        fsync_dir(dirpath)
    return files


def sync_all() -> None:
    """``os.sync()``: flush every filesystem (for trees written by other programs, such as pip's installs)."""
    if not enabled():
        return
    t0 = time.perf_counter()
    os.sync()
    _stats["count"] += 1
    _stats["seconds"] += time.perf_counter() - t0
