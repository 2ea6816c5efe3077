"""Receivers: each turns one wire format into a batch (spans, logs, metrics); `RECEIVERS` lists those served.

A receiver is one module declaring `RECEIVER` (or `RECEIVERS`: a signal on both gRPC and HTTP), an `HttpReceiver` (its port, its routes, the decoder of
each Content-Type it takes) or a `GrpcReceiver` (its port, its service and methods, its decoder). The
server walks `RECEIVERS` to build its HTTP apps and gRPC servers, so adding a protocol is adding a
module and a line below. The decoders (`otlp_proto`, `otlp_json`, `zipkin`) are plain functions of bytes.
"""

from boutique.observatory.receivers import (
    otlp_grpc,
    otlp_http,
    otlp_logs,
    otlp_metrics,
    otlp_profiles,
    pyroscope,
    zipkin_http,
)
from boutique.observatory.receivers.base import GrpcReceiver, HttpReceiver, Limits, Receiver

RECEIVERS: tuple[Receiver, ...] = (
    otlp_grpc.RECEIVER,
    otlp_http.RECEIVER,
    zipkin_http.RECEIVER,
    *otlp_logs.RECEIVERS,
    *otlp_metrics.RECEIVERS,
    *otlp_profiles.RECEIVERS,
    *pyroscope.RECEIVERS,
)

__all__ = ["RECEIVERS", "GrpcReceiver", "HttpReceiver", "Limits", "Receiver"]
