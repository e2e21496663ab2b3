"""Camera-like frames: formats as picamera2 delivers them, framing and imaging where the Look says."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from device.camera_scene import (
    DEFAULT_RANGES,
    FORMATS,
    CameraLikeSource,
    Look,
    bgr_to_yuv420,
    centred,
    render_bgr,
    render_frame,
    render_set,
)
from device.errors import SourceError
from device.frames import EndOfSource
from device.preprocess import Preprocessor, gray_plane
from device.scene import yuv420_stride

PLAIN = Look(
    fill=0.8, dx=0.0, dy=0.0, light_on_dark=True, background_bgr=(40.0, 40.0, 40.0), garment_bgr=(220.0, 220.0, 220.0),
    gradient=(0.0, 0.0), texture=0.0, tint_bgr=(1.0, 1.0, 1.0), gamma=1.0, vignette=0.0, blur_px=0.0, noise=0.0,
)


def square(side: int = 28) -> np.ndarray:
    """A full white square image: the garment's extent is the image's."""
    return np.full((side, side), 255, np.uint8)


def extent(mask: np.ndarray) -> tuple[int, int, int, int]:
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])


def test_garment_is_placed_and_sized_as_the_look_says() -> None:
    rng = np.random.default_rng(0)
    look = replace(PLAIN, fill=0.7, dx=0.1, dy=-0.05)
    bgr = render_bgr(square(), look, 640, 480, rng)
    top, bottom, left, right = extent(bgr[..., 1] > 130)
    assert abs((bottom - top + 1) - 0.7 * 480) <= 2 and abs((right - left + 1) - 0.7 * 480) <= 2
    assert abs((left + right + 1) / 2 - (320 + 64)) <= 1.5 and abs((top + bottom + 1) / 2 - (240 - 24)) <= 1.5
    # the displacement is clipped so the garment stays in the frame
    bgr = render_bgr(square(), replace(PLAIN, fill=1.0, dy=0.1), 640, 480, rng)
    top, bottom, _, _ = extent(bgr[..., 1] > 130)
    assert (top, bottom) == (0, 479)


def test_polarity_background_tint_and_noise() -> None:
    rng = np.random.default_rng(1)
    img = square()
    light = render_bgr(img, PLAIN, 160, 120, rng)
    dark = render_bgr(img, replace(PLAIN, light_on_dark=False, background_bgr=(200.0,) * 3, garment_bgr=(30.0,) * 3), 160, 120, rng)
    assert light[60, 80, 1] > light[2, 2, 1] + 100  # light garment on a dark background
    assert dark[60, 80, 1] < dark[2, 2, 1] - 100  # and the other way round
    tinted = render_bgr(img, replace(PLAIN, tint_bgr=(0.8, 1.0, 1.2)), 160, 120, rng)
    assert tinted[2, 2, 0] < tinted[2, 2, 1] < tinted[2, 2, 2]  # B, G, R in that memory order
    noisy = render_bgr(img, replace(PLAIN, noise=5.0), 160, 120, rng)
    assert 3.5 < float(np.std(noisy[:10, :10] - light[:10, :10])) < 6.5
    empty = np.zeros_like(img)
    flat = render_bgr(empty, PLAIN, 160, 120, rng)
    vignetted = render_bgr(empty, replace(PLAIN, vignette=0.3), 160, 120, rng)
    assert vignetted[0, 0, 1] < 0.75 * flat[0, 0, 1] and vignetted[60, 80, 1] == pytest.approx(flat[60, 80, 1], rel=0.01)


def test_blur_softens_the_garment_not_the_background() -> None:
    rng = np.random.default_rng(2)
    stripes = np.zeros((28, 28), np.uint8)
    stripes[:, ::2] = 255
    look = replace(PLAIN, fill=0.6)
    sharp = render_bgr(stripes, look, 640, 480, rng)[240, :, 1]
    soft = render_bgr(stripes, replace(look, blur_px=3.0), 640, 480, rng)[240, :, 1]
    assert float(np.std(soft[250:390])) < 0.8 * float(np.std(sharp[250:390]))
    assert soft[5] == pytest.approx(sharp[5], abs=0.5)


def test_yuv420_has_padded_rows_and_the_luma_of_the_frame() -> None:
    rng = np.random.default_rng(3)
    bgr = render_bgr(square(), replace(PLAIN, tint_bgr=(0.9, 1.0, 1.1)), 112, 84, rng)
    stride = yuv420_stride(112)
    buf = bgr_to_yuv420(bgr, stride)
    assert stride > 112 and buf.shape == (126, stride) and buf.dtype == np.uint8
    assert np.all(buf[:84, 112:] == 0xEE)  # junk in the padding, never zero
    luma = 0.299 * bgr[..., 2] + 0.587 * bgr[..., 1] + 0.114 * bgr[..., 0]
    np.testing.assert_allclose(gray_plane(buf, "YUV420", (112, 84)), luma, atol=0.51)
    pixels, size = render_frame(square(), PLAIN, "YUV420", 112, 84, rng)
    assert size == (112, 84) and pixels.shape == (126, stride)
    pixels, size = render_frame(square(), PLAIN, "BGR", 640, 480, rng)
    assert size is None and pixels.shape == (480, 640, 3) and pixels.dtype == np.uint8


def test_looks_span_wider_framings_than_the_training_crop() -> None:
    rng = np.random.default_rng(4)
    looks = [DEFAULT_RANGES.draw(rng) for _ in range(400)]
    fills = [lk.fill for lk in looks]
    assert min(fills) < 0.63 and max(fills) > 0.97
    assert max(abs(lk.dx) for lk in looks) > 0.12 and max(abs(lk.dy) for lk in looks) > 0.08
    pol = [lk.light_on_dark for lk in looks]
    assert 120 < sum(pol) < 280  # both polarities, about half each
    assert min(lk.noise for lk in looks) >= 1.0 and max(lk.blur_px for lk in looks) > 2.5
    levels = [lk.background_bgr[1] for lk in looks]
    assert min(levels) < 20 and max(levels) > 225


def test_render_set_takes_the_formats_in_turn_and_is_reproducible() -> None:
    imgs = np.stack([square()] * 8)
    a = render_set(imgs, list(range(8)), seed=7)
    b = render_set(imgs, list(range(8)), seed=7)
    assert [(f.stream, f.fmt, f.resolution) for f in a[:4]] == [(s, fm, (w, h)) for s, fm, w, h in FORMATS]
    assert all(np.array_equal(x.pixels, y.pixels) for x, y in zip(a, b))
    assert [f.label for f in a] == list(range(8))
    with pytest.raises(SourceError, match="uint8 images"):
        render_set(np.zeros((2, 28, 28), np.float32))


def test_a_centred_full_height_frame_preprocesses_to_the_image() -> None:
    """With the framing taken away, the device's centre crop sees the garment as trained."""
    rng = np.random.default_rng(5)
    img = np.zeros((28, 28), np.uint8)
    img[3:25, 6:22] = 255  # Fashion-MNIST images reach 255: the preprocessing stretches to it
    img[8:20, 10:18] = 120
    look = replace(centred(DEFAULT_RANGES).draw(rng), noise=1.0, texture=0.0, gradient=(0.0, 0.0), vignette=0.0, gamma=1.0, blur_px=0.0)
    pixels, size = render_frame(img, look, "BGR", 640, 480, rng)
    x = Preprocessor().image(pixels, "BGR", size)
    assert float(np.mean(np.abs(x - img / 255.0))) < 0.06


