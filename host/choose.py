"""The model for the input: one rule, one place.

    --base mobilenet_v2 or --base-weights FILE   keras.applications.MobileNetV2 (ImageNet weights), frozen, new head
    --model auto, input below 64 pixels          the small CNN (host.model), as for 28x28 Fashion-MNIST
    --model auto, input of 64 pixels or more     the MobileNet-style network from scratch (host.mobilenet)
    --model cnn | mobilenet                      that one, whatever the size

Below 64 pixels the CNN's pooled 3x3 conv stages fit the input (28 px: 93,658 parameters); from
64 pixels up, full 3x3 convolutions and a flattened head grow with the image, while the
depthwise-separable network's cost stays small (width 0.5 at 96x96x3: 143k parameters).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from host.errors import ConfigError
from host.mobilenet import MobileNetConfig, MobileNetV2Transfer, check_weights_file
from host.model import ModelConfig, ModelSpec

MODEL_KINDS = ("auto", "cnn", "mobilenet")
BASES = ("mobilenet_v2",)
MOBILENET_MIN_SIZE = 64
DEFAULT_WIDTH = MobileNetConfig().width
DEFAULT_BASE_WIDTH = MobileNetV2Transfer().width


@dataclass(frozen=True)
class ModelChoice:
    """What the user asked for on the command line (None: decide from the input)."""

    kind: str = "auto"
    width: Optional[float] = None
    base: Optional[str] = None
    base_weights: Optional[str] = None
    fine_tune_layers: int = 0

    def __post_init__(self) -> None:
        if self.kind not in MODEL_KINDS:
            raise ConfigError(f"--model must be one of {', '.join(MODEL_KINDS)}. Got: {self.kind!r}")
        if self.base is not None and self.base not in BASES:
            raise ConfigError(f"--base must be {' or '.join(BASES)}. Got: {self.base!r}")

    def check_files(self) -> None:
        """Refuse a missing --base-weights before any data is loaded."""
        if self.base_weights is not None:
            check_weights_file(self.base_weights)


AUTO = ModelChoice()


def choose_model(choice: ModelChoice, image_size: int, default: Optional[ModelSpec] = None) -> ModelSpec:
    """The network for a square input of ``image_size`` pixels (``default``: the small CNN's config)."""
    transfer = choice.base is not None or choice.base_weights is not None
    if transfer:
        if choice.kind != "auto":
            raise ConfigError(f"--model {choice.kind} and --base/--base-weights exclude each other; --base picks MobileNetV2")
        return MobileNetV2Transfer(
            width=choice.width if choice.width is not None else DEFAULT_BASE_WIDTH,
            weights=choice.base_weights or "imagenet",
            fine_tune_layers=choice.fine_tune_layers,
        )
    if choice.fine_tune_layers:
        raise ConfigError("--fine-tune-layers applies to --base mobilenet_v2 only")
    kind = choice.kind
    if kind == "auto":
        kind = "cnn" if image_size < MOBILENET_MIN_SIZE else "mobilenet"
    if kind == "cnn":
        if choice.width is not None:
            raise ConfigError("--width applies to the MobileNet-style networks (inputs of 64 pixels or more, or --model mobilenet)")
        return default if default is not None else ModelConfig()
    return MobileNetConfig(width=choice.width if choice.width is not None else DEFAULT_WIDTH)
