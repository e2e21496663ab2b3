"""What a release is: its files (device code, model, manifest, golden set, config), its content-hash id.

On the device (the whole layout is in ``deploy.agent.layout``)::

    <remote-dir>/releases/<id>/code/device/...      the device package source
                              model/manifest.json, model/<variant>.tflite, model/golden.npz
                              config.json, requirements.txt, release.json
                              venv -> ../../venvs/<requirements hash>   (made on the device)
    <remote-dir>/current -> releases/<id>            switched atomically and durably

The id is a hash of every file's path and sha256 except ``release.json`` (which records when
and from where it was pushed), so pushing the same thing twice yields the same id.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from deploy.agent.build import package_dir
from deploy.agent.protocol import RELEASE_ID_LENGTH
from deploy.errors import ArtifactsError
from device.errors import ManifestError
from device.manifest import (
    MANIFEST_NAME,
    Manifest,
    Variant,
    load_manifest,
    sha256_bytes,
    sha256_file,
)

KEEP_RELEASES = 3
DEFAULT_VARIANT = "int8"  # what a push runs unless told otherwise (and what --variant auto falls back to)
ID_LENGTH = RELEASE_ID_LENGTH


@dataclass(frozen=True)
class KeepUncertain:
    """The daemon keeps the frames it was unsure of (``device.uncertain``); None fields: the daemon's defaults."""

    margin: float = 0.2
    every_s: Optional[float] = None
    max_files: Optional[int] = None
    max_bytes: Optional[int] = None

    def __post_init__(self) -> None:
        if not 0.0 < self.margin <= 1.0:
            raise ArtifactsError(f"--margin must be above 0 and at most 1 (top-1 minus top-2 score). Got: {self.margin}")

    def to_json(self) -> dict[str, Any]:
        """The set fields (the agent turns them into the daemon's --margin, --uncertain-* options)."""
        return {k: getattr(self, k) for k in ("margin", "every_s", "max_files", "max_bytes") if getattr(self, k) is not None}


@dataclass(frozen=True)
class ReleaseConfig:
    """How the daemon runs this release on the device.

    ``collect``: the daemon answers ``POST /collect`` (``deploy collect``), writing under the
    device's data folder; ``keep_uncertain``: it keeps uncertain frames in the device's
    uncertain folder. Where those folders are is the agent's layout, not the config's.
    """

    variant: str
    port: int
    source: str = "synthetic"
    runtime: str = "auto"
    threads: Optional[int] = None
    extra_args: tuple[str, ...] = ()
    collect: bool = True
    keep_uncertain: Optional[KeepUncertain] = None
    xnnpack: Optional[str] = None  # on | off; None: the runtime's default (on)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict (stable key order, so the id is stable; ``xnnpack`` only when set)."""
        d: dict[str, Any] = {"variant": self.variant, "port": self.port, "source": self.source, "runtime": self.runtime,
                             "threads": self.threads, "extra_args": list(self.extra_args), "collect": self.collect,
                             "keep_uncertain": None if self.keep_uncertain is None else self.keep_uncertain.to_json()}
        if self.xnnpack is not None:
            d["xnnpack"] = self.xnnpack
        return d


@dataclass(frozen=True)
class ReleaseFile:
    """One file of a release: its path in the release, and either a local path or in-memory bytes."""

    name: str
    sha256: str
    size_bytes: int
    local: Optional[Path] = None
    data: Optional[bytes] = None


@dataclass(frozen=True)
class Release:
    """Everything one push uploads, with its content-hash id."""

    id: str
    variant: str
    model_sha256: str
    files: tuple[ReleaseFile, ...]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def size_bytes(self) -> int:
        """Total bytes of all files."""
        return sum(f.size_bytes for f in self.files)

    def meta_bytes(self) -> bytes:
        """release.json: id, variant, file hashes, and when/where it was built."""
        return (json.dumps({**self.meta, "id": self.id, "variant": self.variant, "model_sha256": self.model_sha256,
                            "files": {f.name: {"sha256": f.sha256, "bytes": f.size_bytes} for f in self.files}},
                           indent=1, sort_keys=True) + "\n").encode()


