"""Domain errors of the shop, each naming the gRPC status a server maps it to."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import grpc

from boutique.mesh.errors import MeshUnavailable


class ShopError(Exception):
    """Base of every error a shop service reports to its caller."""

    grpc_code = grpc.StatusCode.INTERNAL


class InvalidArgument(ShopError):
    """The request is malformed or out of range; the caller must fix it."""

    grpc_code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(ShopError):
    """An id names nothing."""

    grpc_code = grpc.StatusCode.NOT_FOUND


class Unavailable(ShopError):
    """A dependency is down or did not answer in time; trying again later may work."""

    grpc_code = grpc.StatusCode.UNAVAILABLE


class FailedPrecondition(ShopError):
    """A store or system state prevents the operation."""

    grpc_code = grpc.StatusCode.FAILED_PRECONDITION


_BY_CODE: dict[grpc.StatusCode, type[ShopError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.OUT_OF_RANGE: InvalidArgument,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: Unavailable,
    grpc.StatusCode.RESOURCE_EXHAUSTED: Unavailable,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
}


def from_rpc_error(service: str, exc: grpc.aio.AioRpcError) -> ShopError:
    """Translate a failed gRPC call into the matching domain error, naming the service."""
    kind = _BY_CODE.get(exc.code(), ShopError)
    detail = exc.details() or exc.code().name
    if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
        detail = f"no answer in time ({detail})"
    error = kind(f"{service}: {detail}")
    error.grpc_code = exc.code() if kind is ShopError else kind.grpc_code
    return error


@asynccontextmanager
async def translating(service: str) -> AsyncIterator[None]:
    """Turn gRPC errors raised inside the block into domain errors; clients wrap every call in it."""
    try:
        yield
    except grpc.aio.AioRpcError as exc:
        raise from_rpc_error(service, exc) from exc
    except MeshUnavailable as exc:
        raise Unavailable(str(exc) if str(exc).startswith(service) else f"{service}: {exc}") from exc
