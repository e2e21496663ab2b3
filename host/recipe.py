"""The Fashion-MNIST recipe: the training config the Fashion path builds (its measured choices live here, not in ``train``)."""

from __future__ import annotations

from dataclasses import replace
from typing import Optional

from host.augment import AugmentConfig
from host.model import ModelConfig, ModelSpec
from host.train import DEFAULT_EPOCHS, TrainConfig

# Garments are left-right symmetric and sit on a black background (light on dark).
FASHION_AUGMENT = AugmentConfig(flip=True, shift=2 / 28, fill=0.0)


def fashion_mnist(
    epochs: int = DEFAULT_EPOCHS, seed: int = 42, precision: str = "auto", model: Optional[ModelSpec] = None, flip: bool = True
) -> TrainConfig:
    """The config `host run` / `host train` train Fashion-MNIST with (``model``: host.choose's pick, the small CNN by default)."""
    return TrainConfig(epochs=epochs, seed=seed, precision=precision, augment=replace(FASHION_AUGMENT, flip=flip),
                       model=model if model is not None else ModelConfig())
