"""Training augmentation: exact pixel copies for clean images, camera effects for the rest, any image size."""

from __future__ import annotations

import numpy as np
import pytest

from host.augment import AugmentConfig
from host.errors import ConfigError
from host.model import ModelConfig
from host.train import TrainConfig, make_dataset, train


def garments(n: int, h: int = 28, w: int = 28, c: int = 1, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = np.zeros((n, h, w, c), np.uint8)
    x[:, h // 6 : h - h // 6, w // 4 : w - w // 3] = rng.integers(60, 256, (n, h - 2 * (h // 6), w - w // 4 - w // 3, c), dtype=np.uint8)
    return x


def batch(x: np.ndarray, aug: AugmentConfig, seed: int = 42) -> tuple[np.ndarray, np.ndarray]:
    """One augmented batch and the clean images it was made from, in the same order."""
    cfg = TrainConfig(batch_size=len(x), augment=aug, seed=seed)
    y = np.arange(len(x))  # one class per image: the label says which image an output came from
    a, labels = next(iter(make_dataset(x, y, cfg, training=True, num_classes=len(x))))
    order = labels.numpy().argmax(axis=1)
    assert sorted(order.tolist()) == y.tolist()
    return a.numpy(), order


def copies_with_shift(img: np.ndarray, out: np.ndarray, most: int) -> bool:
    """Whether ``out`` is ``img`` (or its mirror) moved by whole pixels, zeros shifted in."""
    for src in (img, img[:, ::-1]):
        for dy in range(-most, most + 1):
            for dx in range(-most, most + 1):
                moved = np.zeros_like(src)
                h, w = src.shape[:2]
                ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
                xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
                moved[yd, xd] = src[ys, xs]
                if np.allclose(moved, out, atol=1e-6):
                    return True
    return False


def test_clean_images_are_exact_shifted_or_mirrored_copies() -> None:
    x = garments(32)
    a, order = batch(x, AugmentConfig(camera_fraction=0.0))
    src = x.astype(np.float32)[order] / 255.0
    assert all(copies_with_shift(s, out, 2) for s, out in zip(src, a))
    assert sum(not np.allclose(out, s) for s, out in zip(src, a)) > 8  # most were moved or mirrored


def test_camera_images_are_resampled_noisy_and_in_range() -> None:
    x = garments(64)
    a, order = batch(x, AugmentConfig(camera_fraction=1.0))
    assert a.min() >= 0.0 and a.max() <= 1.0
    src = x.astype(np.float32)[order] / 255.0
    # no output is an exact whole-pixel copy any more: every one was resampled, blurred or noised
    assert not any(copies_with_shift(s, out, 2) for s, out in zip(src[:16], a[:16]))
    # the background (zeros in every source) is lifted somewhere by noise, gradients or a pedestal
    assert float(np.mean(a[:, :3, :3] > 0.0)) > 0.3


def test_same_seed_same_batches_other_seed_other_batches() -> None:
    x = garments(16)
    aug = AugmentConfig(camera_fraction=0.5)
    a1, o1 = batch(x, aug, seed=1)
    a2, o2 = batch(x, aug, seed=1)
    a3, _ = batch(x, aug, seed=2)
    np.testing.assert_array_equal(a1, a2)
    assert (o1 == o2).all() and not np.allclose(a1, a3)


@pytest.mark.parametrize("h, w, c", [(20, 24, 3), (64, 48, 1)])
def test_any_size_and_channel_count(h: int, w: int, c: int) -> None:
    x = garments(8, h, w, c)
    a, _ = batch(x, AugmentConfig(camera_fraction=0.5))
    assert a.shape == (8, h, w, c) and a.dtype == np.float32


def test_recipe_trains_other_shapes_and_class_counts() -> None:
    """``train`` holds no Fashion-MNIST constant: a 3-class RGB 20x24 set trains with camera augmentation."""
    x = garments(96, 20, 24, 3, seed=3)
    y = np.arange(96) % 3
    cfg = TrainConfig(epochs=1, batch_size=32, augment=AugmentConfig(camera_fraction=0.5), model=ModelConfig(dense_units=8))
    r = train(x[:64], y[:64], x[64:], y[64:], cfg, progress=False)
    out = np.asarray(r.model(x[:2].astype(np.float32) / 255.0))
    assert out.shape == (2, 3) and r.epochs_run == 1


@pytest.mark.parametrize(
    "kw, message",
    [({"camera_fraction": 1.5}, "camera_fraction"), ({"shift": 0.6}, "shift"), ({"blur": 0.4}, "blur"), ({"scale": (1.1, 0.9)}, "scale")],
)
def test_bad_augmentation_settings_are_refused(kw: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        AugmentConfig(**kw)  # type: ignore[arg-type]


def test_random_erasing_blanks_a_rectangle() -> None:
    x = np.full((32, 28, 28, 1), 200, np.uint8)
    a, _ = batch(x, AugmentConfig(flip=False, shift=0.0, erase=1.0, erase_size=(0.3, 0.3)))
    blank = a[..., 0] == 0.0
    assert blank.any(axis=(1, 2)).all()  # every image lost a patch
    sides = [(int(b.any(axis=1).sum()), int(b.any(axis=0).sum())) for b in blank]
    assert all(h <= 10 and w <= 10 for h, w in sides) and max(h for h, _ in sides) >= 8  # about 0.3 x 28, cut at the edges
    assert np.all(a[~blank] == pytest.approx(200 / 255))
