"""The OTLP receiver pair of a non-span signal: gRPC `<Signal>Service/Export` and `POST /v1/<signal>`.

Both go through the span receivers' paths (`otlp_grpc.store_or_abort`, `otlp_http.otlp_export`), so
limits, gzip, refusals and status codes are the same for every signal; only the decoders, the names
and the answer message differ. The answer is empty, or carries `partial_success` (the count of items
refused, in the signal's own field, and why) when some were refused.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol, TypeVar

import grpc
from google.protobuf.message import Message
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from boutique.observatory.pipeline import Pipeline
from boutique.observatory.receivers.base import GrpcReceiver, HttpReceiver, Limits, Receiver
from boutique.observatory.receivers.http import JSON
from boutique.observatory.receivers.otlp_grpc import store_or_abort
from boutique.observatory.receivers.otlp_http import PROTOBUF, otlp_export
from boutique.observatory.signals import Batch

B_co = TypeVar("B_co", bound=Batch, covariant=True)


class Decoders(Protocol[B_co]):
    """A signal's decode module: an export request, protobuf or OTLP/JSON, to a batch (`PayloadError`)."""

    def decode(self, data: bytes, /) -> B_co: ...

    def decode_json(self, data: bytes, /) -> B_co: ...


def export_answer(response_type: type[Message], rejected_field: str) -> Callable[[Batch], Message]:
    """Builds an Export response: empty, or `partial_success` with `rejected_field` and the reason."""

    def answer(batch: Batch) -> Message:
        response: Any = response_type()
        if batch.rejected:
            setattr(response.partial_success, rejected_field, batch.rejected)
            response.partial_success.error_message = batch.rejection
        return response

    return answer


def otlp_receivers(
    signal: str,
    wire: Decoders[Batch],
    response_type: type[Message],
    rejected_field: str,
    items: str,
    path: str = "",
) -> tuple[Receiver, ...]:
    """The `<signal>` service's one gRPC method, Export, and `POST /v1/<signal>`, both feeding the pipeline.

    The service and its request type are those of `response_type` (the Export response message), whose
    `rejected_field` counts refused items; `items` names them in refusal messages; `path` is the HTTP
    path when it is not `/v1/<signal>` (a signal still in development). `wire` is reached at call
    time, so a decode module still being imported may be passed.
    """
    (service,) = response_type.DESCRIPTOR.file.services_by_name.values()
    request_type = service.methods_by_name["Export"].input_type.full_name
    answer = export_answer(response_type, rejected_field)

    def decode_protobuf(data: bytes) -> Batch:
        return wire.decode(data)

    def decode_json(data: bytes) -> Batch:
        return wire.decode_json(data)

    grpc_decoders = {request_type: decode_protobuf}
    http_decoders = {PROTOBUF: decode_protobuf, JSON: decode_json}

    def methods(pipeline: Pipeline) -> Mapping[str, grpc.RpcMethodHandler]:
        async def export(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
            batch = await store_or_abort(pipeline, decode_protobuf, request, context, items)
            return answer(batch).SerializeToString()

        handler = grpc.unary_unary_rpc_method_handler(
            export, request_deserializer=None, response_serializer=None
        )
        return {"Export": handler}

    def routes(pipeline: Pipeline, limits: Limits) -> list[BaseRoute]:
        async def export(request: Request) -> Response:
            return await otlp_export(request, pipeline, limits, http_decoders, answer)

        return [Route(path or f"/v1/{signal}", export, methods=["POST"])]

    # Named per signal: route builders and method tables are told apart (and found) by name.
    routes.__name__ = routes.__qualname__ = f"otlp_{signal}_http_routes"
    methods.__name__ = methods.__qualname__ = f"otlp_{signal}_service_methods"
    return (
        GrpcReceiver(
            name=f"otlp_{signal}_grpc",
            port="otlp_grpc",
            decoders=grpc_decoders,
            service=service.full_name,
            methods=methods,
        ),
        HttpReceiver(name=f"otlp_{signal}_http", port="otlp_http", decoders=http_decoders, routes=routes),
    )
