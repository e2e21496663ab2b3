"""Errors raised on the device side. Each says what went wrong and what to do next.

    DeviceError
    ├── ManifestError          manifest.json missing, unreadable or inconsistent
    ├── ModelError             model file missing, wrong sha256, not TFLite, spec mismatch
    ├── RuntimeNotFound        no TFLite runtime importable (carries an install hint)
    ├── SourceError            a frame source cannot be opened or read
    │   └── CameraTimeout      the camera did not deliver a frame in time
    ├── FrameError             a frame of the wrong shape or dtype (counted and skipped)
    └── ServerError            the status HTTP server cannot bind its port
"""

from __future__ import annotations


class DeviceError(Exception):
    """Base of every device-side error."""


class ManifestError(DeviceError):
    """manifest.json is missing, unreadable or inconsistent."""


class ModelError(DeviceError):
    """A model file is missing, corrupt, or does not match its manifest."""


class RuntimeNotFound(DeviceError):
    """No TFLite runtime could be imported."""


class SourceError(DeviceError):
    """A frame source cannot be opened or read."""


class CameraTimeout(SourceError):
    """The camera did not deliver a frame in time."""


class FrameError(DeviceError):
    """A frame has the wrong shape or dtype for the pipeline."""


class ServerError(DeviceError):
    """The status HTTP server cannot bind its port (another daemon on it, or no permission)."""


def one_line(text: str, limit: int = 300) -> str:
    """``text`` as one line of at most ``limit`` characters, for error messages that quote other errors."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
