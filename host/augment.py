"""Training augmentation in tf.data, per batch, with per-image random parameters (never in the model).

Two kinds of image go into each batch:

- *clean* images get a random horizontal flip and a whole-pixel shift, nothing else: exact pixel
  copies, so the fine texture of the training images is kept;
- *camera* images (``camera_fraction`` of the batch) get what the device's camera path does to a
  frame after its preprocessing has framed it: a sub-pixel shift and a small change of scale
  (bilinear resampling, as when the frame is area-resized to the model size at an arbitrary
  phase), a slight blur, a tone curve (gamma) and contrast, what uneven light and vignetting
  leave once the border has been taken as the background (darker corners, a lifted centre, a
  lighting gradient), and sensor noise.

Every geometric amount is a fraction of the image size, and the blur is in model pixels (the
device always area-resizes to the model input, so resampling blur is about one model pixel at
any resolution); everything else acts per pixel and per channel, so the same code serves any
image size and channel count. One ``ImageProjectiveTransformV3`` does flip, shift and scale for
the whole batch: with whole-pixel offsets and no scale its bilinear sampling is an exact copy.
Randomness is stateless, keyed by a per-batch seed from ``tf.data.Dataset.random``: the same
seed gives the same batches.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from host.errors import ConfigError


@dataclass(frozen=True)
class AugmentConfig:
    """What augmentation does; fractions are of the image height / width."""

    flip: bool = True  # random horizontal flip
    shift: float = 2 / 28  # largest shift, fraction of the size (whole pixels for clean images)
    camera_fraction: float = 0.0  # share of each batch that gets the camera effects below
    scale: tuple[float, float] = (0.92, 1.08)  # camera images: zoom range
    blur: float = 0.2  # camera images: largest weight of each neighbour in a [a, 1-2a, a] blur per axis
    gamma: tuple[float, float] = (0.8, 1.25)  # camera images: tone curve exponent range
    contrast: tuple[float, float] = (0.8, 1.0)  # camera images: gain range
    gradient: float = 0.06  # camera images: largest linear lighting offset at the image edge
    pedestal: float = 0.15  # camera images: largest lift of the centre over the corners (vignetting left over)
    shading: float = 0.2  # camera images: largest darkening of the corners relative to the centre
    noise: float = 0.03  # camera images: largest sensor-noise sigma (image range is [0, 1])
    fill: float = 0.0  # value shifted in at the edges (the background: 0 for light on dark)
    erase: float = 0.0  # probability that an image gets a random rectangle set to ``fill`` (random erasing)
    erase_size: tuple[float, float] = (0.15, 0.45)  # its sides, fractions of the image size

    def __post_init__(self) -> None:
        if not 0.0 <= self.camera_fraction <= 1.0:
            raise ConfigError(f"camera_fraction must be in [0, 1]. Got: {self.camera_fraction}")
        if not 0.0 <= self.shift < 0.5:
            raise ConfigError(f"shift must be a fraction of the image size in [0, 0.5). Got: {self.shift}")
        if not 0.0 <= self.blur < 1 / 3:
            raise ConfigError(f"blur must be in [0, 1/3) (a neighbour weighs less than the centre). Got: {self.blur}")
        if not 0.0 <= self.erase <= 1.0:
            raise ConfigError(f"erase must be a probability in [0, 1]. Got: {self.erase}")
        if not 0.0 < self.scale[0] <= self.scale[1]:
            raise ConfigError(f"scale must be a range (lo, hi) with 0 < lo <= hi. Got: {self.scale}")

    @property
    def active(self) -> bool:
        """False when augmentation would leave every image as it is."""
        return self.flip or self.shift > 0 or self.camera_fraction > 0 or self.erase > 0


def _uniform(seed: Any, shape: Any, lo: float, hi: float) -> Any:
    import tensorflow as tf

    return tf.random.stateless_uniform(shape, seed=seed, minval=lo, maxval=hi)


def _blur_axis(x: Any, a: Any, axis: int) -> Any:
    """(1 - 2a) x + a (left + right) along ``axis`` (1: rows, 2: columns), edges repeated."""
    import tensorflow as tf

    n = tf.shape(x)[axis]
    first = tf.gather(x, [0], axis=axis)
    last = tf.gather(x, [n - 1], axis=axis)
    padded = tf.concat([first, x, last], axis=axis)
    before = tf.gather(padded, tf.range(0, n), axis=axis)
    after = tf.gather(padded, tf.range(2, n + 2), axis=axis)
    return (1.0 - 2.0 * a) * x + a * (before + after)


def _erase(x: Any, seed: Any, config: AugmentConfig) -> Any:
    """Random erasing: with probability ``erase`` a rectangle (sides in ``erase_size``) becomes ``fill``."""
    import tensorflow as tf

    s = tf.random.experimental.stateless_split(seed, num=5)
    b = tf.shape(x)[0]
    lo, hi = config.erase_size
    on = tf.reshape(_uniform(s[0], [b], 0.0, 1.0) < config.erase, [-1, 1, 1, 1])
    hh, ww = _uniform(s[1], [b], lo, hi), _uniform(s[2], [b], lo, hi)
    cy, cx = _uniform(s[3], [b], 0.0, 1.0), _uniform(s[4], [b], 0.0, 1.0)
    yy = tf.reshape(tf.linspace(0.0, 1.0, tf.shape(x)[1]), [1, -1, 1, 1])
    xx = tf.reshape(tf.linspace(0.0, 1.0, tf.shape(x)[2]), [1, 1, -1, 1])
    r = lambda t: tf.reshape(t, [-1, 1, 1, 1])  # noqa: E731
    inside = (tf.abs(yy - r(cy)) <= r(hh) / 2) & (tf.abs(xx - r(cx)) <= r(ww) / 2) & on
    return tf.where(inside, tf.cast(config.fill, x.dtype), x)


def augment_batch(images: Any, seed: Any, config: AugmentConfig) -> Any:
    """Augment a float32 batch [B, H, W, C] in [0, 1]; ``seed`` is a stateless seed (int [2])."""
    import tensorflow as tf

    seeds = tf.random.experimental.stateless_split(seed, num=15)
    shape = tf.shape(images)
    b = shape[0]
    h = tf.cast(shape[1], tf.float32)
    w = tf.cast(shape[2], tf.float32)
    camera = _uniform(seeds[0], [b], 0.0, 1.0) < config.camera_fraction
    cam_f = tf.cast(camera, tf.float32)
    # geometry: output (x, y) samples input ((x - cx) * f / s + cx - tx, (y - cy) / s + cy - ty)
    flip = tf.where(_uniform(seeds[1], [b], 0.0, 1.0) < 0.5, -1.0, 1.0) if config.flip else tf.ones([b])
    tx = _uniform(seeds[2], [b], -config.shift, config.shift) * w
    ty = _uniform(seeds[3], [b], -config.shift, config.shift) * h
    tx = tf.where(camera, tx, tf.round(tx))  # clean images: whole pixels, so sampling is an exact copy
    ty = tf.where(camera, ty, tf.round(ty))
    lo, hi = config.scale
    s = tf.where(camera, tf.exp(_uniform(seeds[4], [b], math.log(lo), math.log(hi))), 1.0)
    cx, cy = (w - 1.0) / 2.0, (h - 1.0) / 2.0
    zeros = tf.zeros([b])
    transforms = tf.stack(
        [flip / s, zeros, cx - flip * cx / s - tx, zeros, 1.0 / s, cy - cy / s - ty, zeros, zeros], axis=1
    )
    x = tf.raw_ops.ImageProjectiveTransformV3(
        images=images, transforms=transforms, output_shape=shape[1:3], fill_value=config.fill,
        interpolation="BILINEAR", fill_mode="CONSTANT",
    )
    if config.erase > 0.0:
        x = _erase(x, seeds[14], config)
    if config.camera_fraction <= 0.0:
        return x
    per_image = lambda t: tf.reshape(t, [-1, 1, 1, 1])  # noqa: E731
    a = per_image(_uniform(seeds[5], [b], 0.0, config.blur) * cam_f)
    x = _blur_axis(_blur_axis(x, a, 1), a, 2)
    g_lo, g_hi = config.gamma
    gamma = per_image(tf.where(camera, tf.exp(_uniform(seeds[6], [b], math.log(g_lo), math.log(g_hi))), 1.0))
    gain = per_image(tf.where(camera, _uniform(seeds[7], [b], *config.contrast), 1.0))
    x = gain * tf.pow(tf.clip_by_value(x, 0.0, 1.0), gamma)
    # what uneven light and vignetting leave after the device subtracts the border as background:
    # the corners darker than the centre (shading), the background inside lifted over the corners
    # (pedestal), and a lighting gradient across the frame
    yy = tf.reshape(tf.linspace(-1.0, 1.0, shape[1]), [1, -1, 1, 1])
    xx = tf.reshape(tf.linspace(-1.0, 1.0, shape[2]), [1, 1, -1, 1])
    r2 = (xx * xx + yy * yy) / 2.0  # 0 in the centre, 1 in the corners
    shade = per_image(_uniform(seeds[12], [b], 0.0, config.shading) * cam_f)
    lift = per_image(_uniform(seeds[13], [b], 0.0, config.pedestal) * cam_f)
    gx = per_image(_uniform(seeds[8], [b], -config.gradient, config.gradient) * cam_f)
    gy = per_image(_uniform(seeds[9], [b], -config.gradient, config.gradient) * cam_f)
    x = x * (1.0 - shade * r2) + lift * (1.0 - r2) + gx * xx + gy * yy
    sigma = per_image(_uniform(seeds[10], [b], 0.0, config.noise) * cam_f)
    x = x + sigma * tf.random.stateless_normal(tf.shape(x), seed=seeds[11])
    return tf.clip_by_value(x, 0.0, 1.0)
