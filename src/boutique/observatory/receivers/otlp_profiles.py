"""OTLP profiles receivers: gRPC `ProfilesService/Export` and `POST /v1development/profiles`.

Protobuf or JSON, they share the trace and log receivers' paths: the same body limits, gzip, refusals
and status codes (400 / INVALID_ARGUMENT for undecodable data, 429 / RESOURCE_EXHAUSTED and 503 /
UNAVAILABLE with a retry delay), and the sender is answered once its samples are stored, with an
`ExportProfilesServiceResponse` carrying `partial_success.rejected_profiles` when some profiles were
refused (see `receivers.otlp_signal`). The HTTP path keeps the signal's "v1development", as OTLP has it.
"""

from __future__ import annotations

from opentelemetry.proto.collector.profiles.v1development.profiles_service_pb2 import (
    ExportProfilesServiceResponse,
)

# The module, not its functions: `profiles.decode` imports the receivers package, which imports this one.
from boutique.observatory.profiles import decode as wire
from boutique.observatory.receivers.otlp_signal import otlp_receivers

PATH = "/v1development/profiles"
RECEIVERS = otlp_receivers(
    "profiles", wire, ExportProfilesServiceResponse, "rejected_profiles", "profiles", path=PATH
)
