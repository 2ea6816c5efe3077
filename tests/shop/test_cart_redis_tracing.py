"""The cart's Redis commands are traced although the cart instruments redis-py only once its Redis store
exists (redis-py is imported only then, not by a cart whose carts live in memory)."""

from __future__ import annotations

from opentelemetry.instrumentation.redis import RedisInstrumentor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from boutique.shop.cart.store import RedisCartStore, parse_redis_address
from tests.shop.test_cart import RedisProcess, redis_server  # noqa: F401  (the fixture)


async def test_a_store_made_before_instrumenting_has_its_commands_traced(redis_server: RedisProcess) -> None:  # noqa: F811
    store = RedisCartStore(*parse_redis_address(redis_server.address))  # as cart.server.serve() does
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrumentor = RedisInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    try:
        assert await store.add("shopper", "OLJCESPC7Z", 2, 10, "add-1") == 2
        assert await store.get("shopper") == {"OLJCESPC7Z": 2}
    finally:
        instrumentor.uninstrument()
        await store.close()
    spans = exporter.get_finished_spans()
    systems = {
        (span.attributes or {}).get("db.system", (span.attributes or {}).get("db.system.name"))
        for span in spans
    }
    print(f"{len(spans)} Redis spans: {[span.name for span in spans]}")
    assert systems == {"redis"}
    assert any("HGETALL" in span.name for span in spans)
    assert any("EVALSHA" in span.name or "EVAL" in span.name for span in spans)  # the add, a script
