"""Send one encoded OTLP export request and say what the backend's answer means: sent, retry or drop.

The SDK's OTLP exporters return one FAILURE for everything (a backend restarting and a request it can
never accept look the same) and give up after their timeout. The sending queue needs to know which is
which, so these transports speak OTLP over gRPC (`TraceService/Export`, `LogsService/Export`,
`MetricsService/Export`) and HTTP (`POST /v1/traces`, `/v1/logs`, `/v1/metrics`) themselves, one
`Signal` each, configured from the same standard variables (`OtlpTarget`, read by `boutique.mesh.settings`):
`OTEL_EXPORTER_OTLP_[TRACES_|LOGS_|METRICS_]ENDPOINT`, `..._HEADERS`, `..._TIMEOUT`, `..._COMPRESSION`, `..._INSECURE`,
`..._CERTIFICATE`, `..._CLIENT_KEY`, `..._CLIENT_CERTIFICATE`. Retryable answers are the OpenTelemetry specification's:
gRPC UNAVAILABLE, RESOURCE_EXHAUSTED, DEADLINE_EXCEEDED, ABORTED, CANCELLED, OUT_OF_RANGE, DATA_LOSS;
HTTP 429, 502, 503, 504; no connection at all. Everything else drops the request (it would never pass).
"""

from __future__ import annotations

import enum
import gzip
import importlib
import logging
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlparse

log = logging.getLogger(__name__)

HTTP_TRACES_PATH = "/v1/traces"
HTTP_LOGS_PATH = "/v1/logs"
HTTP_METRICS_PATH = "/v1/metrics"
HTTP_PROFILES_PATH = "/v1development/profiles"  # the signal is still in development, as its path says
DEFAULT_GRPC_ENDPOINT = "http://localhost:4317"
DEFAULT_HTTP_ENDPOINT = "http://localhost:4318"
RETRY_HTTP_STATUSES = frozenset({429, 502, 503, 504})


@dataclass(frozen=True)
class Signal:
    """One OTLP signal: where its requests go, what its items are called, and how a partial success counts them."""

    name: str  # "traces", "logs" or "metrics"
    items: str  # what one request carries: "spans", "log records", "data points"
    grpc_method: str
    http_path: str
    response: str  # module:class of the Export*ServiceResponse
    rejected_field: str  # its partial_success field counting refused items

    def rejected(self, reply: bytes | None) -> int:
        """How many items an answer says were rejected (partial success); 0 for an empty or odd answer."""
        if not reply:
            return 0
        module, name = self.response.split(":")
        response = getattr(importlib.import_module(module), name)()
        try:
            response.ParseFromString(reply)
        except Exception:
            return 0
        return int(getattr(response.partial_success, self.rejected_field))


_COLLECTOR = "opentelemetry.proto.collector"
TRACES = Signal(
    "traces",
    "spans",
    f"/{_COLLECTOR}.trace.v1.TraceService/Export",
    HTTP_TRACES_PATH,
    f"{_COLLECTOR}.trace.v1.trace_service_pb2:ExportTraceServiceResponse",
    "rejected_spans",
)
LOGS = Signal(
    "logs",
    "log records",
    f"/{_COLLECTOR}.logs.v1.LogsService/Export",
    HTTP_LOGS_PATH,
    f"{_COLLECTOR}.logs.v1.logs_service_pb2:ExportLogsServiceResponse",
    "rejected_log_records",
)
METRICS = Signal(
    "metrics",
    "data points",
    f"/{_COLLECTOR}.metrics.v1.MetricsService/Export",
    HTTP_METRICS_PATH,
    f"{_COLLECTOR}.metrics.v1.metrics_service_pb2:ExportMetricsServiceResponse",
    "rejected_data_points",
)
PROFILES = Signal(
    "profiles",
    "profiles",
    f"/{_COLLECTOR}.profiles.v1development.ProfilesService/Export",
    HTTP_PROFILES_PATH,
    f"{_COLLECTOR}.profiles.v1development.profiles_service_pb2:ExportProfilesServiceResponse",
    "rejected_profiles",
)
GRPC_EXPORT_METHOD = TRACES.grpc_method


class Verdict(enum.Enum):
    """What to do with a request after one try."""

    SENT = "sent"
    RETRY = "retry"  # the backend is away or busy: keep the request and try again later
    DROP = "drop"  # the backend will never take it (bad data, wrong credentials): forget it


@dataclass(frozen=True)
class Answer:
    """The outcome of one try: the verdict, a delay the backend asked for, and why (for logs)."""

    verdict: Verdict
    reason: str = ""
    retry_after: float | None = None
    rejected: int = 0  # items a backend refused in an otherwise successful answer (partial success)


class Transport(Protocol):
    """Sends encoded export requests to one backend."""

    where: str
    timeout: float  # how long one try may take (OTEL_EXPORTER_OTLP_TIMEOUT)

    def send(self, payload: bytes, timeout: float) -> Answer:
        """Try once to deliver the serialized request."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


def _read(path: str | None) -> bytes | None:
    """A credentials file's bytes; a missing file is a one-line error at set-up."""
    if not path:
        return None
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror}") from None


