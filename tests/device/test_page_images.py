"""The page's pictures: the PNG encoder (decoded by Pillow, an independent decoder) and the previews."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from device.frames import Frame
from device.manifest import TensorSpec
from device.png import encode_png
from device.preview import InputView, frame_image, image_layout
from device.quant import to_input
from device.scene import to_yuv420, yuv420_stride


def decode(png: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(png)) as im:
        im.load()
        return np.asarray(im)


@pytest.mark.parametrize("shape", [(1, 1), (5, 7), (84, 112), (3, 300, 3), (9, 4, 4), (6, 5, 2), (7, 3, 1)])
def test_png_round_trips_through_pillow(shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(sum(shape))
    a = rng.integers(0, 256, shape, dtype=np.uint8)
    a[0, 0] = 255  # the Up filter must wrap modulo 256 where a row drops below the one above
    if a.shape[0] > 1:
        a[1, 0] = 0
    got = decode(encode_png(a))
    assert got.shape == (a.shape if not (a.ndim == 3 and a.shape[2] == 1) else a.shape[:2])
    assert np.array_equal(got.reshape(a.shape), a)


def test_png_of_a_smooth_frame_is_small_and_a_strided_view_encodes() -> None:
    ramp = np.tile(np.arange(256, dtype=np.uint8), (120, 1))
    png = encode_png(ramp)
    assert len(png) < ramp.size / 20  # the Up filter turns identical rows into zeros
    view = np.dstack([ramp, ramp, ramp])[::2, ::3]  # not contiguous
    assert np.array_equal(decode(encode_png(view)), view)


@pytest.mark.parametrize("bad", [np.zeros((4, 4), np.float32), np.zeros((4, 4, 5), np.uint8), np.zeros((0, 4), np.uint8),
                                 np.zeros((2, 2, 2, 2), np.uint8)])
def test_png_refuses_what_it_cannot_encode(bad: np.ndarray) -> None:
    with pytest.raises(ValueError, match="Got:"):
        encode_png(bad)


def _yuv_frame(y: np.ndarray, u: int, v: int) -> Frame:
    h, w = y.shape
    buf = to_yuv420(y.astype(np.float32), yuv420_stride(w))  # padded rows, junk padding
    chroma = buf[h:].reshape(-1)
    half = (h // 2) * (buf.shape[1] // 2)
    plane = np.full((h // 2, buf.shape[1] // 2), 0xEE, np.uint8)
    plane[:, : w // 2] = u
    chroma[:half] = plane.reshape(-1)
    plane[:, : w // 2] = v
    chroma[half : 2 * half] = plane.reshape(-1)
    return Frame(buf, "YUV420", 1, 0, size=(w, h))


def test_yuv420_frame_honours_the_stride_and_keeps_its_colours() -> None:
    y = np.tile(np.linspace(16, 235, 112), (84, 1))
    grey = frame_image(_yuv_frame(y, 128, 128))
    assert grey.shape == (84, 112, 3)  # the 128-byte stride's padding is not shown
    assert np.abs(grey[..., 0].astype(int) - np.rint(y).astype(int)).max() <= 1
    assert np.array_equal(grey[..., 0], grey[..., 1]) and np.array_equal(grey[..., 1], grey[..., 2])
    # BT.601 full range: Y 76, U 85, V 255 is pure red; it must not come out blue
    red = frame_image(_yuv_frame(np.full((84, 112), 76.0), 85, 255))
    assert red[..., 0].min() >= 250 and red[..., 1].max() <= 3 and red[..., 2].max() <= 3


def test_bgr_and_rgbx_frames_come_out_in_rgb_order_downscaled() -> None:
    bgr = np.zeros((480, 640, 3), np.uint8)
    bgr[..., 2] = 255  # red, in picamera2's RGB888 (B,G,R) memory order
    out = frame_image(Frame(bgr, "BGR", 1, 0), max_px=320)
    assert out.shape == (240, 320, 3) and out[..., 0].min() == 255 and out[..., 2].max() == 0
    rgbx = np.zeros((100, 50, 4), np.uint8)
    rgbx[..., 2] = 200
    rgbx[..., 3] = 99  # padding byte, never shown
    out = frame_image(Frame(rgbx, "RGBX", 1, 0), max_px=40)
    assert out.shape == (34, 17, 3) and out[..., 2].min() == 200 and out[..., :2].max() == 0
    gray = frame_image(Frame(np.full((30, 40), 7, np.uint8), "GRAY", 1, 0))
    assert gray.shape == (30, 40) and gray.max() == 7


@pytest.mark.parametrize(("frame", "msg"), [
    (Frame(np.zeros((84, 128), np.uint8), "YUV420", 1, 0, size=(112, 84)), "YUV420 buffer must be"),
    (Frame(np.zeros((126, 128), np.uint8), "YUV420", 1, 0), "needs its"),
    (Frame(np.zeros((4, 4, 3), np.uint8), "BGRX", 1, 0), "must be"),
    (Frame(np.zeros((4, 4), np.uint16), "GRAY", 1, 0), "uint8"),
    (Frame(np.zeros((4, 4), np.uint8), "NV12", 1, 0), "cannot show"),
])
def test_frames_that_are_not_what_their_format_says_are_refused(frame: Frame, msg: str) -> None:
    with pytest.raises(ValueError, match=msg):
        frame_image(frame)


@pytest.mark.parametrize(("shape", "layout"), [
    ((1, 28, 28, 1), (28, 28, 1, False)), ((28, 28), (28, 28, 1, False)), ((1, 28, 28), (28, 28, 1, False)),
    ((1, 224, 160, 3), (224, 160, 3, False)), ((1, 3, 32, 48), (32, 48, 3, True)), ((96, 96, 3), (96, 96, 3, False)),
])
def test_image_layout_of_input_shapes(shape: tuple[int, ...], layout: tuple[int, int, int, bool]) -> None:
    assert image_layout(shape) == layout


@pytest.mark.parametrize(("shape", "msg"), [((1, 784), "not an image"), ((2, 28, 28, 1), "batch of 2"), ((1, 8, 8, 5), "not an image")])
def test_image_layout_refuses_what_is_not_one_image(shape: tuple[int, ...], msg: str) -> None:
    with pytest.raises(ValueError, match=msg):
        image_layout(shape)


def test_int8_grey_input_is_dequantised_and_enlarged_nearest_neighbour() -> None:
    spec = TensorSpec((1, 28, 28, 1), "int8", 1 / 255, -128)
    img = np.zeros((28, 28), np.float32)
    img[10:14, 5:9] = 1.0
    img[0, 0] = 0.5
    view = InputView(spec, target_px=224)
    t = to_input(img, spec)
    out = view.render(t)
    assert view.scale == 8 and out.shape == (224, 224) and out.dtype == np.uint8
    assert view.value_range == pytest.approx((0.0, 1.0)) and view.range_source == "dtype"
    assert out[80:112, 40:72].min() == 255 and out[:8, :8].min() == out[:8, :8].max() == int(t[0, 0, 0, 0]) + 128
    assert out[8:80].max() == 0
    # every model pixel is a constant 8x8 square
    blocks = out.reshape(28, 8, 28, 8)
    assert (blocks == blocks[:, :1, :, :1]).all()


def test_uint8_rgb_input_at_full_size_keeps_its_channels() -> None:
    spec = TensorSpec((1, 224, 224, 3), "uint8", 1.0, 0)  # a Teachable Machine style 0..255 input
    t = np.zeros(spec.shape, np.uint8)
    t[0, :, :112, 0] = 255  # left half red
    t[0, :, 112:, 2] = 128  # right half mid blue
    out = InputView(spec, target_px=224).render(t)
    assert out.shape == (224, 224, 3)
    assert out[:, :112, 0].min() == 255 and out[:, :112, 1:].max() == 0
    assert out[:, 112:, 2].min() == 128 and out[:, 112:, :2].max() == 0


def test_float_channels_first_input_with_the_contract_range_and_without() -> None:
    spec = TensorSpec((1, 3, 16, 16), "float32")
    t = np.full(spec.shape, -1.0, np.float32)
    t[0, 1] = 1.0  # green channel at the top of the [-1, 1] range
    contract = InputView(spec, value_range=(-1.0, 1.0), target_px=64)
    out = contract.render(t)
    assert out.shape == (64, 64, 3) and contract.scale == 4
    assert out[..., 1].min() == 255 and out[..., 0].max() == 0 and out[..., 2].max() == 0
    auto = InputView(spec, target_px=16)
    assert auto.range_source == "auto" and "min..max" in auto.describe()
    half = np.full(spec.shape, 0.25, np.float32)
    half[0, :, 0, 0] = 0.75
    out = auto.render(half)
    assert out[0, 0].tolist() == [255, 255, 255] and out[5, 5].tolist() == [0, 0, 0]


def test_input_tensor_of_the_wrong_size_is_refused() -> None:
    view = InputView(TensorSpec((1, 28, 28, 1), "float32"))
    with pytest.raises(ValueError, match="784"):
        view.render(np.zeros((1, 32, 32, 1), np.float32))
