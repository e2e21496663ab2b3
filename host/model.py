"""The classifier: a small batch-normalised CNN that pools early, so the compute stays small.

    28x28x1 ─ conv3x3 16 ─ pool ─ 14x14: conv3x3 32, conv3x3 32 ─ pool ─ 7x7: conv3x3 64, conv3x3 64
            ─ pool ─ 3x3x64 ─ dense 40 ─ dropout ─ dense 10 softmax          (93,658 parameters)

Compute goes where the resolution is: a conv weight at 28x28 costs 784 multiply-adds per image,
at 14x14 196, at 7x7 49, in a dense layer 1. So only one narrow conv sees the full image, the
wide convs work after pooling, and about a third of the parameters sit in the cheap dense head:
~5.5 M multiply-adds per image. Batch norm follows every conv except the full-resolution stem
(the input is already in [0, 1], and batch norm on the largest activation cost more training
time than the rest of the net). Augmentation is *not* part of the model (it runs in the tf.data
pipeline): the exported model is inference-only, which keeps the int8 conversion free of Flex ops.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from host.errors import ConfigError

NUM_CLASSES = 10
INPUT_SHAPE = (28, 28, 1)


class ModelSpec(Protocol):
    """What training needs of a network choice: a name and a builder for an input shape and class count."""

    @property
    def name(self) -> str:
        """The Keras model's name."""
        ...

    def build(self, input_shape: tuple[int, ...], num_classes: int) -> Any:
        """A fresh Keras model: float32 [N, *input_shape] → ``num_classes`` softmax scores."""
        ...


@dataclass(frozen=True)
class ModelConfig:
    """Widths of the conv stages and the head, and the dropout before the classifier."""

    conv_filters: tuple[int, ...] = (16, 32, 32, 64, 64)
    pool_after: tuple[bool, ...] = (True, False, True, False, True)
    dense_units: int = 40
    dropout: float = 0.1
    name: str = "fmnist_cnn"
    stem_stride: int = 1  # 2: the first conv samples every other pixel (a quarter of its positions)

    def __post_init__(self) -> None:
        if self.stem_stride < 1:
            raise ConfigError(f"stem_stride must be a positive integer. Got: {self.stem_stride}")

    def build(self, input_shape: tuple[int, ...] = INPUT_SHAPE, num_classes: int = NUM_CLASSES) -> Any:
        """The CNN for this input shape and class count."""
        return build_model(self, input_shape, num_classes)

    def multiply_adds(self, input_shape: tuple[int, ...] = INPUT_SHAPE, num_classes: int = NUM_CLASSES) -> int:
        """Multiply-adds of one image's forward pass through the convs and dense layers (batch norm, pooling left out)."""
        h, w, c = input_shape
        total = 0
        for i, (f, pool) in enumerate(zip(self.conv_filters, self.pool_after)):
            if i == 0:
                h, w = -(-h // self.stem_stride), -(-w // self.stem_stride)  # padding "same": ceil(size / stride)
            total += h * w * c * 9 * f  # 3x3, padding "same"
            c = f
            if pool:
                h, w = h // 2, w // 2
        flat = h * w * c
        if self.dense_units:
            total += flat * self.dense_units
            flat = self.dense_units
        return total + flat * num_classes


def _conv_bn_relu(x: Any, filters: int, name: str, batch_norm: bool = True, strides: int = 1) -> Any:
    import keras

    x = keras.layers.Conv2D(filters, 3, strides=strides, padding="same", use_bias=not batch_norm, name=f"{name}_conv")(x)
    if batch_norm:
        # momentum 0.9: moving statistics settle within ~50 steps, so even brief runs infer sensibly
        x = keras.layers.BatchNormalization(momentum=0.9, name=f"{name}_bn")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x)


def build_model(
    config: ModelConfig = ModelConfig(), input_shape: tuple[int, ...] = INPUT_SHAPE, num_classes: int = NUM_CLASSES
) -> Any:
    """A Keras model: float32 [N, *input_shape] (default 28x28x1 in [0, 1]) → ``num_classes`` softmax scores."""
    import keras

    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = inputs
    for i, (f, pool) in enumerate(zip(config.conv_filters, config.pool_after)):
        # no batch norm on the full-resolution stem: the input is already in [0, 1], and batch
        # norm on the largest activation cost more training time than the whole rest of the net
        x = _conv_bn_relu(x, f, f"conv{i + 1}", batch_norm=i > 0, strides=config.stem_stride if i == 0 else 1)
        if pool:
            x = keras.layers.MaxPooling2D(2, name=f"pool{i + 1}")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    if config.dense_units:
        x = keras.layers.Dense(config.dense_units, use_bias=False, name="dense")(x)
        x = keras.layers.BatchNormalization(momentum=0.9, name="dense_bn")(x)
        x = keras.layers.ReLU(name="dense_relu")(x)
    x = keras.layers.Dropout(config.dropout, name="dropout")(x)
    # float32 scores even when training in mixed precision
    outputs = keras.layers.Dense(num_classes, activation="softmax", dtype="float32", name="scores")(x)
    return keras.Model(inputs, outputs, name=config.name)
