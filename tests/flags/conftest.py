"""Fixtures of the flag tests that run service code in this process."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from openfeature import api
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from boutique.flags import FlagFile
from boutique.mesh.flags import install_flags
from boutique.mesh.settings import FlagSettings
from tests.e2e.harness import Up, start_up
from tests.mesh.conftest import registry  # noqa: F401  (the embedded registry, for the readiness tests)


@pytest.fixture
def flag_file(tmp_path: Path) -> Iterator[FlagFile]:
    """A seeded flag file every `flags()` evaluation of this process reads, removed again afterwards."""
    file = FlagFile(tmp_path / "flags.json")
    file.seed()
    install_flags(FlagSettings(source_path=str(file.path), poll_ms=50), "test", "test-0")
    yield file
    api.clear_providers()
    api.clear_hooks()


@pytest.fixture
def spans() -> Iterator[tuple[Any, InMemorySpanExporter]]:
    """A tracer of our own (the server span the service code runs inside) and what it recorded."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider.get_tracer("test"), exporter
    provider.shutdown()


@pytest.fixture(scope="package")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    """One `boutique up` shared by the flag modules that need no replicas (each resets the flags it sets).

    Spans leave each process every 300 ms (not 5 s), so the observatory has them while a test looks.
    """
    running = start_up(tmp_path_factory.mktemp("flags-shop"), env={"OTEL_BSP_SCHEDULE_DELAY": "300"})
    try:
        yield running
    finally:
        running.stop()
