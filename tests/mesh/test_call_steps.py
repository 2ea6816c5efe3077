"""Each step of a call alone: pick, permit, attempt under the deadline, classify by status, retry.

The steps are plain functions of what they are given, so each is driven here with real collaborators
(a balancer, a circuit breaker, real gRPC and httpx errors) and a `Call` set up by hand.
"""

from __future__ import annotations

import asyncio
import random

import grpc
import httpx
import pytest

from boutique.mesh.balancing import Balancer, make_balancer
from boutique.mesh.calls import OUTCOMES, Call, CallStatus, Outcome, classify, status_of_error, steps
from boutique.mesh.errors import FAILED_DEPENDENCY, SHED, BulkheadFull, CircuitOpen, NoInstances
from boutique.mesh.grpc_client import status_of as grpc_status_of
from boutique.mesh.http_client import ServerError, grpc_code
from boutique.mesh.http_client import status_of as http_status_of
from boutique.mesh.instance import Instance
from boutique.mesh.resilience import BreakerConfig, BreakerState, CircuitBreaker

Code = grpc.StatusCode


def new_call(retryable: bool = True, ends: float = 100.0, number: int = 0) -> Call[str, str]:
    """A call as the pipeline holds it after admission: deadline at `ends`, `number` attempts made."""

    async def send(conn: str, timeout: float) -> str:
        return f"{conn} within {timeout}"

    call: Call[str, str] = Call("GetProduct", send, grpc_status_of, retryable)
    call.began, call.ends, call.number = 0.0, ends, number
    return call


def instances(*ids: str) -> list[Instance]:
    return [Instance("catalog", i, "127.0.0.1", {"grpc": 5000 + n}) for n, i in enumerate(ids)]


def balanced(*ids: str) -> tuple[Balancer, dict[str, tuple[Instance, str]]]:
    """A round-robin balancer over the instances, and each one's connection (here: a name)."""
    balancer = make_balancer("round_robin", random.Random(3))
    members = instances(*ids)
    balancer.update(members)
    return balancer, {i.id: (i, f"conn-{i.id}") for i in members}


def rpc_error(code: grpc.StatusCode, *trailers: tuple[str, str]) -> grpc.aio.AioRpcError:
    """The error grpc.aio raises for a call that ended with `code` and these trailing metadata."""
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(*trailers), "details")


def http_error(status: int, **headers: str) -> ServerError:
    """The error the HTTP transport raises for an answer with this status and these headers."""
    request = httpx.Request("GET", "http://127.0.0.1:1/item")
    return ServerError(httpx.Response(status, headers=headers, request=request))


# ---- 1. pick ---------------------------------------------------------------------------------------


def test_pick_returns_an_endpoint_and_its_connection_and_counts_the_attempt() -> None:
    balancer, conns = balanced("a", "b", "c")
    call = new_call()
    endpoint, conn = steps.pick(balancer, conns, call, "catalog")
    assert conn == f"conn-{endpoint.id}"
    assert call.number == 1


def test_pick_avoids_the_instances_the_call_tried() -> None:
    balancer, conns = balanced("a", "b", "c")
    call = new_call()
    call.tried = ("a", "b")
    for _ in range(6):
        endpoint, _ = steps.pick(balancer, conns, call, "catalog")
        assert endpoint.id == "c"


def test_pick_with_no_instance_is_no_instances_naming_the_dependency() -> None:
    balancer, conns = balanced()
    with pytest.raises(NoInstances) as caught:
        steps.pick(balancer, conns, new_call(), "catalog")
    assert caught.value.dependency == "catalog"


def test_pick_of_an_instance_without_a_connection_is_no_instances() -> None:
    balancer, _ = balanced("a")  # the balancer still has it; its connection is gone (it just left)
    with pytest.raises(NoInstances, match="just left"):
        steps.pick(balancer, {}, new_call(), "catalog")


def test_a_retry_with_no_instance_left_raises_the_last_attempts_own_error() -> None:
    balancer, conns = balanced()
    call = new_call(number=1)
    call.error = rpc_error(Code.UNAVAILABLE)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        steps.pick(balancer, conns, call, "catalog")
    assert caught.value is call.error


