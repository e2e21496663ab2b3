"""crop: object (issue 12's framing): the object's box against the background, its longer side filling the frame, centred."""

from __future__ import annotations

import numpy as np
import pytest

from device import scene
from device.engine import open_engine
from device.frames import CameraConfig
from device.manifest import Manifest, Normalize, Preprocess
from device.preprocess import Preprocessor, model_input

OBJECT = Preprocess(crop="object")
LORES = (112, 84)  # what CameraConfig.for_contract gives a 28x28 grey model with crop object
FULL, SMALL, TINY = (0.5, 0.5, 1.0), (0.38, 0.44, 0.6), (0.63, 0.56, 0.42)  # centre x, centre y, height fraction


def lores_frame(img: np.ndarray, place: tuple[float, float, float], seed: int = 0, **kw: float) -> np.ndarray:
    """A lores YUV420 frame (padded rows) of a grey garment printed on paper at ``place`` in a 640x480 field of view."""
    photo = scene.render_gray(img, *LORES, np.random.default_rng(seed), (640, 480), place)
    if kw.get("noise"):
        photo = photo + np.random.default_rng(seed + 1).normal(0.0, kw["noise"], photo.shape)
    if kw.get("vignette"):  # an extra fall-off towards the corners (the Pi ISP corrects lens shading; 20 % is pessimistic)
        yy, xx = np.mgrid[0 : LORES[1], 0 : LORES[0]]
        r2 = ((yy - LORES[1] / 2) / (LORES[1] / 2)) ** 2 + ((xx - LORES[0] / 2) / (LORES[0] / 2)) ** 2
        photo = photo * (1.0 - kw["vignette"] * r2 / 2.0)
    if kw.get("light_on_dark"):  # a light garment on dark cloth: the other polarity
        photo = 255.0 - photo - 20.0
    return scene.to_yuv420(np.clip(photo, 0, 255), scene.yuv420_stride(LORES[0]), "sYCC")


def framed(p: Preprocessor, frame: np.ndarray) -> np.ndarray:
    return p.image(frame, "YUV420", LORES, "sYCC")


@pytest.fixture(scope="module")
def garments(manifest: Manifest) -> np.ndarray:
    """Twenty Fashion-MNIST test images (the golden set's first)."""
    with np.load(manifest.golden_path()) as z:
        return z["images"][:20]


def test_a_garment_at_60_percent_off_centre_frames_like_one_filling_the_frame(garments: np.ndarray) -> None:
    obj, centre = Preprocessor(OBJECT), Preprocessor()
    diffs, centre_diffs = [], []
    for img in garments:
        full = framed(obj, lores_frame(img, FULL))
        for place in (SMALL, TINY):
            diffs.append(np.abs(framed(obj, lores_frame(img, place, seed=1)) - full).mean())
        centre_diffs.append(np.abs(framed(centre, lores_frame(img, SMALL, seed=1)) - framed(centre, lores_frame(img, FULL))).mean())
        assert obj.last_box is not None
    # measured: 0.034 (object) against 0.255 (center) mean absolute difference, in [0, 1] pixel units
    assert float(np.mean(diffs)) < 0.05 and float(np.max(diffs)) < 0.1, (np.mean(diffs), np.max(diffs))
    assert float(np.mean(centre_diffs)) > 0.15  # the same frames centre-cropped: the framing is what differs


def test_the_box_is_where_the_garment_is(garments: np.ndarray) -> None:
    p = Preprocessor(OBJECT)
    for img in garments[:8]:
        rows, cols = np.flatnonzero(img.max(axis=1) > 40), np.flatnonzero(img.max(axis=0) > 40)
        side = SMALL[2] * LORES[1]  # the 28x28 image's side in lores pixels
        x0 = SMALL[0] * LORES[0] - side / 2
        y0 = SMALL[1] * LORES[1] - side / 2
        want = (x0 + cols[0] * side / 28, y0 + rows[0] * side / 28, x0 + (cols[-1] + 1) * side / 28, y0 + (rows[-1] + 1) * side / 28)
        framed(p, lores_frame(img, SMALL))
        assert p.last_box is not None
        assert np.abs(np.subtract(p.last_box, want)).max() <= 3.0, (p.last_box, want)  # lores pixels, blur and trim included


