"""Fixtures for the emulated Raspberry Pi OS target (Debian Bookworm arm64 under qemu-user).

Everything in this folder carries the ``arm64`` marker (added here, so nothing slips into the
everyday suite). The session builds the cached root if needed (``build_rootfs.py``), mounts it
once, and on teardown checks that no process and no mount is left inside it.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from arm64_compare import Kit, stage_kit  # noqa: E402
from arm64_target import Arm64Session, SshTarget, free_port, running_sshd  # noqa: E402
from build_rootfs import BuildError, Paths, binfmt_problem, build  # noqa: E402

REPO = HERE.parents[1]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test under tests/arm64 is an arm64 test (and slow)."""
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.arm64)
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def arm64_paths() -> Paths:
    """The built root and wheelhouse; skips when this machine cannot run aarch64 binaries."""
    problem = binfmt_problem()
    if problem:
        pytest.skip(f"arm64 target unavailable: {problem}")
    paths = Paths.from_env()
    try:
        build(paths)
    except BuildError as e:
        msg = str(e)
        if "binfmt" in msg or "qemu" in msg:
            pytest.skip(f"arm64 target unavailable: {msg}")
        raise
    return paths


@pytest.fixture(scope="session")
def arm64(arm64_paths: Paths) -> Iterator[Arm64Session]:
    """The root, locked and mounted; torn down with a check that nothing is left behind."""
    with Arm64Session(arm64_paths) as session:
        yield session
    # Checked by the session before it let go of the lock: a run waiting for the root mounts it at once.
    left_pids, left_mounts = session.left_pids, session.left_mounts
    assert not left_pids and not left_mounts, f"arm64 teardown left processes {left_pids} and mounts {left_mounts}"


@pytest.fixture(scope="session")
def arm64_artifacts(artifacts: Path) -> Path:
    """The shared host-pipeline output (tests/conftest.py)."""
    return artifacts


@pytest.fixture(scope="session")
def arm64_kit(arm64: Arm64Session, arm64_artifacts: Path) -> Kit:
    """The device package, the probe and the artifacts copied into the root."""
    return stage_kit(arm64, arm64_artifacts)


@pytest.fixture(scope="module")
def pi(arm64: Arm64Session, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SshTarget, list[str]]]:
    """sshd inside the root (a device root of its own for each test module), and the deploy CLI options that reach it."""
    with running_sshd(arm64, tmp_path_factory.mktemp("arm64_ssh")) as t:
        opts = ["--host", t.spec, "--identity", str(t.identity), "--known-hosts", str(t.known_hosts),
                "--remote-dir", t.remote_dir, "--daemon-port", str(free_port())]
        yield t, opts
