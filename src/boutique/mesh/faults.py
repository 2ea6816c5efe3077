"""Faults the flag file injects into the mesh, the way a service mesh injects them.

On the calling side `meshCallFault` delays or aborts calls, narrowed by the attributes `caller`, `callee`
and `method` (and a percentage of traces); on the serving side `grayReplica` makes the instances it
targets answer late. An injected fault stands in for the network or the callee, so the rest of the mesh
cannot tell it from the real thing: an abort is the picked instance's answer with that status (an
UNAVAILABLE is retried elsewhere when the call is idempotent, and counts against the instance's outlier
streak and the caller's breaker, exactly as a real one), a delay uses up the call's deadline while the
attempt is in flight on its instance. That is the point of injecting one: to watch the caller's own
defences (retry, breaker, fallback, ejection) meet the failure. The effects stay on the targeted edge,
since every caller keeps its own breaker and outlier state per dependency.

A flag evaluation costs tens of microseconds, several times the mesh's own bookkeeping of a call, so a
flag is evaluated only while the flag document can make it fire (`Armed`, kept current by the
provider's events).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from openfeature import api
from openfeature.event import EventDetails, ProviderEvent
from openfeature.provider.no_op_provider import NoOpProvider
from opentelemetry import trace

from boutique.flags import FlagFile, FlagFileError
from boutique.mesh.errors import DeadlineExceeded
from boutique.mesh.flags import flags
from boutique.mesh.instance import Instance

log = logging.getLogger(__name__)

CALL_FAULT = "meshCallFault"
GRAY_REPLICA = "grayReplica"
INJECTED = "fault.injected"  # span attribute: "delay" or "abort"
REASON = "FAULT_INJECTED"  # the ErrorInfo reason an injected abort carries

Conn = TypeVar("Conn")
T = TypeVar("T")

# How a transport answers an injected fault: the error its call would have failed with, given the status,
# a message and the instance that "answered" (None when nothing answered: the deadline passed first).
Answer = Callable[[grpc.StatusCode, str, Instance | None], Exception]


@dataclass(frozen=True, slots=True)
class CallFault:
    """What `meshCallFault` does to one call: fail each attempt with `abort`, or send it `delay` s late."""

    delay: float
    abort: grpc.StatusCode | None
    answer: Answer

    @property
    def kind(self) -> str:
        """`abort` or `delay`, as the span attribute `fault.injected` says."""
        return "abort" if self.abort is not None else "delay"

    async def attempt(
        self, send: Callable[[Conn, float], Awaitable[T]], conn: Conn, timeout: float, instance: Instance
    ) -> T:
        """One attempt under the fault: the abort status as the instance's answer, or the delay, then
        the send with the time left; DEADLINE_EXCEEDED, unsent, when the delay outlasts `timeout`."""
        if self.abort is not None:
            raise self.answer(self.abort, f"{CALL_FAULT}: {self.abort.name} injected", instance)
        if self.delay >= timeout:
            await asyncio.sleep(timeout)
            message = f"{CALL_FAULT}: a {self.delay * 1000:.0f} ms delay outlasted the deadline; not sent"
            raise self.answer(grpc.StatusCode.DEADLINE_EXCEEDED, message, None)
        await asyncio.sleep(self.delay)
        return await send(conn, timeout - self.delay)


def call_fault(caller: str, callee: str, method: str, answer: Answer) -> CallFault | None:
    """The fault `meshCallFault` puts on this call (None: none); noted on the current (the call's) span.

    Evaluated once per call, inside the call's span, so the evaluation is recorded where it acted.
    """
    if not armed().may_fire(CALL_FAULT):
        return None
    value = flags().object(CALL_FAULT, caller=caller, callee=callee, method=method)
    fault = parse_call_fault(value, answer)
    if fault is not None:
        span = trace.get_current_span()
        span.set_attribute(INJECTED, fault.kind)
        if fault.abort is not None:
            span.set_attribute("fault.abort", fault.abort.name)
        else:
            span.set_attribute("fault.delay_ms", round(fault.delay * 1000))
    return fault


def parse_call_fault(value: Mapping[str, Any], answer: Answer) -> CallFault | None:
    """A variant's value ({"delayMs": N} or {"abort": "CODE"}; {} is off) as a fault; None when off."""
    code = value.get("abort")
    if code:
        status = getattr(grpc.StatusCode, str(code), None)
        if isinstance(status, grpc.StatusCode) and status is not grpc.StatusCode.OK:
            return CallFault(0.0, status, answer)
        _warn_once(f"{CALL_FAULT}: abort {code!r} is not a gRPC status code; ignored")
        return None
    delay = value.get("delayMs")
    if isinstance(delay, int | float) and not isinstance(delay, bool) and delay > 0:
        return CallFault(delay / 1000, None, answer)
    if value:
        _warn_once(f"{CALL_FAULT}: {dict(value)!r} is neither a delay nor an abort; ignored")
    return None


async def answer_late(left: float | None) -> None:
    """`grayReplica`: wait as long as the flag says before serving, within the caller's deadline.

    Called inside the server span, which records the evaluation. When the wait would outlast the time
    `left`, it waits that long and raises DeadlineExceeded: the caller has given up by then.
    """
    if not armed().may_fire(GRAY_REPLICA):
        return
    delay = flags().number(GRAY_REPLICA) / 1000
    if delay <= 0:
        return
    span = trace.get_current_span()
    span.set_attributes({INJECTED: "delay", "fault.delay_ms": round(delay * 1000)})
    if left is not None and delay >= left:
        await asyncio.sleep(max(left, 0.0))
        raise DeadlineExceeded(
            f"{GRAY_REPLICA}: a {delay * 1000:.0f} ms delay outlasted the caller's deadline"
        )
    await asyncio.sleep(delay)


# ---- when a flag can fire at all --------------------------------------------------------------------


class Armed:
    """Which of `keys` can fire under the flag document the provider holds, kept current by its events.

    A flag cannot fire when it is disabled, or when every variant it can answer (its default variant and
    those its targeting rule names) has a quiet value ({} or 0: off). Without a document to read (a
    flagd server) every flag counts as armed and is evaluated on every call; without any provider none is.
    The provider's READY and CONFIGURATION_CHANGED events say when to read the document again; once a
    `period` it also checks that the provider is the one it listens to (a replaced provider takes the
    event handlers with it when the flags are installed again).
    """

    EVENTS = (ProviderEvent.PROVIDER_READY, ProviderEvent.PROVIDER_CONFIGURATION_CHANGED)

    def __init__(
        self, keys: Iterable[str], period: float = 1.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.keys = tuple(keys)
        self.period = period
        self._clock = clock
        self._armed = frozenset(self.keys)  # until the document has been read: evaluate
        self._provider: object = None
        self._check_at = 0.0
        self._lock = threading.Lock()

    def may_fire(self, key: str) -> bool:
        """Whether evaluating `key` can answer anything but off (cheap: a clock read and a set lookup)."""
        if self._clock() >= self._check_at:
            self._follow_provider()
        return key in self._armed

    def refresh(self) -> frozenset[str]:
        """Read the provider's flag document again; the keys that can fire."""
        with self._lock:
            document = provider_document()
            if document is None:
                self._armed = frozenset(self.keys)
            else:
                found = document.get("flags") or {}
                self._armed = frozenset(key for key in self.keys if key in found and can_fire(found[key]))
            return self._armed

    def _follow_provider(self) -> None:
        """Listen to the provider's events (again, when it was replaced) and read its document."""
        self._check_at = self._clock() + self.period
        provider = api.get_client().provider
        if provider is self._provider:
            return
        self._provider = provider
        for event in self.EVENTS:
            with contextlib.suppress(ValueError):  # not registered, or dropped with the last provider
                api.remove_handler(event, self._changed)
            api.add_handler(event, self._changed)
        self.refresh()

    def _changed(self, _details: EventDetails) -> None:
        self.refresh()


_NOTHING: dict[str, Any] = {"flags": {}}


def provider_document() -> dict[str, Any] | None:
    """The document of the provider's flag file; empty without a provider; None when it cannot be read."""
    provider = api.get_client().provider
    if isinstance(provider, NoOpProvider):
        return _NOTHING  # every evaluation answers the coded default
    path = getattr(getattr(provider, "config", None), "offline_flag_source_path", None)
    if not path:
        return None
    try:
        return FlagFile(path).read()
    except FlagFileError:
        return None  # the provider keeps its last good document, which this cannot see: evaluate


def can_fire(flag: Mapping[str, Any]) -> bool:
    """Whether some evaluation of this flag (flagd schema) can answer a value other than off ({} or 0)."""
    if flag.get("state") != "ENABLED":
        return False  # a disabled flag answers the caller's default
    variants = flag.get("variants") or {}
    answers = rule_answers(flag.get("targeting") or None)
    if answers is None:
        return True
    names = {flag.get("defaultVariant") if name is None else name for name in answers}
    return any(bool(variants.get(name)) for name in names if isinstance(name, str))


def rule_answers(rule: Any) -> set[str | None] | None:
    """The variant names a targeting rule can answer (None stands for the default variant), or None when
    that cannot be told (a rule that computes the name)."""
    if rule is None:
        return {None}
    if isinstance(rule, bool):
        return {str(rule).lower()}
    if isinstance(rule, str | int | float):
        return {str(rule)}
    if not isinstance(rule, dict) or len(rule) != 1:
        return None
    ((op, args),) = rule.items()
    if op == "if" and isinstance(args, list) and args:
        results = [*args[1::2], args[-1] if len(args) % 2 else None]
        found: set[str | None] = set()
        for result in results:
            names = rule_answers(result)
            if names is None:
                return None
            found |= names
        return found
    if op == "fractional" and isinstance(args, list):
        buckets = [arg for arg in args if isinstance(arg, list)]
        if not all(bucket and isinstance(bucket[0], str) for bucket in buckets):
            return None
        return {bucket[0] for bucket in buckets} | {None}
    return None


_armed: Armed | None = None
_warned: set[str] = set()


def armed() -> Armed:
    """The process's watch on the fault flags (it starts watching on first use)."""
    global _armed
    if _armed is None:
        _armed = Armed((CALL_FAULT, GRAY_REPLICA))
    return _armed


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        log.warning(message)
