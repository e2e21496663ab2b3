"""The content-hash split on real Fashion-MNIST images: proportions, determinism, duplicates, conflicts, bursts."""

from __future__ import annotations

import hashlib
import io

import numpy as np
import pytest
from imagefolders import burst, fashion, needs_idx

from host.errors import DataError
from host.split import NEAR_RMS, natural_key, plan_split, signatures

pytestmark = needs_idx
CLASSES = ("a", "b", "c")


def sha(img: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(img).tobytes()).hexdigest()


def area28(frame: np.ndarray) -> np.ndarray:
    """A camera frame area-resized to 28x28 with PIL's box filter (an independent resizer)."""
    from PIL import Image

    return np.asarray(Image.fromarray(frame).resize((28, 28), Image.BOX))


def three_classes(per_class: int, start: int = 0) -> tuple[np.ndarray, np.ndarray, list[str]]:
    x, y = fashion("train")
    imgs, labels, names = [], [], []
    for k, c in enumerate((0, 1, 7)):
        sel = x[start:][y[start:] == c][:per_class]
        imgs += list(sel)
        labels += [k] * len(sel)
        names += [f"{CLASSES[k]}/img{start + i}.png" for i in range(len(sel))]
    return np.stack(imgs)[..., None], np.asarray(labels), names


def assignment(plan, names: list[str]) -> dict[str, str]:  # type: ignore[no-untyped-def]
    out = {}
    for split in ("train", "validation", "test"):
        for i in getattr(plan, split):
            out[names[int(i)]] = split
    return out


def test_80_10_10_whatever_the_names_and_order() -> None:
    x, y, names = three_classes(1000)
    shas = [sha(i) for i in x]
    plan = plan_split(x, y, names, shas, CLASSES)
    n = len(x)
    assert abs(len(plan.train) / n - 0.8) < 0.03 and abs(len(plan.validation) / n - 0.1) < 0.02 and abs(len(plan.test) / n - 0.1) < 0.02
    assert sorted(np.concatenate([plan.train, plan.validation, plan.test]).tolist()) == list(range(n))
    for label, c in plan.per_class.items():
        assert min(c.values()) > 50, (label, c)
    by_content = {shas[int(i)]: s for s, idx in (("train", plan.train), ("validation", plan.validation), ("test", plan.test)) for i in idx}
    order = np.random.default_rng(3).permutation(n)

    def split_by_content(names_in_order: list[str]) -> dict[str, str]:
        p = plan_split(x[order], y[order], names_in_order, [shas[i] for i in order], CLASSES)
        return {shas[int(order[int(j)])]: s for s, idx in (("train", p.train), ("validation", p.validation), ("test", p.test)) for j in idx}

    # listed in another order, same names: exactly the same split
    assert split_by_content([names[i] for i in order]) == by_content
    # renamed: only neighbours in name order can form new burst groups; almost everything stays
    renamed = split_by_content([f"{CLASSES[y[i]]}/IMG_{k:04d}.jpg" for k, i in enumerate(order)])
    assert sum(renamed[k] == v for k, v in by_content.items()) >= 0.97 * n


def test_adding_images_moves_an_old_one_only_to_join_its_new_twin() -> None:
    x, y, names = three_classes(300)
    more_x, more_y, more_names = three_classes(300, start=20_000)
    before = assignment(plan_split(x, y, names, [sha(i) for i in x], CLASSES), names)
    all_x, all_y, all_names = np.concatenate([x, more_x]), np.concatenate([y, more_y]), names + more_names
    after = assignment(plan_split(all_x, all_y, all_names, [sha(i) for i in all_x], CLASSES), all_names)
    moved = [k for k in before if after[k] != before[k]]
    assert len(moved) <= 3  # Fashion-MNIST holds a few near-identical product photos
    sig = signatures(all_x)
    for k in moved:  # each moved to stay with a near-identical picture that arrived
        i = all_names.index(k)
        rms = np.sqrt(((sig[len(x):] - sig[i]) ** 2).mean(axis=1))
        assert rms.min() < NEAR_RMS and after[more_names[int(rms.argmin())]] == after[k]


def test_duplicates_count_once_and_conflicts_are_left_out() -> None:
    x, y, names = three_classes(40)
    # a copy in its own class, under another name, and a picture of class a also filed under c
    x2 = np.concatenate([x, x[3:4], x[5:6]])
    y2 = np.concatenate([y, [0], [2]])
    names2 = [*names, "a/copy-of-3.png", "c/misfiled.png"]
    plan = plan_split(x2, y2, names2, [sha(i) for i in x2], CLASSES)
    kept = set(np.concatenate([plan.train, plan.validation, plan.test]).tolist())
    # (dropped, kept): the first in natural name order stays ("a/copy-of-3" sorts before "a/img3")
    assert plan.duplicates == ((names[3], "a/copy-of-3.png"),)
    assert len(plan.conflicts) == 1 and dict(plan.conflicts[0]) == {names[5]: "a", "c/misfiled.png": "c"}
    assert len(x) in kept and 3 not in kept
    assert 5 not in kept and len(x) + 1 not in kept  # both sides of the conflict go
    assert len(kept) == len(x2) - 3
    assert plan.stats()["duplicates"] == 1 and plan.stats()["conflicts"] == 1


