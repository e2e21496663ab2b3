"""MobileNet-style networks for photos: a small one built from scratch, and Keras's MobileNetV2 to fine-tune.

``MobileNetConfig`` (from scratch): MobileNet v1's depthwise-separable blocks, cut down for a
Pi-sized input, with a width multiplier ``width`` (every layer's filters times ``width``, rounded
to a multiple of 8)::

    S x S x C ─ conv3x3/2 32 ─ [dw3x3 + pw1x1] 64 ─ /2 128 ─ 128 ─ /2 256 ─ 256 ─ /2 512 ─ 512
            ─ global average pool ─ dropout ─ dense K softmax

Each block is a 3x3 depthwise conv (one filter per channel) then a 1x1 pointwise conv, each with
batch norm and ReLU6 (bounded activations quantise well to int8). Depthwise-separable blocks
cost about 1/8 of a full 3x3 conv's multiply-adds, which is what makes 64-160 px RGB affordable
on a Pi. At 96x96x3 and width 0.5: about 143k parameters and 14 M multiply-adds per image.

``MobileNetV2Transfer``: ``keras.applications.MobileNetV2`` without its top, with ImageNet
weights (downloaded by Keras into ~/.keras/models, or read from a local file for machines
without network), a new pooled dense head, and the base frozen as in TF Model Maker's default
(``fine_tune_layers`` trains the base's top N layers too; batch norm stays frozen). The model
takes [0, 1] like every edgekit model and rescales to MobileNetV2's [-1, 1] inside, so training,
conversion and the manifest treat it like the others; a grey input is repeated to three channels.
"""

from __future__ import annotations

import contextlib
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from host.errors import ConfigError

# (filters at width 1, stride) of the depthwise-separable blocks
BLOCKS: tuple[tuple[int, int], ...] = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1))
IMAGENET_WIDTHS = (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)  # the widths Keras has ImageNet weights for
IMAGENET_SIZES = (96, 128, 160, 192, 224)  # the input sizes it has them for (others load the 224 ones)
MOBILENET_V2_MIN_SIZE = 32
KERAS_WEIGHTS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v2/"


def scaled(filters: int, width: float) -> int:
    """``filters * width`` rounded to a multiple of 8, at least 8 (never more than 10 % below the product)."""
    v = max(8, int(filters * width + 4) // 8 * 8)
    return v + 8 if v < 0.9 * filters * width else v


def _check_width(width: float) -> None:
    if not 0.0 < width <= 4.0:
        raise ConfigError(f"--width (the width multiplier) must be in (0, 4]. Got: {width}")


@dataclass(frozen=True)
class MobileNetConfig:
    """A MobileNet-style depthwise-separable network built from scratch (see the module docstring)."""

    width: float = 0.5
    stem_filters: int = 32
    blocks: tuple[tuple[int, int], ...] = BLOCKS
    dropout: float = 0.2
    # Moving statistics that follow the weights within a few steps: a folder of a hundred photos
    # trains a few steps an epoch, and with 0.9 the validation accuracy stayed at chance for 15
    # epochs of 4 steps (while training accuracy was 97 %); with 0.7 it caught up after 4.
    bn_momentum: float = 0.7
    name: str = "mobilenet_style"

    def __post_init__(self) -> None:
        _check_width(self.width)

    def build(self, input_shape: tuple[int, ...], num_classes: int) -> Any:
        """A Keras model: float32 [N, *input_shape] in [0, 1] → ``num_classes`` softmax scores."""
        import keras

        def bn_relu6(x: Any, name: str) -> Any:
            x = keras.layers.BatchNormalization(momentum=self.bn_momentum, name=f"{name}_bn")(x)
            return keras.layers.ReLU(max_value=6.0, name=f"{name}_relu")(x)

        inputs = keras.Input(shape=tuple(input_shape), name="image")
        x = keras.layers.Conv2D(scaled(self.stem_filters, self.width), 3, strides=2, padding="same", use_bias=False, name="stem_conv")(inputs)
        x = bn_relu6(x, "stem")
        for i, (filters, stride) in enumerate(self.blocks, start=1):
            x = keras.layers.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False, name=f"block{i}_dw")(x)
            x = bn_relu6(x, f"block{i}_dw")
            x = keras.layers.Conv2D(scaled(filters, self.width), 1, use_bias=False, name=f"block{i}_pw")(x)
            x = bn_relu6(x, f"block{i}_pw")
        x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
        x = keras.layers.Dropout(self.dropout, name="dropout")(x)
        # float32 scores even when training in mixed precision
        outputs = keras.layers.Dense(num_classes, activation="softmax", dtype="float32", name="scores")(x)
        return keras.Model(inputs, outputs, name=self.name)


