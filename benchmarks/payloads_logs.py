"""OTLP log payloads for the ingest benchmark: what the shop's processes send, and the parse-only baseline.

`payloads(records, per_request)` builds `ExportLogsServiceRequest`s of `per_request` records (the SDK
BatchLogRecordProcessor's max_export_batch_size default is 512), each request from one process of a web
shop the way its logging handler exports: a resource with service and instance, a scope per logger,
records with a body, severity, the code location and a few request attributes, most inside a span
(trace and span ids), some warnings and errors carrying an exception and its stack trace.
`parse_only(chunk)` is the baseline: `ExportLogsServiceRequest.ParseFromString`, records seen.
"""

from __future__ import annotations

import os
import random
import time

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, SeverityNumber
from otlp_payloads import kv, parse_counting

PER_REQUEST = 512  # the SDK BatchLogRecordProcessor's max_export_batch_size default
SERVICES = {
    "frontend": (
        "boutique.shop.frontend.app",
        ["GET /", "GET /product/{id}", "POST /cart", "POST /cart/checkout"],
    ),
    "cartservice": ("boutique.shop.cart.service", ["AddItem", "GetCart", "EmptyCart"]),
    "checkoutservice": ("boutique.shop.checkout.service", ["PlaceOrder"]),
    "paymentservice": ("boutique.shop.payment.service", ["Charge"]),
    "currencyservice": ("boutique.shop.currency.service", ["Convert", "GetSupportedCurrencies"]),
    "productcatalogservice": (
        "boutique.shop.catalog.service",
        ["ListProducts", "GetProduct", "SearchProducts"],
    ),
    "recommendationservice": ("boutique.shop.recommendation.service", ["ListRecommendations"]),
    "shippingservice": ("boutique.shop.shipping.service", ["GetQuote", "ShipOrder"]),
    "emailservice": ("boutique.shop.email.service", ["SendOrderConfirmation"]),
    "adservice": ("boutique.shop.ad.service", ["GetAds"]),
}
MESSAGES = [
    "request served",
    "added {quantity} x {product} to cart of user {user}",
    "cart of user {user} holds {quantity} items",
    "converted {amount} USD to EUR",
    "order {order} placed for user {user}",
    "charged card ending {last4} for {amount} USD",
    "quote for {quantity} items: {amount} USD",
    "sent order confirmation for {order}",
    "recommended {quantity} products for {product}",
    "served {quantity} ads for context {product}",
]
PRODUCTS = ["OLJCESPC7Z", "66VCHSJNUP", "1YMWWN1N4O", "L9ECAV7KIM", "2ZYFJ3GM2N", "0PUK6V6EV0", "LS4PSXUNUM"]
STACK = (
    'Traceback (most recent call last):\n  File "/srv/boutique/shop/{module}.py", line 88, in handle\n'
    "    return await self.service.call(request)\n"
    '  File "/srv/boutique/mesh/client.py", line 211, in call\n    raise Unavailable(peer)\n'
    "boutique.mesh.errors.Unavailable: no healthy instance of {peer}\n"
)


def _record(rng: random.Random, service: str, module: str, operations: list[str], now_ns: int) -> LogRecord:
    roll = rng.random()
    severity, text = (
        (SeverityNumber.SEVERITY_NUMBER_ERROR, "ERROR")
        if roll < 0.03
        else (SeverityNumber.SEVERITY_NUMBER_WARN, "WARNING")
        if roll < 0.1
        else (SeverityNumber.SEVERITY_NUMBER_DEBUG, "DEBUG")
        if roll < 0.2
        else (SeverityNumber.SEVERITY_NUMBER_INFO, "INFO")
    )
    fields = {
        "quantity": rng.randint(1, 10),
        "product": rng.choice(PRODUCTS),
        "user": f"{rng.getrandbits(64):016x}",
        "amount": f"{rng.uniform(1, 500):.2f}",
        "order": f"{rng.getrandbits(64):016x}",
        "last4": f"{rng.randint(0, 9999):04d}",
    }
    operation = rng.choice(operations)
    attributes = [
        kv("code.file.path", f"/srv/boutique/shop/{module.rsplit('.', 1)[0].replace('.', '/')}.py"),
        kv("code.function.name", operation.lower().replace(" ", "_").replace("/", "_")),
        kv("code.line.number", rng.randint(20, 400)),
        kv("rpc.method" if not operation.startswith(("GET", "POST")) else "http.route", operation),
        kv("user_id", fields["user"]),
        kv("duration_ms", round(rng.uniform(0.2, 80.0), 3)),
    ]
    if severity >= SeverityNumber.SEVERITY_NUMBER_WARN:
        peer = rng.choice(list(SERVICES))
        attributes += [
            kv("exception.type", "boutique.mesh.errors.Unavailable"),
            kv("exception.message", f"no healthy instance of {peer}"),
            kv("exception.stacktrace", STACK.format(module=module.replace(".", "/"), peer=peer)),
        ]
    record = LogRecord(
        time_unix_nano=now_ns - rng.randint(0, 5_000_000_000),
        observed_time_unix_nano=now_ns,
        severity_number=severity,
        severity_text=text,
        body=AnyValue(string_value=rng.choice(MESSAGES).format(**fields)),
        attributes=attributes,
    )
    if rng.random() < 0.8:  # most records are written while a request's span is active
        record.trace_id, record.span_id, record.flags = os.urandom(16), os.urandom(8), 1
    return record


def payloads(records: int, per_request: int = PER_REQUEST, seed: int = 17) -> list[bytes]:
    """Serialized ExportLogsServiceRequests of `records` records, `per_request` each, one process's each."""
    rng = random.Random(seed)
    now_ns = time.time_ns()
    out: list[bytes] = []
    names = list(SERVICES)
    for start in range(0, records, per_request):
        service = names[len(out) % len(names)]
        module, operations = SERVICES[service]
        request = ExportLogsServiceRequest()
        resource_logs = request.resource_logs.add()
        resource_logs.resource.attributes.extend(
            [
                kv("service.name", service),
                kv("service.instance.id", f"{service}-{rng.randint(1, 3)}"),
                kv("service.namespace", "boutique"),
                kv("telemetry.sdk.language", "python"),
                kv("telemetry.sdk.name", "opentelemetry"),
                kv("telemetry.sdk.version", "1.45.2"),
                kv("process.pid", rng.randint(1000, 60000)),
                kv("host.name", "shop-host"),
            ]
        )
        scope_logs = resource_logs.scope_logs.add()
        scope_logs.scope.name = module
        count = min(per_request, records - start)
        scope_logs.log_records.extend(_record(rng, service, module, operations, now_ns) for _ in range(count))
        out.append(request.SerializeToString())
    return out


def parse_only(chunk: list[bytes]) -> int:
    """Parse every payload with the real opentelemetry.proto class; the log records seen."""
    return parse_counting(
        chunk,
        ExportLogsServiceRequest,
        lambda request: sum(len(s.log_records) for r in request.resource_logs for s in r.scope_logs),
    )
