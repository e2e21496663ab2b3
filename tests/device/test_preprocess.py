"""Preprocessing: channel order, stride, polarity, quantisation round trip, bad frames."""

from __future__ import annotations

import numpy as np
import pytest

from device import scene
from device.errors import FrameError
from device.frames import CameraConfig, SyntheticSource
from device.manifest import Normalize, Preprocess, TensorSpec
from device.preprocess import Preprocessor, gray_plane, preprocess
from device.quant import to_input, to_scores

INT8 = TensorSpec((1, 28, 28, 1), "int8", 1 / 255, -128)


def garment(seed: int = 0) -> np.ndarray:
    """A Fashion-MNIST-like image: light blob on black, max 255."""
    rng = np.random.default_rng(seed)
    img = np.zeros((28, 28), np.uint8)
    img[4:24, 8:20] = rng.integers(60, 256, size=(20, 12))
    img[10, 10] = 255
    return img


def test_raw_28x28_image_passes_through_unchanged() -> None:
    img = garment()
    x = preprocess(img, "GRAY")
    np.testing.assert_allclose(x, img / 255.0, atol=1e-6)
    np.testing.assert_array_equal(preprocess(img, "GRAY", spec=INT8), to_input(img / 255.0, INT8))


RAW = Preprocess(contrast="none", polarity="any", normalize=Normalize(range=(0.0, 255.0)))  # pixel values as they are


def test_bgr_order_is_honoured() -> None:
    # a pure-red picture: R=200 → grey 0.299*200; read as RGB it would be 0.114*200
    bgr = np.zeros((56, 56, 3), np.uint8)
    bgr[..., 2] = 200
    bgr[20:36, 20:36, 2] = 40  # a dark square in the middle so the stretch has a range
    x = Preprocessor(RAW).image(bgr, "BGR")
    assert x[0, 0] == pytest.approx(0.299 * 200, abs=0.01)
    assert Preprocessor(RAW).image(bgr, "RGB")[0, 0] == pytest.approx(0.114 * 200, abs=0.01)
    # same picture in every memory order gives the same model input
    rgb = bgr[..., ::-1].copy()
    bgrx = np.concatenate([bgr, np.full((56, 56, 1), 7, np.uint8)], axis=2)
    p = Preprocessor(invert="off")
    for pixels, fmt in ((rgb, "RGB"), (bgrx, "BGRX"), (np.ascontiguousarray(bgrx[..., [2, 1, 0, 3]]), "RGBX")):
        np.testing.assert_allclose(p.image(pixels, fmt), p.image(bgr, "BGR"), atol=1e-6)


def test_yuv420_row_stride_is_honoured() -> None:
    rng = np.random.default_rng(1)
    gray = rng.integers(0, 256, size=(84, 112)).astype(np.float32)
    stride = scene.yuv420_stride(112)
    assert stride > 112  # the buffer is padded, with junk bytes in the padding
    buf = scene.to_yuv420(gray, stride, "sYCC")  # full range: Y is the photo's luma
    assert buf.shape == (126, stride) and buf[0, 112:].min() == 0xEE
    plane = gray_plane(buf, "YUV420", (112, 84))
    np.testing.assert_array_equal(plane, gray.astype(np.uint8))
    p = Preprocessor()
    np.testing.assert_allclose(p.image(buf, "YUV420", (112, 84), "sYCC"), p.image(gray.astype(np.uint8), "GRAY"), atol=1e-6)
    # reading the buffer as if it were unpadded gives a different (wrong) image
    flat = buf.reshape(-1)[: 84 * 112].reshape(84, 112)
    assert not np.allclose(p.image(flat, "GRAY"), p.image(gray.astype(np.uint8), "GRAY"), atol=0.05)


