"""OTLP logs receivers: gRPC `LogsService/Export` and `POST /v1/logs` (protobuf or JSON), as for spans.

They share the trace receivers' paths: the same body limits, gzip, refusals and status codes (400 /
INVALID_ARGUMENT for undecodable data, 429 / RESOURCE_EXHAUSTED and 503 / UNAVAILABLE with a retry
delay), and the sender is answered once its records are stored, with an `ExportLogsServiceResponse`
carrying `partial_success.rejected_log_records` when some were refused (see `receivers.otlp_signal`).
"""

from __future__ import annotations

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse

# The module, not its functions: `logs.decode` imports the receivers package, which imports this module.
from boutique.observatory.logs import decode as wire
from boutique.observatory.receivers.otlp_signal import otlp_receivers

RECEIVERS = otlp_receivers("logs", wire, ExportLogsServiceResponse, "rejected_log_records", "log records")
