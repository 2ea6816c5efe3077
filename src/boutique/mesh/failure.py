"""A failed call as data: which dependency, which status, whether to try again, what a user may be told.

A server sends what a handler's error says about itself in gRPC's rich error model: a google.rpc.Status
in the `grpc-status-details-bin` trailer, holding an ErrorInfo (a machine-readable reason) and a
LocalizedMessage (what a user may be told). A client reads that back, with the mesh's own trailers
(served-by, failed-dependency), into one `Failure`. Pages, fallbacks and logs read its fields; nothing
reads a message to learn what happened.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import grpc
from google.protobuf.any_pb2 import Any as AnyMessage
from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import DecodeError, Message
from google.rpc.error_details_pb2 import ErrorInfo, LocalizedMessage, RetryInfo
from google.rpc.status_pb2 import Status
from opentelemetry import trace

from boutique.mesh.errors import (
    FAILED_DEPENDENCY,
    SERVED_BY,
    DeadlineExceeded,
    MeshUnavailable,
    failed_dependency_path,
)

STATUS_DETAILS = "grpc-status-details-bin"  # gRPC's trailer for a serialized google.rpc.Status
DOMAIN = "boutique"  # ErrorInfo.domain of the reasons this runtime's servers send
LOCALE = "en-US"  # LocalizedMessage.locale of the messages they send

# Trying again later may work: the callee (or its dependency) was down, slow, busy or mid-operation.
RETRYABLE_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
    }
)

# Codes that are a service's fault, not the caller's mistake: only these name the failed dependency
# (a declined card is not payment's fault; a failed-dependency trailer would count it against payment).
SERVICE_FAULTS = frozenset(
    {
        *RETRYABLE_CODES,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DATA_LOSS,
        grpc.StatusCode.UNIMPLEMENTED,
    }
)


@dataclass(frozen=True)
class Failure:
    """What is known about a failed call (or an error a handler raises), as fields, not text."""

    # The dependencies that failed, nearest first: ("checkout", "payment") is checkout answering that
    # payment failed. Empty when the failure is the caller's own mistake (bad argument, unknown id).
    dependency_path: tuple[str, ...] = ()
    # The status the callee (or gRPC) gave; None when no status came back: the mesh refused the call
    # before sending it (no instance, breaker open, too little time left), or the error is this process's.
    code: grpc.StatusCode | None = None
    retryable: bool = False  # trying again later may work
    answered: bool = False  # the callee itself answered (its served-by trailer), not the way to it
    reason: str = ""  # machine-readable cause ("PAYMENT_DECLINED", "CARD_EXPIRED", …); '' when none given
    public_message: str = ""  # what the end user may be told; '' when nothing specific
    trace_id: str = ""  # the trace of the failed call (32 hex digits); '' when it was not traced
    detail: str = ""  # the callee's own message, for logs
    # The reason's details (ErrorInfo.metadata); left out of the hash, so a Failure stays hashable.
    metadata: Mapping[str, str] = field(default_factory=dict, hash=False)

    @property
    def failed_dependency(self) -> str:
        """The dependency path as one string ("checkout/payment"; '' when none is blamed)."""
        return "/".join(self.dependency_path)

    @property
    def failed_service(self) -> str:
        """The dependency at the end of the path, where the failure started ('' when none is blamed)."""
        return self.dependency_path[-1] if self.dependency_path else ""

    def log_fields(self) -> dict[str, str]:
        """The fields a log line about this failure carries (those that are known)."""
        fields = {
            "failed_dependency": self.failed_dependency,
            "grpc_code": self.code.name if self.code is not None else "",
            "reason": self.reason,
            "trace_id": self.trace_id,
        }
        return {key: value for key, value in fields.items() if value}


def current_trace_id() -> str:
    """The trace id of the current span, or '' when nothing is traced."""
    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else ""


def failure_of(exc: BaseException, dependency: str) -> Failure:
    """The failure of a call to `dependency`: a gRPC error read from its status and trailers, or a call
    the mesh refused before sending (MeshUnavailable, DeadlineExceeded), which later may get through."""
    if isinstance(exc, grpc.aio.AioRpcError):
        return _from_rpc_error(exc, dependency)
    return Failure(
        dependency_path=(dependency,),
        retryable=isinstance(exc, MeshUnavailable | DeadlineExceeded),
        trace_id=current_trace_id(),
        detail=str(exc),
    )


def _from_rpc_error(exc: grpc.aio.AioRpcError, dependency: str) -> Failure:
    """Read the code, the mesh's trailers and the rich error details of a failed gRPC call."""
    code = exc.code()
    answered, deeper, details = False, "", Status()
    for key, value in exc.trailing_metadata() or ():
        if key == SERVED_BY:
            answered = True
        elif key == FAILED_DEPENDENCY:
            deeper = value.decode(errors="replace") if isinstance(value, bytes) else str(value)
        elif key == STATUS_DETAILS and isinstance(value, bytes):
            details = _status(value)
    info, localized, retry = ErrorInfo(), LocalizedMessage(), False
    for packed in details.details:
        if packed.Is(ErrorInfo.DESCRIPTOR):
            packed.Unpack(info)
        elif packed.Is(LocalizedMessage.DESCRIPTOR):
            packed.Unpack(localized)
        elif packed.Is(RetryInfo.DESCRIPTOR):
            retry = True
    path: tuple[str, ...] = ()
    if code in SERVICE_FAULTS:
        path = (dependency, *deeper.split("/")) if deeper else (dependency,)
    detail = exc.details() or code.name
    if code is grpc.StatusCode.DEADLINE_EXCEEDED:
        detail = f"no answer in time ({detail})"
    return Failure(
        dependency_path=path,
        code=code,
        retryable=code in RETRYABLE_CODES or retry,
        answered=answered,
        reason=info.reason,
        public_message=localized.message,
        trace_id=current_trace_id(),
        detail=detail,
        metadata=dict(info.metadata),
    )


