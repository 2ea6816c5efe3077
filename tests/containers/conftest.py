"""The shop as containers: the image built with podman, the `local` overlay played with `podman kube play`.

Not collected by a plain `pytest` / `make test` (`norecursedirs` in pyproject.toml): `make test-containers`
runs them by path. Every test here carries the `containers` marker. Every podman object they make is
named `btq-test-<run>-…` and removed afterwards, also when a test fails."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.containers.shop import ROOT, ContainerShop, load_play, start_shop

INSTALL = (
    "install podman as root: apt-get install --no-install-recommends podman runc netavark aardvark-dns "
    "iptables catatonit debootstrap, then run deploy/containers/configure.sh (see docs/containers.md)"
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test collected under tests/containers/."""
    for item in items:
        if "tests/containers/" in item.nodeid.replace("\\", "/") or item.nodeid.startswith("containers/"):
            item.add_marker(pytest.mark.containers)


def _run(*command: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def podman_here() -> None:
    """Skip unless podman can run here (root, installed, answering) with kubectl to render the overlay."""
    if shutil.which("podman") is None:
        pytest.skip(f"needs podman: {INSTALL}")
    if os.geteuid() != 0:
        pytest.skip("runs podman as root (the recipe in docs/containers.md); CI runs as root")
    info = _run("podman", "info", timeout=60)
    if info.returncode != 0:
        pytest.skip(f"podman cannot run here ({info.stderr.strip()[-300:]}): {INSTALL}")
    if shutil.which("kubectl") is None:
        pytest.skip("needs kubectl to render deploy/kubernetes (kubectl kustomize)")
    if _run(
        "podman", "image", "exists", "localhost/debian-base:bookworm"
    ).returncode != 0 and not shutil.which("debootstrap"):
        pytest.skip(f"needs debootstrap to build the base image: {INSTALL}")


@pytest.fixture(scope="session")
def image(podman_here: None) -> str:
    """localhost/boutique:dev built now from this tree (`make image`), with the Redis the overlay needs."""
    for script in ("deploy/containers/image.sh", "deploy/containers/redis.sh"):
        started = time.monotonic()
        built = _run(script)
        assert built.returncode == 0, f"{script} failed:\n{built.stdout[-2000:]}\n{built.stderr[-3000:]}"
        print(f"\n{script}: {time.monotonic() - started:.0f} s; {built.stdout.strip().splitlines()[-1]}")
    image = "localhost/boutique:dev"
    # A container must start: if this fails, podman is installed but not configured (runtime, ulimits).
    smoke = _run("podman", "run", "--rm", "--read-only", image, "--version", timeout=120)
    assert smoke.returncode == 0, (
        f"podman cannot start a container: {smoke.stderr.strip()[-500:]}; "
        "run deploy/containers/configure.sh as root (sets runc and ulimits in /etc/containers/containers.conf)"
    )
    return image


@pytest.fixture(scope="session")
def run_prefix() -> str:
    """The name prefix of every podman object this run makes."""
    return f"btq-test-{secrets.token_hex(3)}-"


@pytest.fixture(scope="module")
def shop(image: str, run_prefix: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ContainerShop]:
    """The `local` overlay running as pods on one network, ready; torn down (and checked) afterwards."""
    play = load_play()
    prefix = f"{run_prefix}shop-"
    logs = ROOT / "test-output" / "containers"
    try:
        shop = start_shop(play, prefix, tmp_path_factory.mktemp("play"))
        yield shop
    finally:
        try:
            _save_logs(prefix, logs)
        finally:
            left = play.down(prefix)
            assert not left, f"left behind after teardown: {left}"
            # Nothing of this run may remain, whatever podman lists.
            for listing in (["ps", "--all"], ["pod", "ls"], ["network", "ls"], ["volume", "ls"]):
                names = _run(
                    "podman", *listing, "--format", "{{.Names}}" if listing[0] == "ps" else "{{.Name}}"
                )
                assert prefix not in names.stdout, f"podman {' '.join(listing)} still lists {prefix}*"


def _save_logs(prefix: str, directory: Path) -> None:
    """Keep every container's log in test-output/containers/ (the shop is gone after teardown)."""
    directory.mkdir(parents=True, exist_ok=True)
    listed = _run("podman", "ps", "--all", "--format", "{{.Names}}", timeout=60)
    for name in listed.stdout.split():
        if name.startswith(prefix):
            log = _run("podman", "logs", name, timeout=60)
            (directory / f"{name.removeprefix(prefix)}.log").write_text(log.stdout + log.stderr)
