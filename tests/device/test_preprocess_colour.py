"""RGB models: Y'CbCr conversion per colour space, channel order, mean/std, uint8/int8 inputs, the camera path, model_input."""

from __future__ import annotations

import numpy as np
import pytest

from device import colour, scene
from device.errors import FrameError, ManifestError
from device.fake_picamera2 import FakePicamera2
from device.frames import CameraConfig, SyntheticSource
from device.manifest import Normalize, Preprocess, TensorSpec
from device.pi_camera import PiCameraSource
from device.preprocess import Preprocessor, model_input, preprocess
from device.quant import to_input

RAW_RGB = Preprocess(size=(96, 96), color="rgb", contrast="none", polarity="any", normalize=Normalize(range=(0.0, 255.0)))
IMAGENET = Normalize(range=None, mean=(123.675, 116.28, 103.53), std=(58.395, 57.12, 57.375))
COLOURS = [(220, 30, 30), (20, 200, 40), (30, 40, 210), (240, 240, 240), (12, 10, 8), (128, 128, 128), (200, 120, 60)]


def photo(seed: int = 0, size: int = 96) -> np.ndarray:
    """A colour photo [size, size, 3] R,G,B: a red disc and a green bar on a blue-grey background."""
    yy, xx = np.mgrid[0:size, 0:size] * (96 / size)
    img = np.zeros((size, size, 3), np.uint8)
    img[...] = (90, 110, 140)
    img[((yy - 40 - seed) ** 2 + (xx - 50) ** 2) < 400] = (220, 30, 30)
    img[(yy >= 70) & (yy < 80) & (xx >= 10) & (xx < 90)] = (20, 200, 40)
    return img


@pytest.mark.parametrize("space", ["sYCC", "SMPTE170M", "Rec709", "Rec2020", "Rec709/Rec709/Rec601/Full"])
def test_yuv420_converts_back_to_the_colour_it_encodes_in_every_colour_space(space: str) -> None:
    for rgb in COLOURS:
        frame = np.empty((64, 64, 3), np.float32)
        frame[...] = rgb
        buf = scene.to_yuv420(frame, 64, space)
        got = Preprocessor(RAW_RGB).image(buf, "YUV420", (64, 64), space)
        # 8-bit Y, U, V: a limited range has fewer levels, so allow a little more there
        tol = 1.5 if colour.ycbcr(space).full_range else 2.5
        np.testing.assert_allclose(got.reshape(-1, 3).mean(axis=0), rgb, atol=tol)
    # decoding with the wrong colour space is measurably wrong: the frame's own one matters
    red = np.full((64, 64, 3), (220, 30, 30), np.float32)
    wrong = Preprocessor(RAW_RGB).image(scene.to_yuv420(red, 64, "SMPTE170M"), "YUV420", (64, 64), "sYCC")
    assert np.abs(wrong.reshape(-1, 3).mean(axis=0) - (220, 30, 30)).max() > 10


def test_unknown_colour_space_is_refused_in_one_line() -> None:
    buf = scene.to_yuv420(np.full((64, 64), 100.0, np.float32), 64)
    with pytest.raises(FrameError, match=r"colour space 'sRGB' has no Y'CbCr encoding this build converts; it converts sYCC, SMPTE170M"):
        Preprocessor(RAW_RGB).image(buf, "YUV420", (64, 64), "sRGB")


def _ideal(img: np.ndarray, config: CameraConfig, crop: str) -> np.ndarray:
    """The same scene, noise-free-ish, rendered straight at the model's size over the contract's window."""
    fw, fh = config.main_size
    fov = (fh, fh) if crop == "center" else (fw, fh)  # center: the centred square of the field of view
    return scene.render(img, 96, 96, np.random.default_rng(9), fov=fov)


