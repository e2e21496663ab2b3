"""Errors raised on the host side. Each says what went wrong and what to do next.

    HostError
    ├── DataError              no Fashion-MNIST source, a folder of images that cannot train, a bad labels file
    ├── OutputError            --out is unwritable, not empty, or lacks what a step needs
    ├── ConfigError            a bad argument (non-positive --epochs, unknown optimisation, ...)
    ├── ConversionError        the TFLite converter failed or produced a model that is not as promised
    │   ├── NotIntegerOnly     the int8 model still holds float tensors or non-int8 ops
    │   └── UnsupportedOps     the model needs Flex (select-TF) or custom ops the Pi's runtime lacks
    └── EvaluationError        a converted model cannot be run or scored
"""

from __future__ import annotations


class HostError(Exception):
    """Base of every host-side error."""


class DataError(HostError):
    """The data cannot be used: Fashion-MNIST missing, a folder of images that cannot train, a bad labels file."""


class OutputError(HostError):
    """The output folder cannot be used for this step."""


class ConfigError(HostError):
    """An argument is out of range or unknown."""


class ConversionError(HostError):
    """Converting the SavedModel to TFLite failed."""


class NotIntegerOnly(ConversionError):
    """The int8 model is not integer-only."""

    def __init__(self, message: str, offenders: tuple[str, ...] = ()):
        super().__init__(message)
        self.offenders = offenders


class UnsupportedOps(ConversionError):
    """The model needs ops that the Pi's TFLite runtimes cannot run."""

    def __init__(self, message: str, ops: tuple[str, ...] = ()):
        super().__init__(message)
        self.ops = ops


class EvaluationError(HostError):
    """A converted model could not be evaluated."""
