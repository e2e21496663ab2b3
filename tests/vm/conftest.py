"""Fixtures for the whole emulated Raspberry Pi (qemu-system-aarch64, Debian kernel, systemd as PID 1).

Everything in this folder carries the ``vm`` marker (added here, so nothing slips into the
everyday suite; run with ``python -m pytest -m vm``). ``EDGEKIT_VM_RELEASES`` picks the images
(default ``bookworm,trixie``). One machine per release boots once per session and is shared by
the modules, which run in a fixed order (``MODULE_ORDER``) with one release finished before the
next boots; each module brings the machine to the state it needs (a push is idempotent).
The session ends with a check that no qemu process of this session is left.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from build_image import RELEASES, BuildError, build_problem, cached_image, ensure_image  # noqa: E402
from machine import PiVM, qemu_pids  # noqa: E402
from pi_deploy import Deploy, record_boot, releases_from_env  # noqa: E402

MODULE_ORDER = ("test_machine", "test_vm_deploy", "test_systemd", "test_reboot", "test_power_cut", "test_hardening")


def selected_releases() -> list[str]:
    """The releases this session runs on (``EDGEKIT_VM_RELEASES``, comma-separated)."""
    try:
        return releases_from_env()
    except ValueError as e:
        raise pytest.UsageError(str(e)) from None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark everything here ``vm`` and ``slow``; run one release at a time, modules in MODULE_ORDER."""
    mine = [i for i in items if HERE in Path(str(i.fspath)).resolve().parents]
    for item in mine:
        item.add_marker(pytest.mark.vm)
        item.add_marker(pytest.mark.slow)
    releases = selected_releases()

    def key(item: pytest.Item) -> tuple[int, int]:
        callspec = getattr(item, "callspec", None)
        release = callspec.params.get("pi") if callspec is not None else None
        r = releases.index(release) if release in releases else -1
        mod = Path(str(item.fspath)).stem
        return (r, MODULE_ORDER.index(mod) if mod in MODULE_ORDER else len(MODULE_ORDER))

    order = {id(item): n for n, item in enumerate(items)}
    mine_sorted = sorted(mine, key=lambda i: (*key(i), order[id(i)]))
    it = iter(mine_sorted)
    items[:] = [next(it) if HERE in Path(str(i.fspath)).resolve().parents else i for i in items]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Every test that takes ``pi`` runs once per selected release (``pi_release`` pins one)."""
    if "pi" in metafunc.fixturenames:
        marker = metafunc.definition.get_closest_marker("pi_release")
        names = [n for n in selected_releases() if marker is None or n in marker.args]
        metafunc.parametrize("pi", names, indirect=True, scope="session")


@pytest.fixture(scope="session")
def vm_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """This session's folder for overlays, keys and console logs; checked for leftover qemu at the end."""
    root = tmp_path_factory.mktemp("vm")
    yield root
    left = qemu_pids(root)
    assert not left, f"qemu processes {left} outlived the session"


@pytest.fixture(scope="session")
def pi(request: pytest.FixtureRequest, vm_root: Path) -> Iterator[PiVM]:
    """The booted machine of one release (built first if the image is not cached)."""
    name = request.param
    attach = os.environ.get("EDGEKIT_VM_ATTACH")
    if attach:  # a machine `python tests/vm/machine.py --workdir DIR` keeps running (for development)
        vm = PiVM.attach(Path(attach))
        if vm.image.release != name:
            pytest.skip(f"EDGEKIT_VM_ATTACH runs {vm.image.release}, not {name}")
        yield vm
        vm.close()
        return
    problem = build_problem() if cached_image(RELEASES[name]) is None else None
    if problem:
        pytest.skip(f"the {name} VM cannot be built here: {problem}")
    try:
        image, _ = ensure_image(name)
    except BuildError as e:
        pytest.fail(f"building the {name} image failed: {e}")
    vm = PiVM(image, vm_root / name)
    try:
        vm.start()
        record_boot(vm)
        yield vm
    finally:
        vm.close()
        keep = os.environ.get("EDGEKIT_VM_KEEP_LOGS")
        if keep:
            dest = Path(keep) / name
            dest.mkdir(parents=True, exist_ok=True)
            shutil.copy2(vm.console, dest / "console.log")
        vm.overlay.unlink(missing_ok=True)


@pytest.fixture(scope="session")
def artifacts_dir(artifacts: Path) -> Path:
    """The shared host-pipeline output (tests/conftest.py)."""
    return artifacts


@pytest.fixture(scope="session")
def deploy_to(pi: PiVM) -> Deploy:
    """``deploy_to("status")`` runs the deploy CLI against the machine."""
    return Deploy(pi)


@pytest.fixture
def deployed(pi: PiVM, deploy_to: Deploy, artifacts_dir: Path) -> str:
    """The int8 release current and healthy under systemd (a push; 'unchanged' when it already is); its id."""
    rc, data, out = deploy_to.push(artifacts_dir, "--variant", "int8", "--supervisor", "auto")
    assert rc == 0 and data and data[0]["ok"], out
    return str(data[0]["result"]["release"])
