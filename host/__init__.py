"""The host side of edgekit: data, training, conversion to TFLite, and evaluation (TensorFlow lives here only)."""

__version__ = "0.1.0"
