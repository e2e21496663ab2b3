"""crop: object under lens shading and uneven light: the background is flat-fielded, so a dark garment on paper keeps clean corners."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from device.camera_scene import Look, render_frame
from device.manifest import Preprocess
from device.preprocess import Preprocessor

PAPER = Look(
    fill=0.9, dx=0.02, dy=0.0, light_on_dark=False, background_bgr=(200.0,) * 3, garment_bgr=(40.0,) * 3,
    gradient=(0.0, 0.0), texture=0.0, tint_bgr=(1.0, 1.0, 1.0), gamma=1.0, vignette=0.0, blur_px=0.0, noise=1.0,
)
CLOTH = replace(PAPER, light_on_dark=True, background_bgr=(40.0,) * 3, garment_bgr=(220.0,) * 3)


def trousers() -> np.ndarray:
    """Two legs and a gap: background reaches the model image's corners and its middle."""
    img = np.zeros((28, 28), np.uint8)
    img[1:27, 8:13] = 200
    img[1:27, 15:20] = 200
    img[1:8, 8:20] = 200
    return img


def model_image(look: Look, fmt: str, size: tuple[int, int], cos4: bool = False) -> np.ndarray:
    p = Preprocessor(Preprocess(crop="object"))
    pixels, sz = render_frame(trousers(), look, fmt, *size, np.random.default_rng(0))
    if cos4:  # a pinhole lens's cos^4 falloff, round in pixels (not the renderer's quadratic): the corners lose 36 %
        h, w = pixels.shape[:2]
        yy, xx = np.mgrid[0:h, 0:w]
        r2 = ((yy - h / 2 + 0.5) ** 2 + (xx - w / 2 + 0.5) ** 2) / (0.25 * (h * h + w * w))
        pixels = np.clip(np.rint(pixels / (1.0 + 0.25 * r2[..., None]) ** 2), 0, 255).astype(np.uint8)
    return p.image(pixels, fmt, sz).astype(np.float64) * 255.0


@pytest.mark.parametrize("fmt, size", [("BGR", (640, 480)), ("YUV420", (160, 120))])
@pytest.mark.parametrize("look", [PAPER, CLOTH], ids=["dark on paper", "light on cloth"])
@pytest.mark.parametrize("shading", [{"vignette": 0.3}, {"gradient": (0.25, -0.15)}, {"vignette": 0.2, "gradient": (-0.2, 0.0)}],
                         ids=["vignette", "lamp to one side", "both"])
def test_shading_leaves_the_model_image_as_an_evenly_lit_frame_gives_it(look: Look, shading: dict, fmt: str, size: tuple[int, int]) -> None:
    even = model_image(look, fmt, size)
    shaded = model_image(replace(look, **shading), fmt, size)
    background = even < 10  # where the evenly lit frame's model image is background
    assert background.sum() > 150
    # before the flat field: dark on paper kept up to 76 grey levels of haze in the corners (vignette 0.3)
    assert float(np.abs(shaded - even)[background].max()) < 24, np.abs(shaded - even)[background].max()
    assert float(np.abs(shaded - even).mean()) < 6, np.abs(shaded - even).mean()


@pytest.mark.parametrize("look", [PAPER, CLOTH], ids=["dark on paper", "light on cloth"])
def test_a_lens_falloff_that_is_not_a_quadratic_is_mostly_taken_out(look: Look) -> None:
    even = model_image(look, "BGR", (640, 480))
    shaded = model_image(look, "BGR", (640, 480), cos4=True)
    background = even < 10
    assert float(np.abs(shaded - even)[background].max()) < 24, np.abs(shaded - even)[background].max()
    assert float(np.abs(shaded - even).mean()) < 6, np.abs(shaded - even).mean()
