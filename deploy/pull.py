"""pull-data: copy the frames collected on a device into ``DIR/<label>/``, new files only, each verified by sha256.

The agent lists every frame its folders' indexes name (``deploy.agent.data``), with the sha256
and size of each picture. For each frame not yet here, one picture (``--view frame``, the
default, or ``model``) is copied over SFTP into a hidden ``DIR/<label>/.<name>.png.part`` while
its sha256 is computed, and only when it matches the device's record (and the size agrees) is
it fsynced and renamed to ``DIR/<label>/<name>.png``: a partly copied file never appears under
its final name, and a file whose hash does not match is refused and deleted. Then the frame's
record is appended to ``DIR/<label>/frames.jsonl`` (camera controls, time, source; plus where
and when it was pulled). ``.part`` files left by an interrupted pull are removed by the next.

The result is what ``python -m host run --data folder:DIR`` reads: one folder per label, PNGs
in it (the index and hidden files are not images to the loader). The frame view is the
default because a new model is trained on camera frames (cropped and resized by the loader as
the device does for that model); the model view is what the current model saw (its size,
colour, polarity and contrast), right only for a model with the same contract. One ``DIR``
holds one view: ``DIR/.edgekit-pull.json`` records it and another is refused.

What the device sends is checked before it touches a path here: labels must be valid folder
names (``device.labels``), frame names plain file names; the remote path is built from them.
With ``--uncertain-to UDIR`` the daemon's uncertain frames (``--keep-uncertain``) are copied
the same way into ``UDIR/`` (flat: nobody has labelled them yet), their records (top-3, margin)
in ``UDIR/frames.jsonl``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import posixpath
import re
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from deploy.agent import protocol
from deploy.errors import DeployError
from deploy.remote import Device
from device.framestore import INDEX, PART_SUFFIX, read_index
from device.labels import label_problem

VIEWS = ("frame", "model")
MARKER = ".edgekit-pull.json"
FAULT_ENV = "EDGEKIT_PULL_FAULT"  # test hook: mid-file=kill|corrupt
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,200}")
CHUNK = 1 << 16


class PullError(DeployError):
    """The local folder cannot take the pull (another view, not writable)."""


@dataclass
class FolderResult:
    """What happened to one label's (or the uncertain) frames."""

    name: str
    to: str
    listed: int = 0
    copied: int = 0
    already: int = 0
    copied_bytes: int = 0
    refused: list[str] = field(default_factory=list)  # sha256 or size did not match: not kept
    conflicts: list[str] = field(default_factory=list)  # a different file of that name is already here
    missing: int = 0  # listed on the device but no longer there
    bad: list[str] = field(default_factory=list)  # names the device sent that cannot be a file name

    @property
    def ok(self) -> bool:
        """Nothing refused, conflicting or unusable."""
        return not (self.refused or self.conflicts or self.bad)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {k: getattr(self, k) for k in self.__dataclass_fields__} | {"ok": self.ok}


@dataclass(frozen=True)
class PullResult:
    """One host's pull."""

    host: str
    view: str
    folders: tuple[FolderResult, ...]
    invalid_labels: tuple[str, ...]
    elapsed_s: float

    @property
    def ok(self) -> bool:
        """Every folder ok."""
        return all(f.ok for f in self.folders)

    @property
    def summary(self) -> str:
        """One line for the result table."""
        copied = sum(f.copied for f in self.folders)
        already = sum(f.already for f in self.folders)
        size = sum(f.copied_bytes for f in self.folders)
        parts = [f"{f.name}: {f.copied} new" + (f", {len(f.refused)} REFUSED (sha256 mismatch, not kept)" if f.refused else "")
                 + (f", {len(f.conflicts)} conflicting (kept the local file)" if f.conflicts else "")
                 + (f", {len(f.bad)} unusable names" if f.bad else "") for f in self.folders]
        head = f"copied {copied} new {self.view} pictures ({size / 1024:.0f} KiB), {already} already here"
        return head + (" | " + "; ".join(parts) if parts else " | nothing collected on the device yet")

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {"host": self.host, "view": self.view, "ok": self.ok, "elapsed_s": round(self.elapsed_s, 3),
                "invalid_labels": list(self.invalid_labels), "folders": [f.to_json() for f in self.folders]}


def _fault(point: str) -> Optional[str]:
    for item in filter(None, (s.strip() for s in os.environ.get(FAULT_ENV, "").split(","))):
        name, _, action = item.partition("=")
        if name == point:
            return action or "kill"
    return None


def recorded_view(root: Path) -> Optional[str]:
    """The view ``root`` holds (from its marker), or None."""
    try:
        view = json.loads((root / MARKER).read_text()).get("view")
    except (OSError, ValueError, AttributeError):
        return None
    return view if isinstance(view, str) else None


def check_view(root: Path, view: str) -> None:
    """PullError when ``root`` already holds the other view (checked before connecting)."""
    had = recorded_view(root)
    if had is not None and had != view:
        raise PullError(f"{root} holds {had} pictures (pulled with --view {had}); pull --view {view} into another folder, "
                        "so a model is not trained on both")


def _claim_view(root: Path, view: str) -> None:
    """One DIR holds one view: record it the first time, refuse another after."""
    check_view(root, view)
    if recorded_view(root) is None:
        root.mkdir(parents=True, exist_ok=True)
        (root / MARKER).write_text(json.dumps({"view": view, "note": "written by `python -m deploy pull-data`"}) + "\n")