# ---- 2. permit -----------------------------------------------------------------------------------


def test_without_a_breaker_there_is_no_permit() -> None:
    assert steps.take_permit(None, "catalog") is None


def test_a_closed_breaker_gives_a_permit_that_counts_the_call() -> None:
    breaker = CircuitBreaker("test->catalog", BreakerConfig())
    permit = steps.take_permit(breaker, "catalog")
    assert permit is not None and breaker.in_flight == 1
    permit.success(0.01)
    assert breaker.in_flight == 0
    assert breaker.snapshot()["rollingCountSuccess"] == 1


def test_an_open_breaker_refuses_with_circuit_open_naming_the_dependency() -> None:
    breaker = CircuitBreaker("test->catalog", BreakerConfig())
    breaker.force_open()
    with pytest.raises(CircuitOpen) as caught:
        steps.take_permit(breaker, "catalog")
    assert caught.value.dependency == "catalog"
    assert breaker.in_flight == 0


def test_settle_counts_faults_against_the_breaker_and_ignores_the_rest() -> None:
    breaker = CircuitBreaker("test->catalog", BreakerConfig(window_size=4, minimum_calls=2))
    for outcome in (Outcome.CALLER_ERROR, Outcome.OVERLOADED, Outcome.UPSTREAM, None):
        permit = breaker.acquire()
        steps.settle(permit, outcome, CallStatus(Code.RESOURCE_EXHAUSTED), 0.01)
    assert breaker.snapshot()["rollingCountFailure"] == 0
    assert breaker.state is BreakerState.CLOSED

    steps.settle(breaker.acquire(), Outcome.TRANSIENT, CallStatus(Code.DEADLINE_EXCEEDED), 0.5)
    steps.settle(breaker.acquire(), Outcome.FAILURE, CallStatus(Code.INTERNAL), 0.01)
    snapshot = breaker.snapshot()
    assert snapshot["rollingCountFailure"] == 2
    assert snapshot["rollingCountTimeout"] == 1  # only the DEADLINE_EXCEEDED one
    assert breaker.state is BreakerState.OPEN
    assert breaker.in_flight == 0


# ---- 3. attempt under the remaining deadline -------------------------------------------------------


async def attempted(call: Call[str, str], per_try: float | None, now: float) -> str:
    balancer, conns = balanced("a")
    endpoint, conn = steps.pick(balancer, conns, call, "catalog")
    started = steps.attempt(call, endpoint, conn, per_try, now)
    assert endpoint.outstanding == 1  # in flight on the endpoint while it runs
    assert call.started == now
    return await started


async def test_an_attempt_gets_what_is_left_of_the_deadline() -> None:
    assert await attempted(new_call(ends=100.0), None, now=97.5) == "conn-a within 2.5"


async def test_the_per_try_timeout_caps_an_attempt() -> None:
    assert await attempted(new_call(ends=100.0), 0.25, now=97.5) == "conn-a within 0.25"


async def test_a_per_try_timeout_longer_than_the_time_left_does_not_extend_it() -> None:
    assert await attempted(new_call(ends=100.0), 5.0, now=99.0) == "conn-a within 1.0"


async def test_an_attempt_after_the_deadline_gets_no_time_at_all() -> None:
    assert await attempted(new_call(ends=100.0), 0.25, now=101.0) == "conn-a within 0.0"


# ---- 4. classify by status -------------------------------------------------------------------------


def test_the_table_gives_every_status_code_an_outcome() -> None:
    assert set(OUTCOMES) == set(grpc.StatusCode)


# How the mesh treats each kind of answer (MESH.md): retry elsewhere, blame the instance, or neither.
TREATED_AS = {
    Outcome.TRANSIENT: (Code.UNAVAILABLE, Code.DEADLINE_EXCEEDED),
    Outcome.OVERLOADED: (Code.RESOURCE_EXHAUSTED,),
    Outcome.FAILURE: (Code.INTERNAL, Code.UNKNOWN, Code.DATA_LOSS, Code.UNIMPLEMENTED),
    Outcome.CALLER_ERROR: (
        Code.INVALID_ARGUMENT,
        Code.NOT_FOUND,
        Code.FAILED_PRECONDITION,
        Code.PERMISSION_DENIED,
        Code.CANCELLED,
    ),
}


