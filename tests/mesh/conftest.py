"""Fixtures shared by the mesh tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from boutique.mesh.registry import RegistryServer


@pytest.fixture
async def registry() -> AsyncIterator[RegistryServer]:
    """An embedded registry on a free loopback port, stopped after the test."""
    server = RegistryServer(port=0)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
