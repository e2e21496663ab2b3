"""Split a labelled image set 80 / 10 / 10 by content hash, with duplicates counted once and bursts kept together.

The rules, in order:

1. **Duplicates.** Two images are the same when their pixels at model size are identical (the
   model cannot tell them apart, whatever their file names or formats). Within one class the
   copies count once; the first in file-name order is kept. The same picture in two classes is a
   **conflict**: nobody can say which label is right, so every copy is left out and reported.
2. **Groups.** Within a class, images that are near-identical go into one group, which is never
   divided between the splits. Each image gets a 16x16 grey thumbnail signature (area resize,
   minus its mean, divided by its spread, so exposure flicker does not matter); two images join
   one group when their signatures are within ``NEAR_RMS`` anywhere in the class (the same
   picture re-encoded or re-scaled), or within ``BURST_RMS`` when they are consecutive in
   natural file-name order (``frame-9`` before ``frame-10``): the frames of a camera burst.
   Measured on Fashion-MNIST bursts (a garment at 112 px, sensor noise sigma 4, exposure ±5 %,
   each frame jittered by up to 1 px, area-resized to 28): every frame-to-frame distance fell
   below 0.28; between consecutive distinct garments of one class (the 60,000 training images in
   their own order) 0.2 to 7 % of the pairs fall below 0.30, in chains of at most 6 images.
3. **Split.** A group is named by the smallest sha256 among its files' bytes; the first 64 bits
   of the sha256 of that name, as a fraction u of 2**64, put the group in train (u < 0.8),
   validation (u < 0.9) or test (hashing the name again keeps u uniform for groups of any size). So
   the split of an image depends on its content and its group only: not on the order files are
   listed in, nor on ``--image-size``; adding unrelated images later never moves the old ones
   (last round's test images stay test images). Renaming files can only regroup neighbours that
   look alike (measured: 2 of 3,000 Fashion-MNIST images moved when all were renamed).
   Only a class that would otherwise have no image in some split gets its nearest group moved
   there, so every class is trained, validated and tested.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from host.errors import DataError

SPLITS = ("train", "validation", "test")
TRAIN_FRACTION, VALIDATION_FRACTION = 0.8, 0.1
SIGNATURE_SIZE = 16
NEAR_RMS = 0.05  # re-encoded / re-scaled copies of one picture, anywhere in a class
BURST_RMS = 0.30  # consecutive frames of a burst
MIN_IMAGES_PER_CLASS = 10  # 8 to train, 1 to validate, 1 to test
MIN_GROUPS_PER_CLASS = 3  # one for each split
_RANGES = ((0.0, TRAIN_FRACTION), (TRAIN_FRACTION, TRAIN_FRACTION + VALIDATION_FRACTION), (TRAIN_FRACTION + VALIDATION_FRACTION, 1.0))


@dataclass(frozen=True)
class SplitPlan:
    """Which images go where, and what was set aside on the way."""

    train: np.ndarray  # indices into the input arrays
    validation: np.ndarray
    test: np.ndarray
    duplicates: tuple[tuple[str, str], ...]  # (dropped, kept)
    conflicts: tuple[tuple[tuple[str, str], ...], ...]  # each: ((name, label), ...)
    group_sizes: np.ndarray  # images per group, over every group
    largest_group: tuple[str, ...] = ()  # names in the largest multi-image group
    per_class: dict[str, dict[str, int]] = field(default_factory=dict)  # label → split → images

    def stats(self) -> dict[str, object]:
        """JSON-ready summary for the report and the manifest."""
        multi = self.group_sizes[self.group_sizes > 1]
        return {
            "train": len(self.train),
            "validation": len(self.validation),
            "test": len(self.test),
            "duplicates": len(self.duplicates),
            "duplicate_examples": [list(d) for d in self.duplicates[:5]],
            "conflicts": len(self.conflicts),
            "conflict_examples": [[list(x) for x in c] for c in self.conflicts[:5]],
            "groups": len(self.group_sizes),
            "grouped_images": int(multi.sum()),
            "multi_groups": len(multi),
            "largest_group": len(self.largest_group),
            "largest_group_files": [self.largest_group[0], self.largest_group[-1]] if self.largest_group else [],
            "per_class": self.per_class,
        }


def natural_key(name: str) -> tuple[object, ...]:
    """Sort key that puts ``frame-9`` before ``frame-10``."""
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name))


def _area_matrix(n_in: int, n_out: int) -> np.ndarray:
    """[n_out, n_in] weights of an exact area (box) resize along one axis."""
    edges = np.arange(n_out + 1) * (n_in / n_out)
    lo, hi = edges[:-1, None], edges[1:, None]
    px = np.arange(n_in)[None, :]
    overlap = np.clip(np.minimum(hi, px + 1) - np.maximum(lo, px), 0.0, None)
    return (overlap / overlap.sum(axis=1, keepdims=True)).astype(np.float32)


def signatures(images: np.ndarray) -> np.ndarray:
    """[N, 256] float32: 16x16 grey area thumbnails, each minus its mean, divided by its spread (+1)."""
    x = np.asarray(images)
    if x.ndim == 4 and x.shape[3] == 3:
        x = x.astype(np.float32) @ np.asarray([0.299, 0.587, 0.114], np.float32)
    elif x.ndim == 4:
        x = x[..., 0]
    x = x.astype(np.float32)
    mh = _area_matrix(x.shape[1], SIGNATURE_SIZE)
    mw = _area_matrix(x.shape[2], SIGNATURE_SIZE)
    t = np.einsum("ah,nhw,bw->nab", mh, x, mw, optimize=True).reshape(len(x), -1)
    t -= t.mean(axis=1, keepdims=True)
    t /= t.std(axis=1, keepdims=True) + np.float32(1.0)
    return t


class _Groups:
    """Union-find over image indices."""

    def __init__(self, n: int):
        self.parent = np.arange(n)

    def find(self, i: int) -> int:
        root = i
        while self.parent[root] != root:
            root = int(self.parent[root])
        while self.parent[i] != root:
            self.parent[i], i = root, int(self.parent[i])
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def _near_pairs(sig: np.ndarray, limit_rms: float, chunk: int = 2048) -> list[tuple[int, int]]:
    """All pairs (i < j) whose signatures are within ``limit_rms`` (chunked, so memory stays small)."""
    n, d = sig.shape
    sq = (sig * sig).sum(axis=1)
    limit = np.float32(limit_rms * limit_rms * d)
    pairs: list[tuple[int, int]] = []
    for s in range(0, n, chunk):
        block = sig[s : s + chunk]
        d2 = sq[s : s + chunk, None] + sq[None, :] - 2.0 * (block @ sig.T)
        ii, jj = np.nonzero(d2 < limit)
        ii = ii + s
        keep = ii < jj
        pairs.extend(zip(ii[keep].tolist(), jj[keep].tolist()))
    return pairs


def _fraction(sha_hex: str) -> float:
    """A group's place in [0, 1): the sha256 of its smallest member hash (the smallest of many hashes is
    small, so using it directly would push large groups into train)."""
    return int(hashlib.sha256(sha_hex.encode()).hexdigest()[:16], 16) / float(1 << 64)


def plan_split(
    images: np.ndarray, labels: np.ndarray, names: Sequence[str], file_sha256: Sequence[str], class_names: Sequence[str]
) -> SplitPlan:
    """Apply the module's rules to uint8 images at model size; ``names`` are the files' paths relative to the data folder."""
    n = len(images)
    labels = np.asarray(labels, dtype=np.int64)
    order = sorted(range(n), key=lambda i: natural_key(names[i]))
    by_pixels: dict[bytes, list[int]] = {}
    for i in order:
        by_pixels.setdefault(hashlib.sha256(np.ascontiguousarray(images[i]).tobytes()).digest(), []).append(i)
    keep = np.zeros(n, dtype=bool)
    duplicates: list[tuple[str, str]] = []
    conflicts: list[tuple[tuple[str, str], ...]] = []
    for members in by_pixels.values():
        if len({int(labels[i]) for i in members}) > 1:
            conflicts.append(tuple((names[i], class_names[int(labels[i])]) for i in members))
            continue
        keep[members[0]] = True
        duplicates.extend((names[i], names[members[0]]) for i in members[1:])

    counts = np.bincount(labels[keep], minlength=len(class_names))
    few = [f"{class_names[c]!r} has {int(counts[c])}" for c in range(len(class_names)) if counts[c] < MIN_IMAGES_PER_CLASS]
    if few:
        raise DataError(
            f"every class needs at least {MIN_IMAGES_PER_CLASS} distinct images (8 to train, 1 to validate, 1 to test), "
            f"but {', '.join(few)} (after duplicates, conflicts and unreadable files are set aside); "
            "add images to those class folders or remove them"
        )

    groups = _Groups(n)
    sig = signatures(images)
    for c in range(len(class_names)):
        idx = np.asarray([i for i in order if keep[i] and labels[i] == c], dtype=np.int64)
        if len(idx) < 2:
            continue
        s = sig[idx]
        for a, b in _near_pairs(s, NEAR_RMS):
            groups.union(int(idx[a]), int(idx[b]))
        step = np.sqrt(((s[1:] - s[:-1]) ** 2).mean(axis=1))
        for k in np.nonzero(step < BURST_RMS)[0]:
            groups.union(int(idx[k]), int(idx[k + 1]))

    members_of: dict[int, list[int]] = {}
    for i in order:
        if keep[i]:
            members_of.setdefault(groups.find(i), []).append(i)
    group_u = {g: _fraction(min(file_sha256[i] for i in m)) for g, m in members_of.items()}
    split_of = {g: 0 if u < _RANGES[0][1] else 1 if u < _RANGES[1][1] else 2 for g, u in group_u.items()}

    per_class: dict[str, dict[str, int]] = {}
    short: list[str] = []
    for c, label in enumerate(class_names):
        gs = sorted((g for g, m in members_of.items() if labels[m[0]] == c), key=lambda g: group_u[g])
        if len(gs) < MIN_GROUPS_PER_CLASS:
            short.append(f"{label!r} ({sum(len(members_of[g]) for g in gs)} images in {len(gs)})")
            continue
        for target in (0, 2, 1):  # train first, then test, then validation
            if any(split_of[g] == target for g in gs):
                continue
            donor = max((0, 1, 2), key=lambda s: (sum(split_of[g] == s for g in gs), s == 0))
            lo, hi = _RANGES[target]
            # the donor's group whose u lies nearest the target's range
            nearest = min((g for g in gs if split_of[g] == donor), key=lambda g: max(lo - group_u[g], group_u[g] - hi, 0.0))
            split_of[nearest] = target
        per_class[label] = {SPLITS[s]: sum(len(members_of[g]) for g in gs if split_of[g] == s) for s in range(3)}
    if short:
        raise DataError(
            "every class needs at least 3 distinct pictures (one each for training, validation and test), "
            f"but near-identical frames make these classes fewer groups: {', '.join(short)}; "
            "add pictures taken at other moments, angles or places"
        )

    parts: list[list[int]] = [[], [], []]
    for g in sorted(members_of, key=lambda g: group_u[g]):
        parts[split_of[g]].extend(members_of[g])
    sizes = np.asarray(sorted((len(m) for m in members_of.values()), reverse=True), dtype=np.int64)
    largest = max(members_of.values(), key=len) if members_of else []
    return SplitPlan(
        train=np.asarray(parts[0], dtype=np.int64),
        validation=np.asarray(parts[1], dtype=np.int64),
        test=np.asarray(parts[2], dtype=np.int64),
        duplicates=tuple(duplicates),
        conflicts=tuple(conflicts),
        group_sizes=sizes,
        largest_group=tuple(names[i] for i in largest) if len(largest) > 1 else (),
        per_class=per_class,
    )
