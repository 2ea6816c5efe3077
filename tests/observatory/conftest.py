"""Fixtures shared by the query API tests: the synthetic multi-service data set behind an HTTP client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.observatory.test_api_jaeger import build_store, client


@pytest.fixture
async def http(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client on the query routes of a store holding the shared data set."""
    store = build_store(tmp_path)
    try:
        async with client(store) as http:
            yield http
    finally:
        store.close()
