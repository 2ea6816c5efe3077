"""OTLP metrics receivers: gRPC Export and `POST /v1/metrics` (protobuf or JSON), as for spans."""

from __future__ import annotations

from boutique.observatory.receivers.base import Receiver

RECEIVERS: tuple[Receiver, ...] = ()
