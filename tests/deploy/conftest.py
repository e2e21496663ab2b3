"""Fixtures for deploy tests: real OpenSSH servers on 127.0.0.1 as "Pis", and host-pipeline artifacts."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import pytest

from deploy.testing import SSHD, SSHServer

REPO = Path(__file__).resolve().parents[2]


def _need_sshd() -> None:
    if not Path(SSHD).exists() or shutil.which("ssh-keygen") is None:
        pytest.skip(f"{SSHD} or ssh-keygen missing: `apt-get install openssh-server openssh-client`")


@pytest.fixture(scope="session")
def deploy_artifacts(artifacts: Path) -> Path:
    """The shared host-pipeline output (tests/conftest.py)."""
    return artifacts


@pytest.fixture
def make_pi(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., SSHServer]]:
    """Factory: start a real sshd "Pi" (own host key, client key, remote dir, daemon port); stopped after the test."""
    _need_sshd()
    servers: list[SSHServer] = []

    def make(**kw: Any) -> SSHServer:
        s = SSHServer.start(tmp_path_factory.mktemp("pi"), **kw)
        servers.append(s)
        return s

    yield make
    for s in servers:
        s.stop_daemon()
        s.stop()


@pytest.fixture(scope="module")
def pi(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SSHServer]:
    """One sshd "Pi" shared by a test module."""
    _need_sshd()
    s = SSHServer.start(tmp_path_factory.mktemp("pi"))
    yield s
    s.stop_daemon()
    s.stop()
