"""Domain errors of the shop, each naming the gRPC status a server maps it to and, when a dependency
failed, which one (`dependency_path`, nearest first: ("checkout", "payment") means checkout answered
that payment failed). Servers pass the path on in trailing metadata; pages and logs read it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import grpc

from boutique.mesh.errors import SERVED_BY, DeadlineExceeded, MeshUnavailable
from boutique.mesh.grpc_client import failed_dependency_of


class ShopError(Exception):
    """Base of every error a shop service reports to its caller."""

    grpc_code = grpc.StatusCode.INTERNAL

    def __init__(self, message: str = "", dependency_path: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.dependency_path = dependency_path
        # Set for errors of a call: the status the callee (or gRPC) gave, and whether the callee itself
        # answered (it names itself in its trailers) rather than the call failing on the way.
        self.status: grpc.StatusCode | None = None
        self.answered = False

    @property
    def failed_service(self) -> str:
        """The service at the end of the path: where the failure started ('' when none is known)."""
        return self.dependency_path[-1] if self.dependency_path else ""


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


class Aborted(ShopError):
    """The operation is already under way elsewhere (or conflicted with one that is): ask again later."""

    grpc_code = grpc.StatusCode.ABORTED


_BY_CODE: dict[grpc.StatusCode, type[ShopError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.OUT_OF_RANGE: InvalidArgument,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: Unavailable,
    grpc.StatusCode.RESOURCE_EXHAUSTED: Unavailable,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.ABORTED: Aborted,
}


# Only failures of a service (not the caller's mistakes) carry a path: a declined card is not payment's fault.
_SERVICE_FAULTS = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DATA_LOSS,
        grpc.StatusCode.UNIMPLEMENTED,
    }
)


def from_rpc_error(service: str, exc: grpc.aio.AioRpcError) -> ShopError:
    """Translate a failed gRPC call into the matching domain error, naming the service and what it blamed."""
    kind = _BY_CODE.get(exc.code(), ShopError)
    detail = exc.details() or exc.code().name
    if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
        detail = f"no answer in time ({detail})"
    path: tuple[str, ...] = ()
    if exc.code() in _SERVICE_FAULTS:
        deeper = failed_dependency_of(exc)
        path = (service, *deeper.split("/")) if deeper else (service,)
    error = kind(f"{service}: {detail}", path)
    error.grpc_code = exc.code() if kind is ShopError else kind.grpc_code
    error.status = exc.code()
    error.answered = any(key == SERVED_BY for key, _ in exc.trailing_metadata() or ())
    return error


@asynccontextmanager
async def translating(service: str) -> AsyncIterator[None]:
    """Turn gRPC errors raised inside the block into domain errors; clients wrap every call in it."""
    try:
        yield
    except grpc.aio.AioRpcError as exc:
        raise from_rpc_error(service, exc) from exc
    except DeadlineExceeded as exc:  # too little time was left to make the call at all
        raise Unavailable(f"{service}: {exc}", (service,)) from exc
    except MeshUnavailable as exc:
        message = str(exc) if str(exc).startswith(service) else f"{service}: {exc}"
        raise Unavailable(message, (service,)) from exc
