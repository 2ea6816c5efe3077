"""The rendered overlays, once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.deploy.render import EMPTY_KUBECONFIG, KUBERNETES, OVERLAYS, Rendered


@pytest.fixture(scope="session")
def kubeconfig(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A kubeconfig naming no cluster."""
    path = tmp_path_factory.mktemp("kube") / "config"
    path.write_text(EMPTY_KUBECONFIG)
    return path


@pytest.fixture(scope="session")
def overlays(kubeconfig: Path) -> dict[str, Rendered]:
    """Every overlay, rendered."""
    return {name: Rendered.of(name, KUBERNETES / "overlays" / name, kubeconfig) for name in OVERLAYS}
