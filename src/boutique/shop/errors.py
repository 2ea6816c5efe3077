"""Domain errors of the shop, each naming the gRPC status a server maps it to, and carrying what is
known about the failure as data (`failure`, a mesh Failure): which dependency failed
(`dependency_path`, nearest first: ("checkout", "payment") means checkout answered that payment failed),
the status, a machine-readable reason and what the shopper may be told. Servers send the path and the
reason on (trailers and gRPC's rich error details); pages and logs read the fields, never the message."""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import replace

import grpc

from boutique.mesh.errors import DeadlineExceeded, MeshUnavailable
from boutique.mesh.failure import Failure, failure_of


class Reason(enum.StrEnum):
    """Why a shop service refused, for callers to act on (ErrorInfo.reason; a Failure's `reason`)."""

    PAYMENT_DECLINED = "PAYMENT_DECLINED"  # checkout: the card was refused (the card's problem in metadata)
    CARD_NUMBER_INVALID = "CARD_NUMBER_INVALID"
    CARD_TYPE_NOT_ACCEPTED = "CARD_TYPE_NOT_ACCEPTED"
    CARD_EXPIRATION_INVALID = "CARD_EXPIRATION_INVALID"
    CARD_EXPIRED = "CARD_EXPIRED"
    CARD_CVV_INVALID = "CARD_CVV_INVALID"
    EMPTY_CART = "EMPTY_CART"
    UNKNOWN_PRODUCT = "UNKNOWN_PRODUCT"
    FAULT_INJECTED = "FAULT_INJECTED"  # a feature flag made it fail on purpose (the flag in metadata)


class ShopError(Exception):
    """Base of every error a shop service reports to its caller.

    Raised here, it describes itself with a reason and a public message (what the shopper may be told);
    translated from a failed call, it carries the Failure read from the call.
    """

    grpc_code = grpc.StatusCode.INTERNAL

    def __init__(
        self,
        message: str = "",
        dependency_path: tuple[str, ...] = (),
        *,
        reason: str = "",
        public_message: str = "",
        metadata: Mapping[str, str] | None = None,
        failure: Failure | None = None,
    ) -> None:
        super().__init__(message)
        self.failure = failure or Failure(
            dependency_path=tuple(dependency_path),
            reason=reason,
            public_message=public_message,
            detail=message,
            metadata=dict(metadata or {}),
        )

    @property
    def dependency_path(self) -> tuple[str, ...]:
        """Which dependencies failed, nearest first (the failure's; empty when none is blamed)."""
        return self.failure.dependency_path

    @dependency_path.setter
    def dependency_path(self, path: tuple[str, ...]) -> None:
        self.failure = replace(self.failure, dependency_path=tuple(path))

    @property
    def reason(self) -> str:
        """The machine-readable cause ('' when none was given)."""
        return self.failure.reason

    @property
    def public_message(self) -> str:
        """What the shopper may be told ('' when nothing specific)."""
        return self.failure.public_message


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


def from_failed_call(service: str, exc: BaseException) -> ShopError:
    """The domain error for a failed call to `service` (a gRPC error, or a call the mesh refused),
    carrying its Failure; the kind follows the status code (Unavailable when none came back)."""
    failure = failure_of(exc, service)
    if failure.code is None:
        # The mesh's own errors name the dependency they are about (their text says so already).
        named = getattr(exc, "dependency", "") == service
        return Unavailable(failure.detail if named else f"{service}: {failure.detail}", failure=failure)
    kind = _BY_CODE.get(failure.code, ShopError)
    error = kind(f"{service}: {failure.detail}", failure=failure)
    if kind is ShopError:
        error.grpc_code = failure.code
    return error


@asynccontextmanager
async def translating(service: str) -> AsyncIterator[None]:
    """Turn gRPC and mesh errors raised inside the block into domain errors; clients wrap every call in it."""
    try:
        yield
    except (grpc.aio.AioRpcError, MeshUnavailable, DeadlineExceeded) as exc:
        raise from_failed_call(service, exc) from exc