@dataclass(frozen=True)
class OtlpTarget:
    """Where and how to send one signal (`boutique.mesh.settings` reads it from the OTLP exporter variables)."""

    protocol: str  # "grpc" or "http/protobuf"
    endpoint: str  # for HTTP the whole URL, path included
    headers: tuple[tuple[str, str], ...] = ()
    timeout: float = 10.0
    gzip: bool = False
    insecure: bool = True
    certificate: str | None = None  # file paths, as the variables give them
    client_key: str | None = None
    client_certificate: str | None = None
    signal: Signal = TRACES

    def transport(self) -> Transport:
        """A transport for this target."""
        return GrpcTransport(self) if self.protocol == "grpc" else HttpTransport(self)


class GrpcTransport:
    """OTLP/gRPC: one channel, the request bytes sent as they are (no re-encoding)."""

    RETRY_CODES = frozenset(
        {
            "UNAVAILABLE",
            "RESOURCE_EXHAUSTED",
            "DEADLINE_EXCEEDED",
            "ABORTED",
            "CANCELLED",
            "OUT_OF_RANGE",
            "DATA_LOSS",
        }
    )

    def __init__(self, target: OtlpTarget) -> None:
        import grpc

        self.target = target
        self.timeout = target.timeout
        parsed = urlparse(target.endpoint if "://" in target.endpoint else f"//{target.endpoint}")
        address = parsed.netloc or target.endpoint
        self.where = f"otlp grpc {target.endpoint}"
        # Reconnect soon after the backend comes back, not after gRPC's default backoff of up to 2 min.
        options = [
            ("grpc.initial_reconnect_backoff_ms", 200),
            ("grpc.min_reconnect_backoff_ms", 200),
            ("grpc.max_reconnect_backoff_ms", 2000),
        ]
        if target.insecure:
            self._channel = grpc.insecure_channel(address, options=options)
        else:
            credentials = grpc.ssl_channel_credentials(
                _read(target.certificate), _read(target.client_key), _read(target.client_certificate)
            )
            self._channel = grpc.secure_channel(address, credentials, options=options)
        self._export = self._channel.unary_unary(
            target.signal.grpc_method,
            request_serializer=None,
            response_deserializer=None,
            _registered_method=True,
        )
        self._compression = grpc.Compression.Gzip if target.gzip else None
        self._rpc_error = grpc.RpcError

    def send(self, payload: bytes, timeout: float) -> Answer:
        """Export once; RetryInfo in the trailers (RESOURCE_EXHAUSTED) becomes the delay."""
        try:
            reply = self._export(
                payload, timeout=timeout, metadata=self.target.headers or None, compression=self._compression
            )
        except self._rpc_error as error:
            code = error.code() if hasattr(error, "code") else None
            name = getattr(code, "name", "UNKNOWN")
            details = error.details() if hasattr(error, "details") else str(error)
            reason = f"{name}: {details}"
            if name in self.RETRY_CODES:
                return Answer(Verdict.RETRY, reason, _retry_info(error))
            return Answer(Verdict.DROP, reason)
        return Answer(Verdict.SENT, rejected=self.target.signal.rejected(reply))

    def close(self) -> None:
        """Close the channel."""
        self._channel.close()


class HttpTransport:
    """OTLP/HTTP with protobuf bodies (gzip when asked), through httpx."""

    def __init__(self, target: OtlpTarget) -> None:
        import httpx

        self.target = target
        self.timeout = target.timeout
        self.where = f"otlp http/protobuf {target.endpoint}"
        headers = {"Content-Type": "application/x-protobuf", **dict(target.headers)}
        if target.gzip:
            headers["Content-Encoding"] = "gzip"
        verify: Any = target.certificate or True
        cert: Any = None
        if target.client_certificate:
            cert = (
                (target.client_certificate, target.client_key)
                if target.client_key
                else target.client_certificate
            )
        self._client = httpx.Client(headers=headers, verify=verify, cert=cert, trust_env=False)
        self._httpx = httpx

    def send(self, payload: bytes, timeout: float) -> Answer:
        """POST once; Retry-After on 429/503 becomes the delay."""
        body = gzip.compress(payload, compresslevel=5) if self.target.gzip else payload
        try:
            response = self._client.post(self.target.endpoint, content=body, timeout=timeout)
        except self._httpx.HTTPError as exc:  # refused, reset, timed out: the backend is away
            return Answer(Verdict.RETRY, f"{type(exc).__name__}: {exc}")
        status = response.status_code
        if 200 <= status < 300:
            return Answer(Verdict.SENT, rejected=self.target.signal.rejected(response.content))
        reason = f"HTTP {status}: {response.text[:200]}"
        if status in RETRY_HTTP_STATUSES:
            return Answer(Verdict.RETRY, reason, _seconds(response.headers.get("retry-after")))
        return Answer(Verdict.DROP, reason)

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()


def _seconds(text: str | None) -> float | None:
    """A Retry-After given in seconds (an HTTP date is ignored: the backoff decides then)."""
    try:
        return max(0.0, float(text)) if text else None
    except ValueError:
        return None


def _retry_info(error: Any) -> float | None:
    """The delay a gRPC backend asked for in google.rpc.RetryInfo, if it sent one."""
    try:
        trailers = dict(error.trailing_metadata() or ())
    except Exception:
        return None
    raw = trailers.get("google.rpc.retryinfo-bin")
    if not isinstance(raw, bytes):
        return None
    from google.rpc.error_details_pb2 import RetryInfo

    info = RetryInfo()
    try:
        info.ParseFromString(raw)
    except Exception:
        return None
    return info.retry_delay.seconds + info.retry_delay.nanos / 1e9