def _status(raw: bytes) -> Status:
    """The google.rpc.Status of a details trailer (empty when it cannot be read)."""
    try:
        return Status.FromString(raw)
    except DecodeError:
        return Status()


def status_details(
    code: grpc.StatusCode, message: str, failure: Failure, retry_after: float | None = None
) -> bytes:
    """A serialized google.rpc.Status for `grpc-status-details-bin`: the failure's reason as an
    ErrorInfo (domain "boutique"), its public message as a LocalizedMessage, each when present, and a
    RetryInfo when the caller should wait `retry_after` seconds before trying again."""
    details = []
    if retry_after is not None:
        delay = Duration(seconds=int(retry_after), nanos=int(retry_after % 1 * 1e9))
        details.append(_packed(RetryInfo(retry_delay=delay)))
    if failure.reason:
        info = ErrorInfo(reason=failure.reason, domain=DOMAIN, metadata=dict(failure.metadata))
        details.append(_packed(info))
    if failure.public_message:
        details.append(_packed(LocalizedMessage(locale=LOCALE, message=failure.public_message)))
    return Status(code=code.value[0], message=message, details=details).SerializeToString()


def _packed(detail: Message) -> AnyMessage:
    """The detail packed in a google.protobuf.Any."""
    packed = AnyMessage()
    packed.Pack(detail)
    return packed


def error_trailers(
    exc: BaseException, code: grpc.StatusCode, message: str
) -> tuple[tuple[str, str | bytes], ...]:
    """The trailers a server adds to a handler's error besides served-by: which dependency failed (when
    the failure was one's), and the rich error details when the error's `failure` says why."""
    trailers: list[tuple[str, str | bytes]] = []
    failure = getattr(exc, "failure", None)  # duck-typed: an application's errors carry one, the mesh's not
    path = failure.failed_dependency if isinstance(failure, Failure) else failed_dependency_path(exc)
    if path:  # the failure is a dependency's, not this process's: callers' breakers tell them apart
        trailers.append((FAILED_DEPENDENCY, path))
    if isinstance(failure, Failure) and (failure.reason or failure.public_message):
        trailers.append((STATUS_DETAILS, status_details(code, message, failure)))
    return tuple(trailers)