def _copy_verified(device: Device, remote: str, final: Path, sha256: str, size: int) -> tuple[Optional[bool], str]:
    """Copy ``remote`` to ``final`` through a hidden .part file; (kept, why not); kept is None when the remote file is gone."""
    tmp = final.with_name(f".{final.name}{PART_SUFFIX}")
    h = hashlib.sha256()
    n = 0
    fault = _fault("mid-file")
    try:
        with contextlib.ExitStack() as stack:
            try:
                src = stack.enter_context(device.sftp.open(remote, "rb"))
            except FileNotFoundError:  # deleted on the device since it was listed
                return None, "gone from the device"
            try:
                dst = stack.enter_context(open(tmp, "wb"))
            except OSError as e:
                raise PullError(f"cannot write {tmp}: {e.strerror or e}") from None
            src.prefetch(size)
            while True:
                chunk = src.read(CHUNK)
                if not chunk:
                    break
                if fault and n == 0:
                    half = chunk[: max(1, len(chunk) // 2)]
                    if fault == "kill":  # a host that dies mid-copy: the .part file stays, the final name never appears
                        dst.write(half)
                        dst.flush()
                        os.kill(os.getpid(), signal.SIGKILL)
                    if fault == "corrupt":  # a transfer that flips bytes
                        chunk = bytes(b ^ 0xFF for b in chunk[:16]) + chunk[16:]
                h.update(chunk)
                dst.write(chunk)
                n += len(chunk)
            dst.flush()
            os.fsync(dst.fileno())
        if n != size or h.hexdigest() != sha256:
            why = f"{n} bytes, sha256 {h.hexdigest()[:12]}…; the device's record says {size} bytes, {sha256[:12]}…"
            tmp.unlink(missing_ok=True)
            return False, why
        os.replace(tmp, final)
        return True, ""
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _pull_folder(device: Device, name: str, listing: dict[str, Any], to: Path, view: str,
                 progress: Callable[[str, int], None]) -> FolderResult:
    res = FolderResult(name, str(to))
    records = listing.get("records") or []
    res.listed = len(records)
    res.missing = int(listing.get("missing") or 0)
    remote_dir = str(listing.get("dir") or "")
    try:
        to.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise PullError(f"cannot make the folder {to}: {e.strerror or e}") from None
    for stale in to.glob(f".*{PART_SUFFIX}"):  # left by a pull that was killed
        stale.unlink(missing_ok=True)
    indexed = {r.get("name") for r in read_index(to)[0]}
    new_records = []
    for rec in records:
        stem = rec.get("name")
        info = (rec.get("files") or {}).get(view) if isinstance(rec.get("files"), dict) else None
        if not isinstance(stem, str) or not _SAFE_NAME.fullmatch(stem) or not isinstance(info, dict):
            res.bad.append(str(stem)[:80])
            continue
        sha, size = str(info.get("sha256", "")), int(info.get("bytes", -1))
        final = to / f"{stem}.png"
        if final.exists():
            if _sha256_file(final) == sha:
                res.already += 1
                if stem not in indexed:  # copied by a pull that was killed before it wrote the record
                    new_records.append(rec)
            else:
                res.conflicts.append(final.name)
            progress(name, 1)
            continue
        ok, why = _copy_verified(device, posixpath.join(remote_dir, view, f"{stem}.png"), final, sha, size)
        if ok is None:
            res.missing += 1
        elif ok:
            res.copied += 1
            res.copied_bytes += size
            new_records.append(rec)
        else:
            res.refused.append(f"{stem}.png ({why})")
        progress(name, 1)
    if new_records:
        fd = os.open(to, os.O_RDONLY)
        try:
            os.fsync(fd)  # the renames above, before the index names them
        finally:
            os.close(fd)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        with open(to / INDEX, "a", encoding="utf-8") as f:
            for rec in new_records:
                f.write(json.dumps({**rec, "pulled": {"from": device.target.label, "view": view, "file": f"{rec['name']}.png",
                                                      "at": stamp}}, separators=(",", ":")) + "\n")
            f.flush()
            os.fsync(f.fileno())
    return res


def pull(device: Device, to: Optional[Path], view: str = "frame", labels: tuple[str, ...] = (),
         uncertain_to: Optional[Path] = None, progress: Callable[[str, int], None] = lambda name, n: None,
         on_listing: Callable[[int], None] = lambda total: None) -> PullResult:
    """Copy the new frames of every label (or ``labels``) into ``to/<label>/``, and uncertain frames into ``uncertain_to``."""
    if view not in VIEWS:
        raise PullError(f"--view must be one of {', '.join(VIEWS)}. Got: {view!r}")
    t0 = time.monotonic()
    args = ["--uncertain"] if uncertain_to is not None else []
    ans = device.agent(protocol.DATA_LIST, "--dir", device.root, *args, timeout_s=300)
    listed: dict[str, Any] = ans.get("labels") or {}
    invalid = [str(x) for x in ans.get("invalid_folders") or []]
    todo: list[tuple[str, dict[str, Any], Path]] = []
    if to is not None:
        for label in list(listed):
            if label_problem(label) is not None:  # a device must not make us write outside DIR
                invalid.append(label)
                continue
            if labels and label not in labels:
                continue
            todo.append((label, listed[label], to / label))
        if todo or labels:
            _claim_view(to, view)
    if uncertain_to is not None and isinstance(ans.get("uncertain"), dict):
        _claim_view(uncertain_to, view)
        todo.append(("uncertain", ans["uncertain"], uncertain_to))
    on_listing(sum(len(x[1].get("records") or []) for x in todo))
    folders = tuple(_pull_folder(device, name, listing, dest, view, progress) for name, listing, dest in todo)
    missing_labels = [lab for lab in labels if lab not in listed]
    if missing_labels:
        folders += tuple(FolderResult(lab, str((to or Path(".")) / lab)) for lab in missing_labels)
    return PullResult(device.target.label, view, folders, tuple(invalid), time.monotonic() - t0)
