"""Results as JSON lines with size-based rotation, so the host can pull them back.

A full disk must never stop classification, and the file must never hold half a record:

- Whole lines go out with ``os.write`` on an ``O_APPEND`` descriptor (no hidden buffer to lose).
  A write that fails part-way (ENOSPC, EFBIG, EIO, EROFS) is cut back to the last whole line
  (``ftruncate``). The records not written wait in memory (at most ``max_pending_bytes``; past
  that the oldest are given up) and are retried every ``retry_s``. Failed attempts are counted
  in ``write_errors``, records given up in ``lost``.
- EFBIG (the file reached ``RLIMIT_FSIZE`` or the filesystem's largest file) rotates early.
- A rotation that fails keeps appending to the current file (its descriptor follows the
  rename, if one happened) and tries again after ``retry_s``; a new file that cannot be opened
  is opened again on the next attempt.
- After a power cut the file may end in a torn line. Opening it for append repairs that first:
  a tail that is a whole JSON record missing only its newline gets the newline; anything else
  after the last newline is cut off and counted (``torn_lines``), so the next record never
  glues onto it. ``read_results`` skips and counts torn and corrupt lines when reading.
- A file deleted or moved under the writer is noticed (as logging's ``WatchedFileHandler`` does)
  and the path opened again, so results never vanish into an unlinked file.
- Only regular files are rotated, cut or fsynced; a FIFO or ``/dev/stdout`` is only written to.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import stat
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

log = logging.getLogger("edgekit.device")

# Errors that come and go on a device in the field: the writer counts them and retries.
# Anything else when the writer is first opened (no permission, a folder in the way) is a
# configuration mistake and raised, so the daemon refuses to start with a one-line error.
TRANSIENT_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO, errno.EROFS})
REPAIR_WINDOW_BYTES = 64 * 1024  # a record is well under 1 KiB; a longer tail is not ours to cut
MAX_LINE_BYTES = 1 << 20  # the reader skips longer lines without holding them in memory
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


class JsonLinesWriter:
    """Appends one JSON object per line; rotates ``file`` → ``file.1`` … ``file.N`` past ``max_bytes``.

    ``write`` only queues (it never fails on I/O); ``flush`` writes and returns False when the
    file cannot take the records now (counted, retried later); ``close`` flushes and fsyncs.
    """

    def __init__(
        self,
        path: Path | str,
        max_bytes: int = 10 * 1024 * 1024,
        backups: int = 3,
        retry_s: float = 1.0,
        max_pending_bytes: int = 1 << 20,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.path = Path(path)
        self.max_bytes = max(1, max_bytes)
        self.backups = max(0, backups)
        self.retry_s = retry_s
        self.max_pending_bytes = max_pending_bytes
        self._clock = clock
        self.lines = 0  # records written
        self.rotations = 0
        self.write_errors = 0  # failed attempts to open, write or rotate
        self.lost = 0  # records given up (pending past max_pending_bytes, or left at close)
        self.torn_lines = 0  # torn last lines cut off when the file was opened
        self.last_error: Optional[str] = None
        self._pending: deque[bytes] = deque()
        self._pending_bytes = 0
        self._fd: Optional[int] = None
        self._regular = True
        self._size = 0
        self._retry_at = 0.0
        self._rotate_due = False  # EFBIG: rotate before the next write
        self._rotate_after = 0.0  # a failed rotation waits until then
        self._need_newline = False  # a non-regular file got part of a line before an error
        self._failing_since: Optional[int] = None  # write_errors when the current failure began
        self._logged_at = -1e9
        self._closed = False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._open()
        except OSError as e:
            if e.errno not in TRANSIENT_ERRNOS:
                raise
            self._failed(e)

    # ---------------------------------------------------------------- public
    @property
    def pending(self) -> int:
        """Records queued in memory and not yet written."""
        return len(self._pending)

    def write(self, record: dict[str, Any]) -> None:
        """Queue a record; the next ``flush`` writes it."""
        if self._closed:
            raise ValueError(f"the results writer for {self.path} is closed")
        line = (json.dumps(record, separators=(",", ":")) + "\n").encode("utf-8")
        self._pending.append(line)
        self._pending_bytes += len(line)
        while self._pending_bytes > self.max_pending_bytes and len(self._pending) > 1:
            self._pending_bytes -= len(self._pending.popleft())
            self.lost += 1

    def flush(self, force: bool = False) -> bool:
        """Write every queued record; False when the file cannot take them now (counted, retried)."""
        if not self._pending and not self._need_newline:
            return True
        if not force and self._clock() < self._retry_at:
            return False
        try:
            if self._fd is not None and self._regular and self._replaced():
                self._drop_fd()  # deleted or moved under us: write to what the path names now
            if self._fd is None:
                self._open()
            while self._pending:
                if self._wants_rotation(len(self._pending[0])):
                    try:
                        self._rotate()
                    except OSError as e:  # appending to the current file beats losing records
                        self._failed(e, retry=False)
                    if self._fd is None:
                        self._open()
                self._write_batch()
        except OSError as e:
            self._failed(e)
            return False
        if self._failing_since is not None:
            log.warning("%s is writable again after %d failed attempts (%d records lost in all)",
                        self.path, self.write_errors - self._failing_since, self.lost)
            self._failing_since = None
        return True

    def close(self) -> None:
        """Flush (one last try), fsync and close; safe to call twice."""
        if self._closed:
            return
        self.flush(force=True)
        if self._pending:
            self.lost += len(self._pending)
            log.error("%s: %d results could not be written before exit and are lost", self.path, len(self._pending))
            self._pending.clear()
            self._pending_bytes = 0
        fd, self._fd = self._fd, None
        if fd is not None:
            if self._regular:
                try:
                    os.fsync(fd)
                except OSError as e:
                    self._failed(e)
            os.close(fd)
        self._closed = True

    # ---------------------------------------------------------------- opening and repair
    def _replaced(self) -> bool:
        """True when the path no longer names the open file (as logging's WatchedFileHandler checks)."""
        assert self._fd is not None
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return True
        fst = os.fstat(self._fd)
        return (st.st_dev, st.st_ino) != (fst.st_dev, fst.st_ino)

    def _drop_fd(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)

    def _open(self) -> None:
        try:
            regular = stat.S_ISREG(os.stat(self.path).st_mode)
        except FileNotFoundError:
            regular = True
        flags = os.O_APPEND | os.O_CREAT | _O_CLOEXEC
        try:  # read access lets the torn-line repair look at the tail
            fd = os.open(self.path, flags | (os.O_RDWR if regular else os.O_WRONLY), 0o644)
        except PermissionError:
            fd = os.open(self.path, flags | os.O_WRONLY, 0o644)
        try:
            st = os.fstat(fd)
            self._regular = stat.S_ISREG(st.st_mode)
            self._size = st.st_size if self._regular else 0
            if self._regular and self._size:
                self._repair(fd)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def _repair(self, fd: int) -> None:
        """Make the file end on a line boundary before appending (a power cut may have torn it)."""
        size = self._size
        window = min(size, REPAIR_WINDOW_BYTES)
        try:
            tail = os.pread(fd, window, size - window)
        except OSError:  # opened write-only: nothing to look at, nothing to repair
            return
        if tail.endswith(b"\n"):
            return
        cut = tail.rfind(b"\n")
        fragment = tail[cut + 1 :]
        if cut < 0 and window < size:  # a line longer than any record: not ours to cut
            _write_all(fd, b"\n")
            self._size += 1
            log.warning("%s ended in a %d+ byte unterminated line; ended it so the next record starts afresh", self.path, window)
            return
        try:
            whole = isinstance(json.loads(fragment), dict)
        except ValueError:
            whole = False
        if whole:  # a complete record that only lost its newline: keep it
            _write_all(fd, b"\n")
            self._size += 1
            return
        os.ftruncate(fd, size - len(fragment))
        self._size = size - len(fragment)
        self.torn_lines += 1
        log.warning("%s ended in a torn line (%d bytes, a power cut mid-write?); cut it off", self.path, len(fragment))

    # ---------------------------------------------------------------- writing
    def _wants_rotation(self, next_line: int) -> bool:
        if not self._regular or not self._size or self._clock() < self._rotate_after:
            return False
        return self._rotate_due or self._size + next_line > self.max_bytes

    def _write_batch(self) -> None:
        """Write the queued lines that fit in the current file, all or up to the last whole line."""
        fd = self._fd
        assert fd is not None
        limit = self.max_bytes - self._size if self._regular and self._clock() >= self._rotate_after else None
        n, total = 0, 0
        for line in self._pending:
            if n and ((limit is not None and total + len(line) > limit) or total >= 256 * 1024):
                break
            n += 1
            total += len(line)
        data = b"".join(self._pending[i] for i in range(n))
        if self._need_newline:
            data = b"\n" + data
        try:
            _write_all(fd, data)
        except OSError as e:
            self._settle(data, getattr(e, "written", 0))
            raise
        self._settle(data, len(data))

    def _settle(self, data: bytes, done: int) -> None:
        """Account for ``done`` bytes of ``data`` written; a partly written last line is cut back."""
        keep = data.rfind(b"\n", 0, done) + 1
        if keep < done:
            self._cut_back(self._size + keep, done - keep)
        written = data[:keep]
        if self._need_newline and written:
            self._need_newline = False
            written = written[1:]
            self._size += 1
        self._commit(written)

    def _commit(self, written: bytes) -> None:
        k = written.count(b"\n")
        for _ in range(k):
            self._pending_bytes -= len(self._pending.popleft())
        self.lines += k
        self._size += len(written)

    def _cut_back(self, offset: int, partial: int) -> None:
        """Remove a partly written line at the end of the file."""
        if not self._regular:
            self._need_newline = partial > 0  # cannot take it back: end it before the next line
            return
        try:
            assert self._fd is not None
            os.ftruncate(self._fd, offset)
        except OSError:  # reopen later: the torn-line repair cuts it then
            self._drop_fd()

    def _rotate(self) -> None:
        """``file`` → ``file.1`` … ; the old descriptor follows the rename until the new file is open."""
        self._rotate_due = False
        try:
            if self.backups == 0:
                self.path.unlink(missing_ok=True)
            else:
                for i in range(self.backups - 1, 0, -1):
                    src = self.path.with_name(f"{self.path.name}.{i}")
                    if src.exists():
                        os.replace(src, self.path.with_name(f"{self.path.name}.{i + 1}"))
                os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        except OSError:
            self._rotate_after = self._clock() + self.retry_s  # keep appending here meanwhile
            raise
        self._drop_fd()
        self.rotations += 1
        self._open()

    def _failed(self, e: OSError, retry: bool = True) -> None:
        """Count and log a failed attempt; with ``retry``, wait ``retry_s`` before writing again."""
        self.write_errors += 1
        if e.errno == errno.EFBIG:
            self._rotate_due = True
        if retry:
            self._retry_at = self._clock() + self.retry_s
        msg = f"{self.path}: {e.strerror or e}"
        if self._failing_since is None:
            self._failing_since = self.write_errors - 1
        now = self._clock()
        if msg != self.last_error or now - self._logged_at >= 60.0:
            log.error("cannot write results (%s); classification goes on, results wait in memory and are retried "
                      "every %.0f s (%d failed attempts, %d records lost so far)", msg, self.retry_s, self.write_errors, self.lost)
            self._logged_at = now
        self.last_error = msg


def _write_all(fd: int, data: bytes) -> int:
    """os.write until every byte is out; an OSError carries the bytes written before it as ``written``."""
    view = memoryview(data)
    done = 0
    try:
        while done < len(data):
            n = os.write(fd, view[done:])
            if n <= 0:
                raise OSError(errno.EIO, "write() wrote nothing")
            done += n
    except OSError as e:
        e.written = done  # type: ignore[attr-defined]
        raise
    return done


# -------------------------------------------------------------------- reading


@dataclass
class ResultsLog:
    """What ``read_results`` found: the records, and the lines it skipped."""

    records: list[dict[str, Any]] = field(default_factory=list)
    torn: int = 0  # a last line cut short (a power cut mid-write)
    corrupt: int = 0  # other lines that are not a JSON object (e.g. zeros after a crash)


def result_files(path: Path | str) -> list[Path]:
    """The results file and its rotated backups that exist, oldest first."""
    p = Path(path)
    backups = []
    i = 1
    while (b := p.with_name(f"{p.name}.{i}")).exists():
        backups.append(b)
        i += 1
    return [*reversed(backups), *([p] if p.exists() else [])]


def iter_lines(path: Path | str) -> Iterator[tuple[bytes, bool]]:
    """(line, ends_with_newline) for each line, lines over MAX_LINE_BYTES as b'' (never held whole)."""
    with open(path, "rb") as f:
        while True:
            raw = f.readline(MAX_LINE_BYTES + 1)
            if not raw:
                return
            if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
                while raw and not raw.endswith(b"\n"):
                    raw = f.readline(MAX_LINE_BYTES)
                yield b"", bool(raw)
                continue
            yield raw, raw.endswith(b"\n")


def read_results(path: Path | str, into: Optional[ResultsLog] = None) -> ResultsLog:
    """Every record of one results file; a torn last line and corrupt lines are skipped and counted."""
    out = into if into is not None else ResultsLog()
    for raw, complete in iter_lines(path):
        try:
            rec = json.loads(raw) if raw else None
        except ValueError:
            rec = None
        if isinstance(rec, dict):  # a whole object, even if only its newline is missing
            out.records.append(rec)
        elif not complete:
            out.torn += 1
        else:
            out.corrupt += 1
    return out


def read_all_results(path: Path | str) -> ResultsLog:
    """Every record of a results file and its rotated backups, oldest first."""
    out = ResultsLog()
    for p in result_files(path):
        read_results(p, out)
    return out
