"""The MobileNet-style network from scratch, MobileNetV2 from a local weights file, and the model-choice rule."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from host.choose import ModelChoice, choose_model
from host.errors import ConfigError
from host.mobilenet import MobileNetConfig, MobileNetV2Transfer, imagenet_weights_url, scaled
from host.model import ModelConfig


def test_from_scratch_network_is_depthwise_separable_and_scales_with_width() -> None:
    m = MobileNetConfig(width=0.5).build((96, 96, 3), 5)
    kinds = [type(layer).__name__ for layer in m.layers]
    assert kinds.count("DepthwiseConv2D") == len(MobileNetConfig().blocks)
    assert not any(k.startswith("Random") for k in kinds) and "Flatten" not in kinds
    out = np.asarray(m(np.random.default_rng(0).random((2, 96, 96, 3), dtype=np.float32), training=False))
    assert out.shape == (2, 5)
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-5)
    counts = {w: MobileNetConfig(width=w).build((96, 96, 3), 5).count_params() for w in (0.25, 0.5, 1.0)}
    assert counts[0.25] < counts[0.5] < counts[1.0] and 3.0 < counts[1.0] / counts[0.5] < 4.5  # pointwise convs grow ~ width^2
    assert counts[0.5] < 200_000
    # global pooling: the parameter count does not depend on the input size
    assert MobileNetConfig().build((160, 128, 1), 5).count_params() == MobileNetConfig().build((64, 64, 1), 5).count_params()


def test_width_rounding_follows_mobilenet() -> None:
    assert [scaled(f, 0.5) for f in (32, 64, 128, 256, 512)] == [16, 32, 64, 128, 256]
    assert scaled(32, 0.25) == 8 and scaled(64, 0.35) == 24 and scaled(16, 0.1) == 8


def test_model_choice_rule() -> None:
    auto = ModelChoice()
    assert isinstance(choose_model(auto, 28), ModelConfig)
    assert isinstance(choose_model(auto, 63), ModelConfig)
    assert choose_model(auto, 64) == MobileNetConfig(width=0.5)
    assert choose_model(ModelChoice(width=0.75), 96) == MobileNetConfig(width=0.75)
    assert isinstance(choose_model(ModelChoice(kind="cnn"), 96), ModelConfig)
    assert isinstance(choose_model(ModelChoice(kind="mobilenet"), 28), MobileNetConfig)
    with pytest.raises(ConfigError, match="--width applies to the MobileNet"):
        choose_model(ModelChoice(width=0.5), 28)
    with pytest.raises(ConfigError, match="exclude each other"):
        choose_model(ModelChoice(kind="cnn", base="mobilenet_v2"), 96)
    with pytest.raises(ConfigError, match="--fine-tune-layers applies to --base"):
        choose_model(ModelChoice(fine_tune_layers=3), 96)
    with pytest.raises(ConfigError, match="ImageNet weights for MobileNetV2 at widths"):
        choose_model(ModelChoice(base="mobilenet_v2", width=0.6), 96)
    with pytest.raises(ConfigError, match="--model must be one of"):
        ModelChoice(kind="resnet")


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[np.ndarray]]:
    """A MobileNetV2 (width 0.35, no top) weights file, made here: no download."""
    import keras

    base = keras.applications.MobileNetV2(input_shape=(96, 96, 3), alpha=0.35, include_top=False, weights=None)
    path = tmp_path_factory.mktemp("weights") / "mobilenet_v2_0.35_no_top.weights.h5"
    base.save_weights(path)
    return path, base.get_weights()


def test_base_weights_file_is_loaded_and_frozen(weights_file: tuple[Path, list[np.ndarray]]) -> None:
    path, expected = weights_file
    spec = choose_model(ModelChoice(base_weights=str(path)), 96)
    assert spec == MobileNetV2Transfer(width=0.35, weights=str(path))
    m = spec.build((96, 96, 3), 4)
    base = next(layer for layer in m.layers if type(layer).__name__ == "Functional")
    for got, want in zip(base.get_weights(), expected):
        np.testing.assert_array_equal(got, want)
    assert not base.trainable
    trainable = sum(int(np.prod(w.shape)) for w in m.trainable_weights)
    assert trainable == (base.output.shape[-1] + 1) * 4  # the new head only
    assert tuple(m(np.zeros((1, 96, 96, 3), np.float32)).shape) == (1, 4)
    # grey input: repeated to three channels in the model
    grey = spec.build((96, 96, 1), 4)
    assert tuple(grey.input_shape) == (None, 96, 96, 1)


def test_fine_tune_layers_trains_the_top_but_not_batch_norm(weights_file: tuple[Path, list[np.ndarray]]) -> None:
    import keras

    m = MobileNetV2Transfer(weights=str(weights_file[0]), fine_tune_layers=10).build((96, 96, 3), 4)
    base = next(layer for layer in m.layers if type(layer).__name__ == "Functional")
    trainable = [layer for layer in base.layers if layer.trainable and layer.weights]
    assert trainable and all(not isinstance(layer, keras.layers.BatchNormalization) for layer in trainable)
    assert all(base.layers.index(layer) >= len(base.layers) - 10 for layer in trainable)


def test_a_weights_file_that_does_not_fit_is_one_line(weights_file: tuple[Path, list[np.ndarray]], tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        MobileNetV2Transfer(width=0.5, weights=str(weights_file[0])).build((96, 96, 3), 4)
    msg = str(e.value)
    assert "does not fit MobileNetV2 at width 0.5" in msg and "_no_top" in msg and "\n" not in msg
    with pytest.raises(ConfigError, match="does not exist"):
        MobileNetV2Transfer(weights=str(tmp_path / "missing.h5"))
    with pytest.raises(ConfigError, match="at least 32x32"):
        MobileNetV2Transfer(weights=str(weights_file[0])).build((28, 28, 1), 4)


def test_imagenet_url_names_keras_file() -> None:
    assert imagenet_weights_url(0.35, 96).endswith("mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_96_no_top.h5")
    assert imagenet_weights_url(1.0, 100).endswith("_1.0_224_no_top.h5")  # Keras loads the 224 weights for other sizes
