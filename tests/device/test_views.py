"""The pictures kept of a frame: the model view is the preprocessed input before normalisation, the frame view the frame."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from device.frames import Frame
from device.manifest import Manifest, Normalize, Preprocess, TensorSpec
from device.preprocess import Preprocessor
from device.scene import to_bgr888, to_yuv420, yuv420_stride
from device.views import model_view, pixels_view, png


def _smooth_rgb(h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([40 + 150 * xx / w, 60 + 120 * yy / h, 200 - 100 * xx / w], axis=-1).astype(np.float32)


def _yuv_frame(rgb: np.ndarray, cs: str) -> Frame:
    h, w = rgb.shape[:2]
    return Frame(to_yuv420(rgb, yuv420_stride(w) + 64, cs), "YUV420", 1, 0, size=(w, h), colour_space=cs)


def test_model_view_is_the_preprocessed_image_before_normalisation(manifest: Manifest) -> None:
    """int8 Fashion-MNIST contract: the PNG's pixels are Preprocessor.image's, unnormalised, to within the int8 rounding."""
    spec = manifest.variant("int8").input
    pre = Preprocessor(manifest.preprocess, spec)
    rng = np.random.default_rng(0)
    rgb = np.clip(_smooth_rgb(84, 112) + rng.normal(0, 20, (84, 112, 3)), 0, 255)
    frame = _yuv_frame(rgb, "sYCC")
    view = model_view(pre.tensor(frame.pixels, frame.fmt, frame.size, frame.colour_space), manifest.preprocess, spec)
    lo, hi = manifest.preprocess.normalize.range or (0.0, 1.0)
    want = (pre.image(frame.pixels, frame.fmt, frame.size, frame.colour_space) - lo) / (hi - lo) * 255.0
    assert view.shape == (28, 28) and view.dtype == np.uint8
    assert np.abs(view.astype(np.float32) - want).max() <= 0.5 * 255.0 * spec.scale + 0.51  # one quantisation step


def test_model_view_undoes_mean_std_and_shows_true_colour_for_a_bgr_model() -> None:
    contract = Preprocess(size=(6, 8), color="rgb", channel_order="bgr", crop="none", contrast="none", polarity="any",
                          normalize=Normalize(range=None, mean=(10.0, 20.0, 30.0), std=(2.0, 4.0, 8.0)))
    spec = TensorSpec((1, 6, 8, 3), "float32")
    pixels = np.zeros((6, 8, 3), np.uint8)
    pixels[..., 0] = 200  # red
    pixels[:, :4, 2] = 90  # some blue on the left
    tensor = Preprocessor(contract, spec).tensor(pixels, "RGB")
    view = model_view(tensor, contract, spec)
    assert np.array_equal(view, pixels)  # R,G,B again, whatever order the model reads


def test_frame_view_of_padded_yuv_uses_the_frames_colour_space_and_area_averages() -> None:
    rgb = _smooth_rgb(96, 128)
    for cs in ("sYCC", "SMPTE170M"):
        view = pixels_view(_yuv_frame(rgb, cs).pixels, "YUV420", (128, 96), cs, max_px=64)
        want = rgb.reshape(48, 2, 64, 2, 3).mean(axis=(1, 3))
        assert view.shape == (48, 64, 3)
        assert np.abs(view.astype(np.float32) - want).max() <= 3.0, cs  # rounding of Y, U, V; no junk from the padding
    full = pixels_view(_yuv_frame(rgb, "sYCC").pixels, "YUV420", (128, 96), "sYCC", max_px=320)
    assert full.shape == (96, 128, 3)  # small frames are kept at their size


def test_frame_view_of_bgr_main_is_rgb_and_not_aliased() -> None:
    stripes = np.zeros((480, 640, 3), np.float32)
    stripes[:, 0::2] = (255.0, 0.0, 0.0)  # one-pixel red stripes: subsampling would show solid red or black
    view = pixels_view(to_bgr888(stripes), "BGR", max_px=320)
    assert view.shape == (240, 320, 3)
    assert np.abs(view[..., 0].astype(int) - 128).max() <= 1 and view[..., 1:].max() == 0
    grey = pixels_view(np.full((30, 41), 77, np.uint8), "GRAY", max_px=20)
    assert grey.shape == (10, 13) and (grey == 77).all()


@pytest.mark.parametrize(("pixels", "fmt", "size"), [(np.zeros((10, 10), np.uint8), "YUV420", None),
                                                     (np.zeros((10, 10), np.uint8), "YUV420", (10, 8)),
                                                     (np.zeros((4, 4, 3), np.float32), "RGB", None),
                                                     (np.zeros((4, 4, 3), np.uint8), "CMYK", None)])
def test_frame_view_refuses_what_is_not_its_format(pixels: np.ndarray, fmt: str, size: tuple[int, int]) -> None:
    with pytest.raises(ValueError):
        pixels_view(pixels, fmt, size)


def test_png_of_a_view_decodes_to_it() -> None:
    view = pixels_view(_yuv_frame(_smooth_rgb(84, 112), "sYCC").pixels, "YUV420", (112, 84), "sYCC")
    with Image.open(io.BytesIO(png(view))) as im:
        assert im.mode == "RGB" and np.array_equal(np.asarray(im), view)