def test_both_polarities_noise_vignetting_and_tint_frame_the_same(garments: np.ndarray) -> None:
    p = Preprocessor(OBJECT)
    for img in garments[:10]:
        ref = framed(p, lores_frame(img, FULL))
        for kw in ({"light_on_dark": 1.0}, {"noise": 8.0}, {"vignette": 0.2}, {"light_on_dark": 1.0, "vignette": 0.2, "noise": 5.0}):
            got = framed(p, lores_frame(img, SMALL, seed=3, **kw))
            assert p.last_box is not None
            assert np.abs(got - ref).mean() < 0.08, (kw, np.abs(got - ref).mean())
            assert p.last_inverted == (not kw.get("light_on_dark"))  # Fashion-MNIST is light on dark
    # a strongly tinted R,G,B main-stream frame (B,G,R bytes) of a colour model's framing
    img = garments[0]
    photo = scene.render_gray(img, 320, 240, np.random.default_rng(0), (640, 480), SMALL)[..., None] * np.array([1.3, 1.0, 0.7])
    bgr = scene.to_bgr888(np.clip(photo, 0, 255))
    got = Preprocessor(OBJECT).image(bgr, "BGR")
    assert np.abs(got - framed(p, lores_frame(img, FULL))).mean() < 0.08


def test_a_blank_frame_has_no_box_and_stays_background() -> None:
    rng = np.random.default_rng(0)
    for frame in (np.full((84, 112), 150, np.uint8),  # flat: nothing to divide by
                  np.clip(rng.normal(150, 3, (84, 112)), 0, 255).astype(np.uint8),  # sensor noise only
                  np.zeros((84, 112), np.uint8)):
        for contract in (OBJECT, Preprocess(crop="object", color="rgb")):
            p = Preprocessor(contract)
            x = p.image(frame, "GRAY")
            assert p.last_box is None
            assert np.isfinite(x).all() and x.max() == 0.0  # light on dark: all background, noise not stretched


def test_an_object_at_the_edge_is_centred_on_background() -> None:
    img = np.zeros((28, 28), np.uint8)
    img[4:24, 6:22] = 200
    p = Preprocessor(OBJECT)
    x = framed(p, lores_frame(img, (0.08, 0.5, 0.9)))  # the garment's left part is outside the field of view
    assert p.last_box is not None and p.last_box[0] == 0.0  # the box starts at the frame's edge
    assert x.shape == (28, 28) and np.isfinite(x).all()
    assert x[:, :3].max() < 0.1 and x[:, -3:].max() < 0.1  # the window beyond the frame is background
    assert x[8:20, 9:19].mean() > 0.6  # the visible part is there, centred


def test_colour_object_through_the_lores_yuv_stream() -> None:
    # a red disc and a green bar on a blue-grey backdrop, through lores YUV420 (Y, U and V grids)
    yy, xx = np.mgrid[0:96, 0:96]
    img = np.zeros((96, 96, 3), np.uint8)
    img[...] = (90, 110, 140)
    img[((yy - 40) ** 2 + (xx - 50) ** 2) < 500] = (220, 30, 30)
    img[70:80, 20:80] = (20, 200, 40)
    contract = Preprocess(size=(64, 64), color="rgb", crop="object", contrast="none", polarity="any",
                          normalize=Normalize(range=(0.0, 255.0)))
    config = CameraConfig.for_contract(contract)
    assert config.lores_size == (172, 128)
    outs = []
    for place in (FULL, SMALL):
        w, h = config.lores_size
        photo = scene.render(img, w, h, np.random.default_rng(0), config.main_size, place)
        buf = scene.to_yuv420(photo, scene.yuv420_stride(w), "sYCC")
        p = Preprocessor(contract)
        outs.append(p.image(buf, "YUV420", (w, h), "sYCC"))
        assert p.last_box is not None
    assert np.abs(outs[0] - outs[1]).mean() < 12.0, np.abs(outs[0] - outs[1]).mean()  # 0..255 units
    assert outs[1][26, 34, 0] > 150 and outs[1][26, 34, 1] < 90  # the red disc, where it belongs


@pytest.mark.slow
def test_object_framing_keeps_the_accuracy_of_off_centre_smaller_garments(manifest: Manifest) -> None:
    engine = open_engine(manifest, "int8", threads=1)
    with np.load(manifest.golden_path()) as z:
        images, labels = z["images"][:300], z["labels"][:300]
    x = np.zeros(engine.input_spec.shape, np.int8)
    raw = np.mean([int(np.argmax(engine.run(model_input(im[None], manifest.preprocess, engine.input_spec)))) == y
                   for im, y in zip(images, labels)])
    acc = {}
    for crop in ("object", "center"):
        p = Preprocessor(Preprocess(crop=crop), engine.input_spec)
        hits = 0
        for i, (im, y) in enumerate(zip(images, labels)):
            place = (0.35 + 0.3 * ((i * 7) % 10) / 10, 0.4 + 0.2 * ((i * 3) % 10) / 10, 0.5 + 0.4 * ((i * 11) % 10) / 10)
            p.into(lores_frame(im, place, seed=i), "YUV420", LORES, x, "sYCC")
            hits += int(np.argmax(engine.run(x)) == y)
        acc[crop] = hits / len(images)
    assert acc["object"] >= raw - 0.04, (acc, raw)
    assert acc["object"] >= acc["center"] + 0.2, acc