def test_bursts_never_straddle_the_split() -> None:
    x, y = fashion("test")
    rng = np.random.default_rng(7)
    imgs, labels, names, burst_of = [], [], [], []
    for k, c in enumerate((0, 1, 7)):
        garments = x[y == c][:60]
        for b, g in enumerate(garments[:20]):  # 20 bursts of 12 frames per class, named as a camera does
            for f, frame in enumerate(burst(g, 12, rng), start=1):
                imgs.append(area28(frame))
                labels.append(k)
                names.append(f"{CLASSES[k]}/shot{b}-frame-{f}.png")  # frame-9 comes before frame-10
                burst_of.append((k, b))
        for i, g in enumerate(garments[20:]):  # and 40 single pictures
            imgs.append(g)
            labels.append(k)
            names.append(f"{CLASSES[k]}/single{i}.png")
            burst_of.append(None)
    arr = np.stack(imgs)[..., None]
    plan = plan_split(arr, np.asarray(labels), names, [sha(i) for i in arr], CLASSES)
    split_of = assignment(plan, names)
    bursts: dict[tuple[int, int], set[str]] = {}
    for name, b in zip(names, burst_of):
        if b is not None:
            bursts.setdefault(b, set()).add(split_of[name])
    assert all(len(s) == 1 for s in bursts.values()), "a burst straddles the split"
    # and bursts, as groups of any size, reach every split in about the right proportion
    in_train = sum(next(iter(s)) == "train" for s in bursts.values())
    assert len({next(iter(s)) for s in bursts.values()}) == 3 and 36 <= in_train <= 56
    # every burst became a group of its 12 frames (two look-alike trouser bursts may chain into one)
    assert plan.stats()["multi_groups"] >= 55 and plan.stats()["grouped_images"] <= 720 + 12
    assert 12 <= plan.group_sizes.max() <= 24


def test_a_re_encoded_copy_anywhere_in_the_class_is_kept_with_its_original() -> None:
    from PIL import Image

    x, y, names = three_classes(200)
    buf = io.BytesIO()
    Image.fromarray(np.kron(x[10, ..., 0], np.ones((4, 4), np.uint8))).save(buf, "JPEG", quality=80)
    copy = area28(np.asarray(Image.open(io.BytesIO(buf.getvalue()))))
    assert not np.array_equal(copy, x[10, ..., 0])  # not a byte-identical duplicate
    x2 = np.concatenate([x, copy[None, ..., None]])
    y2 = np.concatenate([y, [0]])
    names2 = [*names, "a/zzz-exported-copy.jpg"]  # far from the original in name order
    split_of = assignment(plan_split(x2, y2, names2, [sha(i) for i in x2], CLASSES), names2)
    assert split_of["a/zzz-exported-copy.jpg"] == split_of[names[10]]


def test_distinct_pictures_are_almost_never_grouped() -> None:
    x, y, names = three_classes(1000)
    plan = plan_split(x, y, names, [sha(i) for i in x], CLASSES)
    assert plan.stats()["grouped_images"] < 0.1 * len(x)  # mostly pairs of look-alike trousers
    assert plan.group_sizes.max() <= 6


def test_a_small_class_still_reaches_every_split() -> None:
    x, y, names = three_classes(10)
    plan = plan_split(x, y, names, [sha(i) for i in x], CLASSES)
    for label, c in plan.per_class.items():
        assert c["train"] >= 1 and c["validation"] >= 1 and c["test"] >= 1, (label, c)


def test_too_few_images_names_the_classes() -> None:
    x, y, names = three_classes(40)
    keep = np.concatenate([np.nonzero(y == 0)[0][:9], np.nonzero(y == 1)[0], np.nonzero(y == 2)[0][:4]])
    with pytest.raises(DataError) as e:
        plan_split(x[keep], y[keep], [names[i] for i in keep], [sha(x[i]) for i in keep], CLASSES)
    msg = str(e.value)
    assert "'a' has 9" in msg and "'c' has 4" in msg and "'b'" not in msg and "at least 10" in msg


def test_a_class_that_is_one_burst_is_refused() -> None:
    x, y, names = three_classes(40)
    rng = np.random.default_rng(1)
    frames = [area28(f) for f in burst(x[int(np.nonzero(y == 2)[0][0]), ..., 0], 30, rng)]
    keep = np.nonzero(y != 2)[0]
    x2 = np.concatenate([x[keep], np.stack(frames)[..., None]])
    y2 = np.concatenate([y[keep], [2] * 30])
    names2 = [names[i] for i in keep] + [f"c/frame-{i}.png" for i in range(30)]
    with pytest.raises(DataError, match=r"'c' \(30 images in 1\)"):
        plan_split(x2, y2, names2, [sha(i) for i in x2], CLASSES)


def test_natural_order() -> None:
    assert sorted(["f-10.png", "f-9.png", "f-100.png", "f-1.png"], key=natural_key) == ["f-1.png", "f-9.png", "f-10.png", "f-100.png"]