def imagenet_weights_url(width: float, size: int) -> str:
    """Where Keras downloads MobileNetV2's ImageNet weights (no top) for this width and input size."""
    rows = size if size in IMAGENET_SIZES else 224
    return f"{KERAS_WEIGHTS_URL}mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{float(width)}_{rows}_no_top.h5"


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def check_weights_file(path: str) -> None:
    """Refuse a --base-weights path that is not a file, in one line."""
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"--base-weights {path} is a folder; pass a MobileNetV2 weights file (no top, .h5 or .weights.h5)")
    if not p.is_file():
        raise ConfigError(f"--base-weights {path} does not exist; pass a MobileNetV2 weights file (no top, .h5 or .weights.h5)")


@dataclass(frozen=True)
class MobileNetV2Transfer:
    """keras.applications.MobileNetV2 (no top) with ImageNet weights, a new head, the base frozen."""

    width: float = 0.35
    weights: str = "imagenet"  # or the path of a local weights file (.h5 / .weights.h5)
    fine_tune_layers: int = 0
    dropout: float = 0.2
    name: str = "mobilenet_v2_transfer"

    def __post_init__(self) -> None:
        _check_width(self.width)
        if self.fine_tune_layers < 0:
            raise ConfigError(f"--fine-tune-layers must be 0 or more. Got: {self.fine_tune_layers}")
        if self.weights == "imagenet" and self.width not in IMAGENET_WIDTHS:
            raise ConfigError(
                f"Keras has ImageNet weights for MobileNetV2 at widths {', '.join(map(str, IMAGENET_WIDTHS))}. Got: --width {self.width}"
            )
        if self.weights != "imagenet":
            check_weights_file(self.weights)

    def base(self, size: tuple[int, int]) -> Any:
        """The MobileNetV2 feature extractor with its weights loaded, or a ConfigError saying how to get them."""
        import keras

        h, w = size
        if min(h, w) < MOBILENET_V2_MIN_SIZE:
            raise ConfigError(f"MobileNetV2 needs an input of at least {MOBILENET_V2_MIN_SIZE}x{MOBILENET_V2_MIN_SIZE}. Got: --image-size {h}")
        try:
            # Keras reports its download on stdout (kept clean for --json) and a mismatched file
            # with one warning per layer before it raises: the error below says it in one line
            with contextlib.redirect_stdout(sys.stderr), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return keras.applications.MobileNetV2(input_shape=(h, w, 3), alpha=self.width, include_top=False, weights=self.weights)
        except Exception as e:
            if self.weights == "imagenet":
                raise ConfigError(
                    f"cannot get MobileNetV2's ImageNet weights (width {self.width}): {_first_line(e)}. Without network, "
                    f"download {imagenet_weights_url(self.width, h)} on another machine and pass --base-weights FILE"
                ) from e
            raise ConfigError(
                f"--base-weights {self.weights} does not fit MobileNetV2 at width {self.width} without its top: {_first_line(e)}. "
                f"Pass the _no_top weights file for this --width (e.g. {imagenet_weights_url(self.width, h).rsplit('/', 1)[1]})"
            ) from e

    def build(self, input_shape: tuple[int, ...], num_classes: int) -> Any:
        """A Keras model: float32 [N, H, W, C] in [0, 1] → ``num_classes`` softmax scores."""
        import keras

        h, w, c = (int(d) for d in input_shape)
        base = self.base((h, w))
        base.trainable = self.fine_tune_layers > 0
        if self.fine_tune_layers:
            for i, layer in enumerate(base.layers):
                top = i >= len(base.layers) - self.fine_tune_layers
                layer.trainable = top and not isinstance(layer, keras.layers.BatchNormalization)
        inputs = keras.Input(shape=(h, w, c), name="image")
        x = inputs if c == 3 else keras.layers.Concatenate(name="grey_to_rgb")([inputs] * 3)
        x = keras.layers.Rescaling(2.0, offset=-1.0, name="to_minus1_1")(x)  # MobileNetV2's preprocess_input
        x = base(x)
        x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
        x = keras.layers.Dropout(self.dropout, name="dropout")(x)
        outputs = keras.layers.Dense(num_classes, activation="softmax", dtype="float32", name="scores")(x)
        return keras.Model(inputs, outputs, name=self.name)
