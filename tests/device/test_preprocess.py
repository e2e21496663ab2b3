"""Preprocessing: channel order, stride, polarity, quantisation round trip, bad frames."""

from __future__ import annotations

import numpy as np
import pytest

from device import scene
from device.errors import FrameError
from device.frames import CameraConfig, SyntheticSource
from device.manifest import Preprocess, TensorSpec
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


def test_bgr_order_is_honoured() -> None:
    # a pure-red picture: R=200 → grey 0.299*200; read as RGB it would be 0.114*200
    h, w = 56, 56
    bgr = np.zeros((h, w, 3), np.uint8)
    bgr[..., 2] = 200
    bgr[20:36, 20:36, 2] = 40  # a dark square in the middle so the stretch has a range
    p = Preprocessor(invert="off")
    sums_bgr = p._gray_sums(bgr, "BGR", None)
    sums_rgb = p._gray_sums(bgr, "RGB", None)
    assert sums_bgr[0, 0] == pytest.approx(4 * 200 * 0.299, rel=1e-4)
    assert sums_rgb[0, 0] == pytest.approx(4 * 200 * 0.114, rel=1e-4)
    # same picture in both memory orders gives the same model input
    rgb = bgr[..., ::-1].copy()
    np.testing.assert_allclose(p.image(bgr, "BGR"), p.image(rgb, "RGB"), atol=1e-6)


def test_yuv420_row_stride_is_honoured() -> None:
    rng = np.random.default_rng(1)
    gray = rng.integers(0, 256, size=(84, 112)).astype(np.float32)
    stride = scene.yuv420_stride(112)
    assert stride > 112  # the buffer is padded, with junk bytes in the padding
    buf = scene.to_yuv420(gray, stride)
    assert buf.shape == (126, stride)
    plane = gray_plane(buf, "YUV420", (112, 84))
    np.testing.assert_array_equal(plane, gray.astype(np.uint8))
    p = Preprocessor()
    np.testing.assert_allclose(p.image(buf, "YUV420", (112, 84)), p.image(gray.astype(np.uint8), "GRAY"), atol=1e-6)
    # reading the buffer as if it were unpadded gives a different (wrong) image
    flat = buf.reshape(-1)[: 84 * 112].reshape(84, 112)
    assert not np.allclose(p.image(flat, "GRAY"), p.image(gray.astype(np.uint8), "GRAY"), atol=0.05)


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
        (np.zeros((84, 112), np.uint8), "YUV420", (112, 84), "[126, stride >= 112]"),
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


@pytest.mark.parametrize("spec", [INT8, TensorSpec((1, 28, 28, 1), "float32"), TensorSpec((1, 28, 28, 1), "uint8", 1 / 255, 0)])
def test_into_reuses_its_plan_and_keeps_the_arithmetic(spec: TensorSpec) -> None:
    p = Preprocessor(spec=spec)
    out = np.zeros(spec.shape, np.dtype(spec.dtype))
    frames = _frames()
    for pixels, fmt, size in frames + frames[::-1]:  # geometry changes back and forth: plans are rebuilt
        p.into(pixels, fmt, size, out)  # type: ignore[arg-type]
        # the same folded arithmetic on the general path's block sums: equal bit for bit
        sums = p._gray_sums(pixels, fmt, size)  # type: ignore[arg-type]
        k, c = p._affine(sums)
        if spec.quantized:
            qs, zp = 1.0 / float(spec.scale or 1.0), float(spec.zero_point or 0)
            ends = sorted(round(zp + x * qs) for x in (0.0, 1.0))
            want = np.rint(np.clip(sums * np.float32(k * qs) + np.float32(c * qs + zp), *ends)).astype(spec.dtype)
        else:
            want = np.clip(sums * np.float32(k) + np.float32(c), 0.0, 1.0).astype(np.float32)
        np.testing.assert_array_equal(out.reshape(28, 28), want)
        # and tensor() (scale applied after the stretch) differs at most by a rounding tie
        ref = p.tensor(pixels, fmt, size).astype(np.float64)  # type: ignore[arg-type]
        assert np.abs(out.astype(np.float64) - ref).max() <= (1.0 if spec.quantized else 1e-6)  # one count


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
