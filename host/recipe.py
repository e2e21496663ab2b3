"""The Fashion-MNIST recipe: the training config the Fashion path builds (its measured choices live here, not in ``train``)."""

from __future__ import annotations

from dataclasses import replace
from typing import Optional

from host.augment import AugmentConfig
from host.model import ModelConfig, ModelSpec
from host.train import DEFAULT_EPOCHS, TrainConfig

# Garments are left-right symmetric and sit on a black background (light on dark). Half of each
# batch gets the camera effects (host.augment): frames a camera takes of a garment lost 15 points
# without them (README, "Camera framing").
FASHION_AUGMENT = AugmentConfig(flip=True, shift=2 / 28, fill=0.0, camera_fraction=0.5)


def fashion_mnist(
    epochs: int = DEFAULT_EPOCHS, seed: int = 42, precision: str = "auto", model: Optional[ModelSpec] = None, flip: bool = True,
    camera_fraction: Optional[float] = None,
) -> TrainConfig:
    """The config `host run` / `host train` train Fashion-MNIST with (``model``: host.choose's pick, the small CNN by default)."""
    return TrainConfig(epochs=epochs, seed=seed, precision=precision, augment=_augment(flip, camera_fraction),
                       model=model if model is not None else ModelConfig())


def _augment(flip: bool, camera_fraction: Optional[float]) -> AugmentConfig:
    if camera_fraction is None:
        return replace(FASHION_AUGMENT, flip=flip)
    return replace(FASHION_AUGMENT, flip=flip, camera_fraction=camera_fraction)
