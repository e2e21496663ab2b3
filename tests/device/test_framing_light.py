"""crop: object under uneven light: a lighting gradient across the background is not noise."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from device import framing
from device.camera_scene import Look, render_frame
from device.manifest import Preprocess
from device.preprocess import Preprocessor

PAPER = Look(
    fill=0.7, dx=0.0, dy=0.0, light_on_dark=False, background_bgr=(215.0,) * 3, garment_bgr=(30.0,) * 3,
    gradient=(0.0, 0.0), texture=0.0, tint_bgr=(1.0, 1.0, 1.0), gamma=1.0, vignette=0.0, blur_px=0.0, noise=2.0,
)


def two_tone_shirt() -> np.ndarray:
    """A mid-grey garment with one dark band: the band is the only part a raised noise floor lets through."""
    img = np.zeros((28, 28), np.uint8)
    img[2:26, 6:22] = 110
    img[10:16, 6:22] = 255
    return img


def box(look: Look, fmt: str = "YUV420", size: tuple[int, int] = (160, 120)) -> tuple[float, float, float, float]:
    p = Preprocessor(Preprocess(crop="object"))
    pixels, sz = render_frame(two_tone_shirt(), look, fmt, *size, np.random.default_rng(0))
    p.image(pixels, fmt, sz)
    assert p.last_box is not None
    return p.last_box


@pytest.mark.parametrize("gradient", [(0.25, 0.0), (-0.2, 0.15), (0.0, 0.25), (0.0, -0.25)])
def test_a_lamp_to_one_side_does_not_shrink_the_box(gradient: tuple[float, float]) -> None:
    even = box(PAPER)
    assert even[3] - even[1] > 60  # the whole garment: 70 % of 120 rows less its margins
    lit = box(replace(PAPER, gradient=gradient))
    # before the background plane: (56, 48, 104, 66), the dark band only, whatever the direction
    assert np.allclose(lit, even, atol=4), (lit, even)


def test_a_garment_touching_the_edges_keeps_its_height_under_a_gradient() -> None:
    tall = replace(PAPER, fill=1.0, gradient=(0.2, 0.2))
    _, y0, _, y1 = box(tall, "BGR", (640, 480))
    assert y0 <= 40 and y1 >= 440  # the object covers part of the ring: the plane is refitted without it


def test_the_slope_of_an_evenly_lit_background_is_flat_and_a_ramp_is_found() -> None:
    rng = np.random.default_rng(3)
    flat = 200.0 + rng.normal(0.0, 2.0, (30, 40)).astype(np.float32)
    s = framing.background_slope(flat)
    assert s is not None and float(np.abs(s).max()) < 1.5
    ramp = flat + np.linspace(-30.0, 30.0, 40, dtype=np.float32)[None, :]
    ramp[10:20, 15:25] = 40.0  # an object in the middle does not touch the ring
    s = framing.background_slope(ramp)
    assert s is not None and abs(float(s[0, -1] - s[0, 0]) - 60.0) < 3.0
    assert framing.background_slope(np.zeros((2, 5), np.float32)) is None