def device_package_dir() -> Path:
    """Where the ``device`` package's source lives on this host (without importing its modules)."""
    try:
        return package_dir("device")
    except FileNotFoundError as e:
        raise ArtifactsError(str(e)) from None


def device_code_files() -> list[tuple[str, Path]]:
    """(name in release, local path) for the device package's sources and systemd files."""
    root = device_package_dir()
    out = []
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        if not p.is_file() or "__pycache__" in rel.parts or any(part.startswith(".") for part in rel.parts):
            continue
        if p.suffix in (".py", ".service", ".txt", ".json", ".toml") or rel.parts[0] == "systemd":
            out.append(("code/device/" + rel.as_posix(), p))
    return out


def _from_file(name: str, path: Path) -> ReleaseFile:
    return ReleaseFile(name, sha256_file(path), path.stat().st_size, local=path)


def _from_bytes(name: str, data: bytes) -> ReleaseFile:
    return ReleaseFile(name, sha256_bytes(data), len(data), data=data)


def load_artifacts(artifacts: Path) -> Manifest:
    """The manifest of a host-pipeline output folder, with a clear error when it is not one."""
    try:
        return load_manifest(Path(artifacts).expanduser())
    except ManifestError as e:
        raise ArtifactsError(f"--artifacts {artifacts}: {e}") from e


def artifact_variant(manifest: Manifest, name: str) -> Variant:
    """The manifest's variant ``name``, or an ArtifactsError listing those it has."""
    try:
        return manifest.variant(name)
    except ManifestError as e:
        raise ArtifactsError(str(e)) from e


def build_release(artifacts: Path, config: ReleaseConfig, requirements_text: str) -> Release:
    """Collect and hash a release for ``config.variant``; refuses a model that does not match its manifest."""
    manifest = load_artifacts(artifacts)
    variant = artifact_variant(manifest, config.variant)
    model = manifest.model_path(config.variant)
    if not model.is_file():
        raise ArtifactsError(f"{model} (variant {config.variant}) is missing; re-run the host pipeline")
    got = sha256_file(model)
    if got != variant.sha256:
        raise ArtifactsError(
            f"{model} has sha256 {got[:12]}… but the manifest says {variant.sha256[:12]}…: the file changed after "
            "conversion. Re-run the host pipeline so model and manifest agree"
        )
    if manifest.golden is None:
        raise ArtifactsError(f"{manifest.root / MANIFEST_NAME} names no golden set, which the on-device check needs; re-run the host pipeline")
    golden = manifest.golden_path()
    if not golden.is_file() or sha256_file(golden) != manifest.golden.sha256:
        raise ArtifactsError(f"{golden} is missing or does not match the manifest; re-run the host pipeline")
    files = [
        _from_file(f"model/{MANIFEST_NAME}", manifest.root / MANIFEST_NAME),
        _from_file(f"model/{variant.path}", model),
        _from_file(f"model/{manifest.golden.path}", golden),
        *(_from_file(name, p) for name, p in device_code_files()),
        _from_bytes("config.json", (json.dumps(config.to_json(), indent=1, sort_keys=True) + "\n").encode()),
        _from_bytes("requirements.txt", requirements_text.encode()),
    ]
    names = [f.name for f in files]
    if len(set(names)) != len(names):
        raise ArtifactsError(f"two files map to the same release path: {sorted(n for n in names if names.count(n) > 1)}")
    digest = hashlib.sha256()
    for f in sorted(files, key=lambda f: f.name):
        digest.update(f"{f.name}\0{f.sha256}\n".encode())
    meta = {"created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "source": f"{getpass.getuser()}@{platform.node()}",
            "artifacts": str(manifest.root), "config": config.to_json()}
    return Release(digest.hexdigest()[:ID_LENGTH], config.variant, variant.sha256, tuple(files), meta)
