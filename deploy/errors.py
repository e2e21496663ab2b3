"""Errors raised on the deploy side. Each says what went wrong and what to do next.

    DeployError
    ├── TargetError            a --host or inventory entry that cannot be parsed
    ├── ArtifactsError         the host pipeline's output is missing or inconsistent
    ├── ConnectError           cannot reach or log in to a host (refused, timeout, auth)
    │   └── HostKeyError       unknown or changed host key: refused before any command runs
    ├── RemoteError            a command on the device failed (carries the agent's answer)
    │   ├── LockedError        another deploy command holds the device root's lock (nothing was changed)
    │   ├── VerifyError        the pushed model failed its sha256 or golden check on the device
    │   └── HealthError        the daemon did not become healthy; the previous release was restored
    └── WheelhouseError        `pip download` for the target's platform failed
"""

from __future__ import annotations

from typing import Any, Optional


class DeployError(Exception):
    """Base of every deploy-side error."""


class TargetError(DeployError):
    """A --host value or inventory entry that cannot be parsed."""


class ArtifactsError(DeployError):
    """The artifacts folder (manifest, models, golden set) is missing or inconsistent."""


class ConnectError(DeployError):
    """The host cannot be reached or refuses the login."""


class HostKeyError(ConnectError):
    """The host's key is unknown or differs from the pinned one; nothing was run there."""

    def __init__(self, message: str, host: str, fingerprint: str, changed: bool):
        super().__init__(message)
        self.host = host
        self.fingerprint = fingerprint
        self.changed = changed


class RemoteError(DeployError):
    """A command on the device failed; ``answer`` is the agent's JSON reply, if any."""

    def __init__(self, message: str, answer: Optional[dict[str, Any]] = None):
        super().__init__(message)
        self.answer = answer or {}


class LockedError(RemoteError):
    """Another push or control command holds the device root's lock; this one changed nothing."""


class VerifyError(RemoteError):
    """The pushed release failed its checks on the device and never became current."""


class HealthError(RemoteError):
    """The new release's daemon was not healthy in time; the previous release was restored."""


class WheelhouseError(DeployError):
    """Wheels for the target platform could not be downloaded."""
