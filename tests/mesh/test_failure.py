"""Failures as data over a real gRPC server: ErrorInfo and LocalizedMessage in, a Failure out."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
from google.rpc.error_details_pb2 import ErrorInfo, LocalizedMessage
from google.rpc.status_pb2 import Status
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from boutique.mesh import CircuitOpen, GrpcServer, MeshUnavailable, ProcessInfo, ServiceBinding
from boutique.mesh.dependency import CallPolicy
from boutique.mesh.discovery.static import StaticResolver
from boutique.mesh.errors import DeadlineExceeded
from boutique.mesh.failure import DOMAIN, LOCALE, STATUS_DETAILS, Failure, failure_of
from boutique.mesh.grpc_client import GrpcDependency
from boutique.shop.proto import demo_pb2 as pb
from boutique.shop.proto import demo_pb2_grpc as pb_grpc

TRACE_ID = 0x4BF92F3577B34DA6A3CE929D0E0E4736
DECLINED = Failure(
    reason="CARD_EXPIRED", public_message="card expired 01/2020", metadata={"field": "expiration"}
)


class Told(Exception):
    """A handler's error that says why, the way an application's errors do: a status and a Failure."""

    def __init__(self, message: str, code: grpc.StatusCode, failure: Failure) -> None:
        super().__init__(message)
        self.grpc_code = code
        self.failure = failure


class Scripted:
    """An AdService whose GetAds fails as its first context key says."""

    async def GetAds(self, request: pb.AdRequest, context: grpc.aio.ServicerContext) -> pb.AdResponse:
        how = request.context_keys[0] if request.context_keys else ""
        if how == "declined":
            raise Told("card expired 01/2020 (checked at 12:00)", grpc.StatusCode.INVALID_ARGUMENT, DECLINED)
        if how == "store down":
            raise Told("store unreachable", grpc.StatusCode.UNAVAILABLE, Failure(dependency_path=("redis",)))
        if how == "mesh":
            raise MeshUnavailable("no live instance of pricing", "pricing")
        if how == "slow":
            await asyncio.sleep(5)
        if how == "garbage":
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                "odd",
                trailing_metadata=((STATUS_DETAILS, b"\xff\x00?"),),
            )
        return pb.AdResponse()


@pytest.fixture
async def address() -> AsyncIterator[str]:
    """The scripted AdService on a free loopback port."""
    binding = ServiceBinding(pb.DESCRIPTOR.services_by_name["AdService"], Scripted())
    server = GrpcServer(ProcessInfo("ad", "ad-test", port=0), [binding], grace=0.5)
    port = await server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop()


async def call(address: str, how: str, timeout: float = 5.0) -> grpc.aio.AioRpcError:
    """Call GetAds on a plain channel; the error it fails with."""
    async with grpc.aio.insecure_channel(address) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await pb_grpc.AdServiceStub(channel).GetAds(pb.AdRequest(context_keys=[how]), timeout=timeout)
    return info.value


def traced_failure_of(exc: BaseException, dependency: str) -> Failure:
    """failure_of, read while a span of a known trace is current."""
    context = SpanContext(TRACE_ID, 0x00F067AA0BA902B7, is_remote=False, trace_flags=TraceFlags(1))
    with trace.use_span(NonRecordingSpan(context)):
        return failure_of(exc, dependency)


async def test_reason_and_public_message_cross_the_wire_as_rich_error_details(address: str) -> None:
    error = await call(address, "declined")
    trailers = dict(error.trailing_metadata() or ())
    status = Status.FromString(trailers[STATUS_DETAILS])  # type: ignore[arg-type]
    assert status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert status.message == "card expired 01/2020 (checked at 12:00)" == error.details()
    info, localized = ErrorInfo(), LocalizedMessage()
    assert status.details[0].Unpack(info) and status.details[1].Unpack(localized)
    assert (info.reason, info.domain, dict(info.metadata)) == (
        "CARD_EXPIRED",
        DOMAIN,
        {"field": "expiration"},
    )
    assert (localized.locale, localized.message) == (LOCALE, "card expired 01/2020")
    assert trailers["x-served-by"] == "ad-test", "the existing trailers stay"

    failure = traced_failure_of(error, "ad")
    assert failure == Failure(
        dependency_path=(),  # the caller's mistake: no dependency is blamed
        code=grpc.StatusCode.INVALID_ARGUMENT,
        retryable=False,
        answered=True,
        reason="CARD_EXPIRED",
        public_message="card expired 01/2020",
        trace_id=format(TRACE_ID, "032x"),
        detail="card expired 01/2020 (checked at 12:00)",
        metadata={"field": "expiration"},
    )
    assert failure.log_fields() == {
        "grpc_code": "INVALID_ARGUMENT",
        "reason": "CARD_EXPIRED",
        "trace_id": format(TRACE_ID, "032x"),
    }


async def test_a_dependency_failure_names_the_path_and_sends_no_details(address: str) -> None:
    error = await call(address, "store down")
    trailers = dict(error.trailing_metadata() or ())
    assert trailers["x-failed-dependency"] == "redis" and STATUS_DETAILS not in trailers
    failure = failure_of(error, "ad")
    assert failure.dependency_path == ("ad", "redis") and failure.failed_service == "redis"
    assert failure.code is grpc.StatusCode.UNAVAILABLE and failure.retryable and failure.answered
    assert (failure.reason, failure.public_message, failure.trace_id) == ("", "", "")
    assert failure.log_fields() == {"failed_dependency": "ad/redis", "grpc_code": "UNAVAILABLE"}


async def test_a_mesh_error_in_a_handler_names_its_dependency(address: str) -> None:
    failure = failure_of(await call(address, "mesh"), "ad")
    assert failure.dependency_path == ("ad", "pricing") and failure.code is grpc.StatusCode.UNAVAILABLE
    assert failure.detail == "no live instance of pricing"


async def test_no_answer_in_time_is_retryable_and_not_answered(address: str) -> None:
    failure = failure_of(await call(address, "slow", timeout=0.2), "ad")
    assert failure.code is grpc.StatusCode.DEADLINE_EXCEEDED
    assert failure.retryable and not failure.answered and failure.dependency_path == ("ad",)
    assert failure.detail.startswith("no answer in time")


async def test_unreadable_details_are_ignored(address: str) -> None:
    failure = failure_of(await call(address, "garbage"), "ad")
    assert failure.code is grpc.StatusCode.FAILED_PRECONDITION and failure.detail == "odd"
    assert (failure.reason, failure.public_message, dict(failure.metadata)) == ("", "", {})


async def test_the_details_survive_the_mesh_client(address: str) -> None:
    dependency = GrpcDependency("ad", StaticResolver([address]), pb_grpc.AdServiceStub, CallPolicy(timeout=5))
    try:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await dependency.call("GetAds", pb.AdRequest(context_keys=["declined"]), idempotent=True)
    finally:
        await dependency.close()
    failure = failure_of(info.value, "ad")
    assert (failure.reason, failure.public_message, failure.answered) == (
        "CARD_EXPIRED",
        "card expired 01/2020",
        True,
    )


def test_a_call_the_mesh_refused_has_no_code_and_may_work_later() -> None:
    failure = traced_failure_of(CircuitOpen("ad: circuit open (5 of 10 failed)", "ad"), "ad")
    assert failure.code is None and failure.retryable and not failure.answered
    assert failure.dependency_path == ("ad",) and failure.detail == "ad: circuit open (5 of 10 failed)"
    assert failure.trace_id == format(TRACE_ID, "032x")
    late = failure_of(DeadlineExceeded("only 3 ms left to call ad"), "ad")
    assert late.code is None and late.retryable and late.trace_id == ""
