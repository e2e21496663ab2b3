"""The daemon command line of one release: the device's own ``daemon_args`` plus what the release's config adds.

Where collected and uncertain frames go is the layout's fact (``deploy.agent.layout``: ``data/``,
``uncertain/``), not the config's: a release says *whether* its daemon collects (``collect``)
and keeps uncertain frames (``keep_uncertain``: margin and limits); the agent adds the paths.
"""

from __future__ import annotations

from typing import Any, Optional

from deploy.agent.layout import Layout
from device.service import daemon_args

# keep_uncertain's keys in config.json → the daemon's options
UNCERTAIN_OPTIONS = {"margin": "--margin", "every_s": "--uncertain-every-s", "max_files": "--uncertain-max-files",
                     "max_bytes": "--uncertain-max-bytes"}


def config_args(config: dict[str, Any], lay: Optional[Layout] = None) -> list[str]:
    """The daemon's --runtime/--threads/--xnnpack options, collection and uncertain-frame options, and extra arguments of config.json."""
    args = []
    if config.get("runtime") and config["runtime"] != "auto":
        args += ["--runtime", str(config["runtime"])]
    if config.get("threads"):
        args += ["--threads", str(int(config["threads"]))]
    if config.get("xnnpack"):
        args += ["--xnnpack", str(config["xnnpack"])]
    if lay is not None and config.get("collect"):
        args += ["--data-dir", str(lay.data)]
    unc = config.get("keep_uncertain")
    if lay is not None and isinstance(unc, dict):
        args += ["--keep-uncertain", str(lay.uncertain)]
        for key, flag in UNCERTAIN_OPTIONS.items():
            if unc.get(key) is not None:
                args += [flag, str(unc[key])]
    return args + [str(x) for x in config.get("extra_args", [])]


def writable_dirs(config: dict[str, Any], lay: Layout) -> list[str]:
    """Folders the daemon of this config writes to besides its logs (systemd's ReadWritePaths)."""
    out = []
    if config.get("collect"):
        out.append(str(lay.data))
    if isinstance(config.get("keep_uncertain"), dict):
        out.append(str(lay.uncertain))
    return out


def command(python: str, manifest: str, config: dict[str, Any], results: str, lay: Optional[Layout] = None) -> list[str]:
    """argv that runs the daemon of a release with ``python``."""
    return [python, *daemon_args(manifest=manifest, variant=str(config["variant"]), source=str(config.get("source", "synthetic")),
                                 port=int(config["port"]), results=results, extra_args=config_args(config, lay))]
