"""The daemon command line of one release: the device's own ``daemon_args`` plus what the release's config adds."""

from __future__ import annotations

from typing import Any

from device.service import daemon_args


def config_args(config: dict[str, Any]) -> list[str]:
    """The daemon's --runtime/--threads/--xnnpack options and extra arguments a release's config.json asks for."""
    args = []
    if config.get("runtime") and config["runtime"] != "auto":
        args += ["--runtime", str(config["runtime"])]
    if config.get("threads"):
        args += ["--threads", str(int(config["threads"]))]
    if config.get("xnnpack"):
        args += ["--xnnpack", str(config["xnnpack"])]
    return args + [str(x) for x in config.get("extra_args", [])]


def command(python: str, manifest: str, config: dict[str, Any], results: str) -> list[str]:
    """argv that runs the daemon of a release with ``python``."""
    return [python, *daemon_args(manifest=manifest, variant=str(config["variant"]), source=str(config.get("source", "synthetic")),
                                 port=int(config["port"]), results=results, extra_args=config_args(config))]