def test_limited_range_y_is_expanded_for_a_contract_without_contrast_stretch() -> None:
    gray = np.full((84, 112), 200.0, np.float32)
    gray[30:50, 40:70] = 40.0
    x = {cs: Preprocessor(RAW).image(scene.to_yuv420(gray, 128, cs), "YUV420", (112, 84), cs) for cs in ("sYCC", "SMPTE170M")}
    assert x["SMPTE170M"][0, 0] == pytest.approx(200.0, abs=1.5) and x["SMPTE170M"][14, 14] == pytest.approx(40.0, abs=1.5)
    np.testing.assert_allclose(x["SMPTE170M"], x["sYCC"], atol=1.5)
    # read as full range, limited-range Y would lose a sixth of its contrast
    wrong = Preprocessor(RAW).image(scene.to_yuv420(gray, 128, "SMPTE170M"), "YUV420", (112, 84), "sYCC")
    assert wrong[0, 0] - wrong[14, 14] < 0.9 * (200 - 40)


def test_polarity_auto_inverts_a_photo_of_a_dark_garment_on_light_background() -> None:
    img = garment(2)
    src = SyntheticSource(img[None], [0], CameraConfig())
    f = src.read()
    p = Preprocessor(spec=None, invert="auto")
    x = p.image(f.pixels, f.fmt, f.size)
    assert p.last_inverted
    assert x.min() >= 0.0 and x.max() <= 1.0
    ref = img / 255.0
    assert np.corrcoef(x.ravel(), ref.ravel())[0, 1] > 0.97
    assert abs(float(x.mean()) - float(ref.mean())) < 0.05
    # forcing it off reads the light background as the garment's far end: the garment is lost
    off = Preprocessor(invert="off").image(f.pixels, f.fmt, f.size)
    assert not np.corrcoef(off.ravel(), ref.ravel())[0, 1] > 0.5
    # a plain Fashion-MNIST image is not inverted
    p.image(img, "GRAY")
    assert not p.last_inverted


def test_polarity_contract_dark_on_light_flips_the_decision() -> None:
    img = garment(3)
    p = Preprocessor(Preprocess(polarity="dark_on_light"))
    x = p.image(img, "GRAY")
    assert p.last_inverted
    np.testing.assert_allclose(x, 1.0 - img / 255.0, atol=1e-6)


def test_quantisation_round_trip_is_within_half_a_step() -> None:
    x = np.linspace(0, 1, 28 * 28, dtype=np.float32).reshape(28, 28)
    q = to_input(x, INT8)
    assert q.dtype == np.int8 and q.shape == (1, 28, 28, 1)
    back = to_scores(q, INT8).reshape(28, 28)
    assert np.abs(back - x).max() <= float(INT8.scale or 0) / 2 + 1e-6


def test_into_matches_tensor_for_int8_and_float() -> None:
    src = SyntheticSource(np.stack([garment(4), garment(5)]), None, CameraConfig())
    for spec in (INT8, TensorSpec((1, 28, 28, 1), "float32")):
        p = Preprocessor(spec=spec)
        f = src.read()
        out = np.zeros(spec.shape, np.dtype(spec.dtype))
        p.into(f.pixels, f.fmt, f.size, out)
        np.testing.assert_array_equal(out, p.tensor(f.pixels, f.fmt, f.size))


def test_any_size_any_polarity_image() -> None:
    img = garment(6)
    big = np.kron(img, np.ones((9, 9), np.uint8))[:, :250]  # 252x250, not a multiple of 28 wide
    assert Preprocessor().image(255 - big, "GRAY").shape == (28, 28)
    tiny = img[::2, ::2]  # 14x14: upscaled
    assert Preprocessor().image(tiny, "GRAY").shape == (28, 28)


@pytest.mark.parametrize(
    ("pixels", "fmt", "size", "msg"),
    [
        (np.zeros((28, 28), np.float32), "GRAY", None, "uint8"),
        (np.zeros((28, 28, 3), np.uint8), "GRAY", None, "[H, W]"),
        (np.zeros((28, 28), np.uint8), "BGR", None, "[H, W, 3]"),
        (np.zeros((84, 112), np.uint8), "YUV420", (112, 84), "[126, even stride >= 112]"),
        (np.zeros((126, 128), np.uint8), "YUV420", None, "width, height"),
        (np.zeros((28, 28), np.uint8), "HSV", None, "unknown pixel format"),
    ],
)
def test_bad_frames_raise_frame_error_saying_what_was_expected(pixels: np.ndarray, fmt: str, size: object, msg: str) -> None:
    with pytest.raises(FrameError, match=r"Got|needs|unknown") as e:
        Preprocessor().image(pixels, fmt, size)  # type: ignore[arg-type]
    assert msg in str(e.value)


