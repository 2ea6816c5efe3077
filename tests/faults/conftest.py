"""Fault tests: each makes one fault for real (kill -9, SIGSTOP, a full disk, a restarted Redis) against
real processes and asserts what must survive it. Every test here carries the `faults` marker, so
`pytest -m faults` runs exactly them."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test collected under tests/faults/."""
    for item in items:
        if "tests/faults/" in item.nodeid.replace("\\", "/") or item.nodeid.startswith("faults/"):
            item.add_marker(pytest.mark.faults)