def test_status_codes_classify_as_the_mesh_treats_them() -> None:
    for outcome, codes in TREATED_AS.items():
        for code in codes:
            assert classify(CallStatus(code)) is outcome, code


@pytest.mark.parametrize("code", [Code.UNAVAILABLE, Code.INTERNAL, Code.DEADLINE_EXCEEDED])
def test_a_callee_naming_its_failed_dependency_is_upstream_whatever_the_code(code: grpc.StatusCode) -> None:
    assert classify(CallStatus(code, upstream=True)) is Outcome.UPSTREAM


def test_grpc_errors_carry_their_code_and_the_failed_dependency_trailer() -> None:
    assert grpc_status_of(rpc_error(Code.UNAVAILABLE)) == CallStatus(Code.UNAVAILABLE)
    assert grpc_status_of(rpc_error(Code.DEADLINE_EXCEEDED)) == CallStatus(Code.DEADLINE_EXCEEDED)
    blamed = rpc_error(Code.UNAVAILABLE, (FAILED_DEPENDENCY, "cart/redis"))
    assert grpc_status_of(blamed) == CallStatus(Code.UNAVAILABLE, upstream=True)


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (TimeoutError(), Code.DEADLINE_EXCEEDED),
        (ConnectionRefusedError(), Code.UNAVAILABLE),
        (NoInstances("none", "catalog"), Code.UNAVAILABLE),
        (CircuitOpen("open", "catalog"), Code.UNAVAILABLE),
        (BulkheadFull("full", "catalog"), Code.UNAVAILABLE),
        (ValueError("a bug"), Code.UNKNOWN),
    ],
)
def test_errors_of_no_transport_have_a_status_too(error: Exception, code: grpc.StatusCode) -> None:
    assert status_of_error(error) == CallStatus(code)
    assert grpc_status_of(error) == CallStatus(code)
    assert http_status_of(error) == CallStatus(code)


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (400, Code.INVALID_ARGUMENT),
        (404, Code.NOT_FOUND),
        (418, Code.FAILED_PRECONDITION),
        (429, Code.RESOURCE_EXHAUSTED),
        (500, Code.INTERNAL),
        (501, Code.UNIMPLEMENTED),
        (502, Code.UNAVAILABLE),
        (503, Code.UNAVAILABLE),
        (504, Code.DEADLINE_EXCEEDED),
        (507, Code.UNKNOWN),
    ],
)
def test_http_statuses_map_to_grpc_codes(status: int, code: grpc.StatusCode) -> None:
    assert grpc_code(status) is code


def test_a_shed_503_is_overloaded_and_a_plain_one_transient() -> None:
    assert classify(http_status_of(http_error(503, **{SHED: "concurrency-limit"}))) is Outcome.OVERLOADED
    assert classify(http_status_of(http_error(503))) is Outcome.TRANSIENT
    assert grpc_code(500, shed=True) is Code.INTERNAL  # the marker only qualifies a 503


def test_http_answers_and_transport_errors_have_a_status() -> None:
    assert http_status_of(http_error(504)) == CallStatus(Code.DEADLINE_EXCEEDED)
    assert http_status_of(http_error(500, **{FAILED_DEPENDENCY: "payment"})) == CallStatus(
        Code.INTERNAL, True
    )
    assert http_status_of(httpx.ReadTimeout("slow")) == CallStatus(Code.DEADLINE_EXCEEDED)
    assert http_status_of(httpx.ConnectError("refused")) == CallStatus(Code.UNAVAILABLE)


def test_a_failed_attempt_is_noted_on_the_call() -> None:
    balancer, conns = balanced("a", "b")
    call = new_call()
    endpoint, _ = steps.pick(balancer, conns, call, "catalog")
    error = rpc_error(Code.DEADLINE_EXCEEDED)
    assert steps.note_failure(call, endpoint, error) is Outcome.TRANSIENT
    assert call.error is error and call.status == CallStatus(Code.DEADLINE_EXCEEDED)
    assert call.outcome is Outcome.TRANSIENT and call.tried == (endpoint.id,)