@pytest.mark.parametrize("crop", ["center", "none"])
@pytest.mark.parametrize("lores", [None, (240, 180)])
def test_rgb_model_through_the_fake_camera_with_padded_strides(crop: str, lores: object) -> None:
    contract = Preprocess(size=(96, 96), color="rgb", crop=crop, contrast="none", polarity="any",
                          normalize=Normalize(range=(0.0, 255.0)))
    config = CameraConfig.for_contract(contract, lores_size=lores)  # type: ignore[arg-type]
    img = photo()
    src = PiCameraSource(config, factory=lambda: FakePicamera2(images=img[None]))
    try:
        f = src.read()
    finally:
        src.close()
    w, h = config.lores_size
    assert f.fmt == "YUV420" and f.size == (w, h) and f.colour_space == "sYCC"  # requested, and read back
    if lores is not None:
        assert f.pixels.shape == (h * 3 // 2, 256)  # 240 wide: rows padded to 256, chroma to 128
        assert f.pixels[0, 240:].min() == 0xEE and f.pixels[h, 120:128].min() == 0xEE
    got = Preprocessor(contract).image(f.pixels, f.fmt, f.size, f.colour_space)
    ideal = _ideal(img, config, crop)
    assert got.shape == (96, 96, 3)
    assert np.abs(got - ideal).mean() < 3.0, np.abs(got - ideal).mean()  # sensor noise, 8-bit YUV, 4:2:0 chroma
    np.testing.assert_allclose(got.mean(axis=(0, 1)), ideal.mean(axis=(0, 1)), atol=1.5)
    # the main stream (B,G,R bytes, the whole field of view through the CPU) sees the same picture
    main = SyntheticSource(img[None], None, config.with_stream("main")).read()
    assert main.fmt == "BGR"
    got_main = Preprocessor(contract).image(main.pixels, main.fmt, main.size)
    assert np.abs(got_main - ideal).mean() < 3.0


def test_lores_chroma_is_read_with_half_the_padded_stride() -> None:
    # left half red, right half blue: U and V read at the wrong stride would shear and mix them
    img = np.zeros((96, 96, 3), np.uint8)
    img[:, :48] = (230, 20, 20)
    img[:, 48:] = (20, 20, 230)
    contract = Preprocess(size=(48, 48), color="rgb", crop="none", contrast="none", polarity="any",
                          normalize=Normalize(range=(0.0, 255.0)))
    buf = scene.to_yuv420(scene.render(img, 120, 120, np.random.default_rng(0)), scene.yuv420_stride(120), "sYCC")
    assert buf.shape == (180, 128)
    out = Preprocessor(contract).image(buf, "YUV420", (120, 120), "sYCC")
    left, right = out[8:40, 4:20].reshape(-1, 3).mean(axis=0), out[8:40, 28:44].reshape(-1, 3).mean(axis=0)
    assert left[0] > 180 and left[2] < 50, left
    assert right[2] > 180 and right[0] < 50, right


def test_channel_order_bgr_reverses_what_the_model_gets() -> None:
    src = SyntheticSource(photo()[None], None, CameraConfig.for_contract(RAW_RGB))
    f = src.read()
    rgb = Preprocessor(RAW_RGB).image(f.pixels, f.fmt, f.size, f.colour_space)
    bgr_contract = Preprocess(size=(96, 96), color="rgb", channel_order="bgr", contrast="none", polarity="any",
                              normalize=Normalize(range=(0.0, 255.0)))
    bgr = Preprocessor(bgr_contract).image(f.pixels, f.fmt, f.size, f.colour_space)
    np.testing.assert_allclose(bgr, rgb[..., ::-1], atol=1e-4)
    assert rgb[40, 50, 0] > 150 and rgb[40, 50, 2] < 80  # the red disc is red in R,G,B order


@pytest.mark.parametrize("fmt", ["BGR", "RGB", "BGRX", "RGBX"])
def test_mean_std_normalisation_per_channel_on_every_memory_order(fmt: str) -> None:
    rgb = np.array((200, 120, 60), np.uint8)
    order = {"BGR": [2, 1, 0], "RGB": [0, 1, 2], "BGRX": [2, 1, 0], "RGBX": [0, 1, 2]}[fmt]
    px = np.zeros((96, 128, 4 if fmt.endswith("X") else 3), np.uint8)
    px[..., :3] = rgb[order]
    if fmt.endswith("X"):
        px[..., 3] = 99  # the X byte is never read
    contract = Preprocess(size=(96, 96), color="rgb", contrast="none", polarity="any", normalize=IMAGENET)
    got = Preprocessor(contract).image(px, fmt)
    want = (rgb - np.array(IMAGENET.mean)) / np.array(IMAGENET.std)
    np.testing.assert_allclose(got.reshape(-1, 3), np.broadcast_to(want, (96 * 96, 3)), atol=1e-5)


@pytest.mark.parametrize(
    "spec",
    [TensorSpec((1, 96, 96, 3), "uint8", 0.0078125, 128), TensorSpec((1, 96, 96, 3), "int8", 0.0078125, 0),
     TensorSpec((1, 96, 96, 3), "float32")],
)
def test_quantised_rgb_inputs_match_model_input_of_the_ideal_image(spec: TensorSpec) -> None:
    contract = Preprocess(size=(96, 96), color="rgb", contrast="none", polarity="any", normalize=Normalize(range=(-1.0, 1.0)))
    img = photo()
    px = np.ascontiguousarray(img[..., ::-1])  # B,G,R bytes of exactly the model-sized image
    p = Preprocessor(contract, spec)
    got = p.tensor(px, "BGR")
    assert got.dtype == np.dtype(spec.dtype) and got.shape == spec.shape
    want = model_input(img[None], contract, spec)
    np.testing.assert_array_equal(got, want)  # no resize here: the same numbers through both
    out = np.zeros(spec.shape, np.dtype(spec.dtype))
    p.into(px, "BGR", None, out)
    np.testing.assert_array_equal(out, got)
    np.testing.assert_array_equal(preprocess(px, "BGR", contract, spec), got)


def test_model_input_is_the_hosts_formula_bit_for_bit_for_fashion_mnist() -> None:
    images = np.arange(256, dtype=np.uint8).reshape(1, 16, 16).repeat(3, axis=0)
    images = np.pad(images, ((0, 0), (6, 6), (6, 6)))
    for spec in (TensorSpec((1, 28, 28, 1), "int8", 0.00392156862745098, -128), TensorSpec((1, 28, 28, 1), "uint8", 1 / 255, 0),
                 TensorSpec((1, 28, 28, 1), "float32"), TensorSpec((1, 28, 28), "float32")):
        want = to_input(images.astype(np.float32) / 255.0, spec)  # what host evaluation and the golden outputs used
        np.testing.assert_array_equal(model_input(images, Preprocess(), spec), want)


def test_model_input_honours_mean_std_channel_order_and_refuses_the_wrong_shape() -> None:
    contract = Preprocess(size=(8, 8), color="rgb", channel_order="bgr", normalize=IMAGENET)
    spec = TensorSpec((1, 8, 8, 3), "float32")
    img = np.zeros((2, 8, 8, 3), np.uint8)
    img[..., 0], img[..., 1], img[..., 2] = 10, 100, 200  # R, G, B
    got = model_input(img, contract, spec)
    assert got.shape == (2, 8, 8, 3)
    want_bgr = (np.array([200, 100, 10]) - np.array(IMAGENET.mean)) / np.array(IMAGENET.std)  # mean/std in the model's order
    np.testing.assert_allclose(got[0, 0, 0], want_bgr, rtol=1e-5)
    with pytest.raises(ValueError, match=r"takes \[N, 8, 8, 3\] \(R, G, B\) images. Got: shape \(2, 8, 8\)"):
        model_input(img[..., 0], contract, spec)
    with pytest.raises(ValueError, match="uint8"):
        model_input(img.astype(np.float32), contract, spec)


def test_a_contract_this_build_cannot_honour_is_refused_in_one_line() -> None:
    for field, value in (("crop", "smart"), ("resize", "bicubic"), ("color", "cmyk"), ("polarity", "up")):
        with pytest.raises(ManifestError) as e:
            Preprocessor(Preprocess(**{field: value}))  # type: ignore[arg-type]
        msg = str(e.value)
        assert f"preprocess.{field} is {value!r}; this device build supports" in msg and "\n" not in msg
    with pytest.raises(ManifestError, match=r"input shape \[1, 28, 28, 1\] does not match preprocess"):
        Preprocessor(RAW_RGB, TensorSpec((1, 28, 28, 1), "float32"))
    with pytest.raises(ManifestError, match="input dtype int16 cannot be fed"):
        Preprocessor(RAW_RGB, TensorSpec((1, 96, 96, 3), "int16", 1.0, 0))
