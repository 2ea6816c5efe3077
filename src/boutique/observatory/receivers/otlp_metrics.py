"""OTLP metrics receivers: gRPC `MetricsService/Export` and `POST /v1/metrics` (protobuf or JSON), as for spans.

Both answer once the points are stored, with an `ExportMetricsServiceResponse` whose `partial_success`
counts the data points refused (`rejected_data_points`) and says why. Errors are the span receivers':
gRPC INVALID_ARGUMENT for an undecodable request, RESOURCE_EXHAUSTED / UNAVAILABLE with `RetryInfo`
under overload or a failing store; HTTP 400, 413, 415, 429, 503 with a `google.rpc.Status` body in the
request's format (see `receivers.otlp_signal`, `receivers.otlp_grpc` and `receivers.otlp_http`).
"""

from __future__ import annotations

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceResponse

# The module, not its functions: `metrics.decode` imports the span receivers' JSON helpers, whose
# package imports this module, so either may be imported first.
from boutique.observatory.metrics import decode
from boutique.observatory.receivers.otlp_signal import otlp_receivers

RECEIVERS = otlp_receivers("metrics", decode, ExportMetricsServiceResponse, "rejected_data_points", "metrics")