def test_the_final_outcome_is_the_last_attempts_or_the_refusals() -> None:
    call = new_call()
    error = rpc_error(Code.INVALID_ARGUMENT)
    call.error, call.outcome = error, Outcome.CALLER_ERROR
    assert steps.final_outcome(call, error) is Outcome.CALLER_ERROR
    assert steps.final_outcome(call, NoInstances("none", "catalog")) is Outcome.TRANSIENT
    assert steps.final_outcome(call, asyncio.CancelledError()) is None


@pytest.mark.parametrize(
    ("error", "outcome", "label"),
    [
        (CircuitOpen("open", "catalog"), Outcome.TRANSIENT, "short_circuited"),
        (NoInstances("none", "catalog"), Outcome.TRANSIENT, "no_instances"),
        (rpc_error(Code.INVALID_ARGUMENT), Outcome.CALLER_ERROR, "ok"),
        (rpc_error(Code.RESOURCE_EXHAUSTED), Outcome.OVERLOADED, "overloaded"),
        (rpc_error(Code.INTERNAL), Outcome.UPSTREAM, "dependency_error"),
        (rpc_error(Code.UNAVAILABLE), Outcome.TRANSIENT, "error"),
        (rpc_error(Code.INTERNAL), Outcome.FAILURE, "error"),
        (asyncio.CancelledError(), None, "error"),
    ],
)
def test_failed_calls_are_counted_under_their_outcome(
    error: BaseException, outcome: Outcome | None, label: str
) -> None:
    assert steps.outcome_label(error, outcome) == label


# ---- 5. retry decision -----------------------------------------------------------------------------


def test_a_transient_or_overloaded_failure_of_a_retryable_call_may_be_retried() -> None:
    for outcome in (Outcome.TRANSIENT, Outcome.OVERLOADED):
        assert steps.may_retry(new_call(number=1), outcome, max_attempts=3, now=10.0)


@pytest.mark.parametrize("outcome", [Outcome.FAILURE, Outcome.CALLER_ERROR, Outcome.UPSTREAM])
def test_other_outcomes_are_not_retried(outcome: Outcome) -> None:
    assert not steps.may_retry(new_call(number=1), outcome, max_attempts=3, now=10.0)


def test_a_call_not_safe_to_repeat_is_not_retried() -> None:
    assert not steps.may_retry(
        new_call(retryable=False, number=1), Outcome.TRANSIENT, max_attempts=3, now=10.0
    )


def test_no_retry_once_the_attempts_are_spent() -> None:
    assert steps.may_retry(new_call(number=2), Outcome.TRANSIENT, max_attempts=3, now=10.0)
    assert not steps.may_retry(new_call(number=3), Outcome.TRANSIENT, max_attempts=3, now=10.0)


def test_no_retry_without_time_left_to_answer() -> None:
    assert not steps.may_retry(new_call(ends=10.004, number=1), Outcome.TRANSIENT, max_attempts=3, now=10.0)
    assert not steps.may_retry(new_call(ends=9.0, number=1), Outcome.TRANSIENT, max_attempts=3, now=10.0)


def test_backoff_grows_with_the_attempts_up_to_its_cap() -> None:
    def most() -> float:
        return 1.0  # the top of the jitter range

    delays = [
        steps.backoff_delay(new_call(number=n), 0.025, 0.25, now=0.0, rng=most) for n in (1, 2, 3, 4, 5)
    ]
    assert delays == pytest.approx([0.025, 0.05, 0.1, 0.2, 0.25])
    assert steps.backoff_delay(new_call(number=3), 0.025, 0.25, now=0.0, rng=lambda: 0.0) == 0.0


def test_backoff_never_outlasts_the_deadline() -> None:
    assert steps.backoff_delay(new_call(ends=10.03, number=5), 0.025, 0.25, now=10.0, rng=lambda: 1.0) == (
        pytest.approx(0.03)
    )
    assert steps.backoff_delay(new_call(ends=9.0, number=5), 0.025, 0.25, now=10.0, rng=lambda: 1.0) == 0.0