def test_camera_like_source_cycles_labelled_frames() -> None:
    imgs = np.stack([square()] * 3)
    src = CameraLikeSource(imgs, [4, 5, 6], FORMATS[1], loop=False)
    frames = [src.read() for _ in range(3)]
    assert [f.label for f in frames] == [4, 5, 6] and all(f.fmt == "YUV420" and f.size == (112, 84) for f in frames)
    with pytest.raises(EndOfSource):
        src.read()
    with pytest.raises(SourceError, match="golden"):
        CameraLikeSource.from_golden("/nonexistent/golden.npz")


@pytest.mark.slow
@pytest.mark.parametrize("source, fmt", [("camera-like", "YUV420"), ("camera-like-main", "BGR")])
def test_device_bench_runs_on_camera_like_frames(artifacts: Path, source: str, fmt: str) -> None:
    from device.bench import format_text, make_source, run_bench
    from device.frames import DEFAULT_CAMERA
    from device.manifest import load_manifest

    manifest = load_manifest(artifacts)
    src = make_source(source, manifest, DEFAULT_CAMERA, loop=False)
    assert src.read().fmt == fmt
    r = run_bench(manifest, "int8", source, runs=100 if fmt == "BGR" else None)
    assert r.source == source and r.labelled_frames == (100 if fmt == "BGR" else 1000)
    assert r.frame_accuracy is not None and 0.0 < r.frame_accuracy <= 1.0
    text = format_text(r)
    assert "camera-like frames" in text and ("gap" in text) == (fmt == "YUV420")