# ---------------------------------------------------------------- the per-frame fast path


def _frames() -> list[tuple[np.ndarray, str, object]]:
    """Frames of several geometries: lores YUV420 (3x3 and 4x4 blocks), grey 2x2, strided views, colour."""
    imgs = np.stack([garment(s) for s in range(7, 10)])
    out: list[tuple[np.ndarray, str, object]] = []
    for cfg in (CameraConfig(), CameraConfig(lores_size=(150, 112)), CameraConfig(main_size=(320, 240), stream="main")):
        src = SyntheticSource(imgs, None, cfg)
        out += [(f.pixels, f.fmt, f.size) for f in (src.read() for _ in range(3))]
    rng = np.random.default_rng(3)
    grey = rng.integers(0, 256, size=(56, 74)).astype(np.uint8)  # 2x2 blocks
    padded = rng.integers(0, 256, size=(84, 200)).astype(np.uint8)[:, 10:122]  # not C-contiguous
    out += [(grey, "GRAY", None), (255 - grey, "GRAY", None), (padded, "GRAY", None), (garment(11), "GRAY", None)]
    return out


def _layouts(picture: np.ndarray) -> list[tuple[str, np.ndarray, str, object]]:
    """One grey picture in the memory layouts a frame arrives in: the same pixels every time."""
    h, w = picture.shape
    wide = np.full((h, w + 37), 99, np.uint8)
    wide[:, 5 : 5 + w] = picture
    out = [
        ("contiguous", picture, "GRAY", None),
        ("row-strided view", wide[:, 5 : 5 + w], "GRAY", None),
        ("column-major", np.asfortranarray(picture), "GRAY", None),
        ("[H, W, 1]", picture[:, :, None], "GRAY", None),
        ("reversed twice", picture[::-1, ::-1].copy()[::-1, ::-1], "GRAY", None),
    ]
    if h % 2 == 0 and w % 2 == 0:
        stride = scene.yuv420_stride(w)
        yuv = np.full((h * 3 // 2, stride), 17, np.uint8)  # junk in the padding and the chroma
        yuv[:h, :w] = picture
        out.append(("YUV420 Y plane", yuv, "YUV420", (w, h)))
    return out
def exact_area_means(frame: np.ndarray, window: tuple[int, int, int, int], out: int) -> np.ndarray:
    """Reference: the mean of ``frame`` (float64, [h, w]) over each output cell of an integer window, by definition."""
    y0, y1, x0, x1 = window
    crop = frame[y0:y1, x0:x1]
    q = out // np.gcd(out, crop.shape[0]), out // np.gcd(out, crop.shape[1])  # replicate until cells are whole pixels
    fine = np.repeat(np.repeat(crop, q[0], axis=0), q[1], axis=1)
    return fine.reshape(out, fine.shape[0] // out, out, fine.shape[1] // out).mean(axis=(1, 3))


def reference_grey(frame: np.ndarray, fmt: str, size: object, spec: TensorSpec) -> np.ndarray:
    """The schema's grey contract in float64, written from its definition (centre crop, area, border stretch, light on dark)."""
    if fmt == "YUV420":
        w, h = size  # type: ignore[misc]
        luma = frame[:h, :w].astype(np.float64)  # the stretch is the same for full or limited range
    elif fmt == "GRAY":
        luma = frame.astype(np.float64)
    else:
        bgr = frame.astype(np.float64)
        luma = 0.299 * bgr[..., 2] + 0.587 * bgr[..., 1] + 0.114 * bgr[..., 0]
    hh, ww = luma.shape
    side = min(hh, ww)
    f = side // 28
    used = f * 28 if side - f * 28 < side / 28 else side  # the contract allows dropping under one model pixel
    y0, x0 = (hh - used) // 2, (ww - used) // 2
    m = exact_area_means(luma, (y0, y0 + used, x0, x0 + used), 28)
    border = (m[0, 0] + m[0, -1] + m[-1, 0] + m[-1, -1]) / 4
    light_bg = border > (m.min() + m.max()) / 2
    far = m.min() if light_bg else m.max()
    x = np.clip((m - border) / (far - border), 0.0, 1.0)  # the garment's far end → 1, the background → 0
    if not spec.quantized:
        return x
    info = np.iinfo(np.dtype(spec.dtype))
    return np.clip(np.round(x / float(spec.scale or 1)) + int(spec.zero_point or 0), info.min, info.max)


@pytest.mark.parametrize("spec", [INT8, TensorSpec((1, 28, 28, 1), "float32"), TensorSpec((1, 28, 28, 1), "uint8", 1 / 255, 0)])
def test_into_gives_the_same_tensor_for_every_layout_and_agrees_with_tensor(spec: TensorSpec) -> None:
    """``into`` keeps a plan per geometry (running sums, strided adds, or the general path, chosen by
    layout and block size); all must give the same bits, and ``tensor`` the same values to one count."""
    rng = np.random.default_rng(7)
    p = Preprocessor(spec=spec)
    out = np.zeros(spec.shape, np.dtype(spec.dtype))
    pictures = [garment(12), rng.integers(0, 256, size=(56, 74)).astype(np.uint8)]  # 1x1 and 2x2 blocks
    for h, w in ((84, 112), (112, 150), (96, 128), (140, 141), (230, 300), (20, 25)):  # 3x3, 4x4, 5x5+, odd, upscale
        scene_img = np.kron(garment(h + w), np.ones((h // 28 + 1, w // 28 + 1), np.uint8))[:h, :w]
        pictures.append(np.clip(scene_img.astype(np.int16) + rng.integers(-20, 21, size=(h, w)), 0, 255).astype(np.uint8))
    differing = 0
    for picture in pictures + pictures[::-1]:  # geometry changes back and forth: plans are rebuilt
        results = {}
        for name, pixels, fmt, size in _layouts(picture):
            fresh = Preprocessor(spec=spec)  # a plan made for this layout
            fresh.into(pixels, fmt, size, out)  # type: ignore[arg-type]
            results[name] = out.copy()
            fresh.into(pixels, fmt, size, out)  # type: ignore[arg-type]  # the same plan, reused
            np.testing.assert_array_equal(out, results[name], err_msg=f"{name} changed on reuse")
            p.into(pixels, fmt, size, out)  # type: ignore[arg-type]  # a plan made for the layout before
            np.testing.assert_array_equal(out, results[name], err_msg=f"{name} after another layout")
        for name, got in results.items():
            np.testing.assert_array_equal(got, results["contiguous"], err_msg=f"{name} vs contiguous, {picture.shape}")
        want = p.tensor(picture, "GRAY")
        np.testing.assert_array_equal(preprocess(picture, "GRAY", spec=spec), want)
        diff = np.abs(results["contiguous"].astype(np.int64) - want.astype(np.int64)) if spec.quantized else None
        if diff is None:  # float: the same arithmetic, bit for bit
            np.testing.assert_array_equal(results["contiguous"], want)
        else:  # into folds the scale into one multiply-add: a rounding tie may land one count away
            assert diff.max() <= 1
            differing += int((diff > 0).sum())
    assert differing <= 0.005 * len(pictures) * 2 * 28 * 28


@pytest.mark.parametrize("spec", [INT8, TensorSpec((1, 28, 28, 1), "float32"), TensorSpec((1, 28, 28, 1), "uint8", 1 / 255, 0)])
def test_into_agrees_with_a_fresh_plan_and_with_the_contracts_definition(spec: TensorSpec) -> None:
    p = Preprocessor(spec=spec)
    out = np.zeros(spec.shape, np.dtype(spec.dtype))
    frames = _frames()
    for pixels, fmt, size in frames + frames[::-1]:  # geometry changes back and forth: plans are rebuilt
        p.into(pixels, fmt, size, out)  # type: ignore[arg-type]
        # a fresh preprocessor (a new plan) gives the same tensor bit for bit
        np.testing.assert_array_equal(out, Preprocessor(spec=spec).tensor(pixels, fmt, size))  # type: ignore[arg-type]
        # and the contract's definition in float64: the same values up to float32 rounding, also where
        # 240 rows → 28 is no whole factor (exact area integrals, not blocks of 8 smeared by weights)
        want = reference_grey(pixels, fmt, size, spec).reshape(out.shape)
        assert np.abs(out.astype(np.float64) - want).max() <= (1.0 if spec.quantized else 1e-5)


def test_grey_frame_for_a_colour_model_matches_the_grey_model_channel_by_channel() -> None:
    # the scalar grey path and the per-channel matrix path are one arithmetic
    for pixels, fmt, size in _frames():
        grey = Preprocessor().image(pixels, fmt, size)  # type: ignore[arg-type]
        if fmt != "GRAY":
            continue
        rgb = Preprocessor(Preprocess(color="rgb")).image(pixels, fmt, size)  # type: ignore[arg-type]
        assert rgb.shape == (28, 28, 3)
        for c in range(3):
            np.testing.assert_allclose(rgb[..., c], grey, atol=1e-6)


@pytest.mark.parametrize("colour", [(14, 101, 155), (0, 0, 255), (200, 200, 200)])
@pytest.mark.parametrize("shape", [(480, 640), (84, 112), (1, 1)])
def test_a_flat_colour_frame_is_all_background_on_every_path(colour: tuple[int, int, int], shape: tuple[int, int]) -> None:
    """A lens cap or a bare wall: colour block sums differ by a float ulp, which the stretch must not amplify."""
    px = np.empty((*shape, 3), np.uint8)
    px[...] = colour
    for invert in ("auto", "on", "off"):
        p = Preprocessor(spec=INT8, invert=invert)
        img = p.image(px, "BGR")
        assert np.unique(img).size == 1, (invert, np.unique(img))
        out = np.zeros(INT8.shape, np.int8)
        p.into(px, "BGR", None, out)
        np.testing.assert_array_equal(out, p.tensor(px, "BGR"))


def test_into_writes_through_a_non_contiguous_output() -> None:
    pixels, fmt, size = _frames()[0]
    big = np.zeros((2, 28, 28, 1), np.int8)
    out = big[:, :, :, :][0:1]  # contiguous: written in place
    holder = np.zeros((1, 28, 56, 1), np.int8)
    strided = holder[:, :, ::2, :]  # not contiguous: reshape would copy
    p = Preprocessor(spec=INT8)
    p.into(pixels, fmt, size, out)  # type: ignore[arg-type]
    p.into(pixels, fmt, size, strided)  # type: ignore[arg-type]
    want = p.tensor(pixels, fmt, size)  # type: ignore[arg-type]
    np.testing.assert_array_equal(out, want)
    np.testing.assert_array_equal(strided, want)
    assert holder[:, :, 1::2].max() == 0  # and nothing beside it


def test_a_bad_frame_after_good_ones_still_raises() -> None:
    pixels, fmt, size = _frames()[0]
    p = Preprocessor(spec=INT8)
    out = np.zeros(INT8.shape, np.int8)
    p.into(pixels, fmt, size, out)  # type: ignore[arg-type]
    with pytest.raises(FrameError, match="uint8"):
        p.into(pixels.astype(np.float32), fmt, size, out)  # type: ignore[arg-type]
    with pytest.raises(FrameError, match="stride"):
        p.into(pixels[:100], fmt, size, out)  # type: ignore[arg-type]


def test_lores_smaller_than_the_isp_minimum_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 64x64"):
        CameraConfig(lores_size=(74, 56))
    assert min(CameraConfig().lores_size) >= 64 and CameraConfig().lores_size[1] % 28 == 0
