"""A sending queue that keeps OTLP requests through a backend outage and delivers them when it is back.

The SDK's batch processors drop a batch once their exporter gives up (about ten seconds), so a
restarting or overloaded backend loses everything made meanwhile. This queue works like the
OpenTelemetry Collector's exporter sending queue with `retry_on_failure`, for one signal each (spans,
log records or metric data points, `boutique.mesh.otlp_send.Signal`): encoded OTLP requests are queued,
bounded by item count and bytes; the head request is retried with exponential backoff (or the delay the
backend asked for) for as long as the backend answers "unavailable" or cannot be reached; when the
queue is full the oldest items make room and are counted. At shutdown what is still undelivered is
spooled to disk, when a spool directory is given, and sent by the next process of the same instance.

For spans the queue is the span processor itself (finished spans are batched and encoded in its
thread); log records (`boutique.mesh.log_export`) and metrics (`boutique.mesh.metric_export`) hand it
requests they encoded (`submit`). A refusal for good (a backend that takes no logs, say) is logged at
most once a minute, with the count since the last line.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from prometheus_client import REGISTRY
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from boutique.backoff import AROUND, backoff_delay
from boutique.mesh.otlp_send import TRACES, Answer, Signal, Transport, Verdict

log = logging.getLogger(__name__)

MIB = 1024 * 1024
SPOOL_SUFFIX = ".otlp"
REFUSAL_LOG_EVERY = 60.0  # seconds between two lines about requests refused for good


@dataclass(frozen=True)
class QueueSettings:
    """Bounds and timing of a sending queue (`boutique.mesh.settings` reads the variables the README lists).

    The bounds count the queue's items whatever its signal: spans, log records or metric data points.
    `batch_spans` and `schedule_delay` batch spans (other signals arrive batched).
    """

    max_spans: int = 50_000
    max_bytes: int = 64 * MIB
    batch_spans: int = 512
    schedule_delay: float = 5.0
    retry_initial: float = 0.5
    retry_max: float = 5.0
    shutdown_timeout: float = 3.0


@dataclass
class _Request:
    """One encoded export request waiting to be delivered."""

    payload: bytes
    items: int  # spans, log records or data points
    spooled: Path | None = None  # the file it came from, removed once delivered


@dataclass
class QueueCounts:
    """What the queue did, for metrics and tests (updated under the queue's lock)."""

    exported: int = 0
    dropped_full: int = 0
    dropped_rejected: int = 0
    dropped_shutdown: int = 0
    retries: int = 0
    spooled: int = 0


def _encode(spans: Sequence[ReadableSpan]) -> bytes:
    """Spans as a serialized ExportTraceServiceRequest (the SDK's own OTLP encoder)."""
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    return bytes(encode_spans(spans).SerializeToString())


class SendingQueue(SpanProcessor):
    """Queue OTLP requests of one signal and deliver them in a background thread, retrying outages.

    As a span processor it batches and encodes finished spans itself; for other signals `submit` queues
    requests encoded elsewhere.
    """

    def __init__(
        self,
        transport: Callable[[], Transport],
        settings: QueueSettings | None = None,
        spool_dir: Path | None = None,
        encode: Callable[[Sequence[ReadableSpan]], bytes] = _encode,
        signal: Signal = TRACES,
    ) -> None:
        self.signal = signal
        self.settings = settings or QueueSettings()
        self._build_transport = transport  # built in the worker: its imports stay off start-up
        self._transport: Transport | None = None
        self._encode = encode
        self.spool_dir = spool_dir
        self._spans: deque[ReadableSpan] = deque()
        self._requests: deque[_Request] = deque()
        self._queued_bytes = 0
        self._request_items = 0  # items in _requests (the one being sent is not in there)
        self._in_flight: _Request | None = None
        self._in_flight_dropped = False  # the queue filled while it was being sent: drop it if it fails
        self._cond = threading.Condition()
        self._flushing = 0
        self._stopping = False
        self._shutdown_timeout = self.settings.shutdown_timeout
        self._retry_at = 0.0
        self._failures_in_row = 0
        self._outage_since: float | None = None
        self._refusals_unlogged = 0
        self._refusal_logged_at = -REFUSAL_LOG_EVERY
        self.counts = QueueCounts()
        self._thread = threading.Thread(
            target=self._run, name=f"otlp-sending-queue-{signal.name}", daemon=True
        )
        self._thread.start()
        _ALL.add(self)

    # ---- the span processor interface (called from application threads) -----------------------

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        """Nothing to do when a span starts."""

    def on_end(self, span: ReadableSpan) -> None:
        """Queue a sampled span; wake the sender once a batch is ready."""
        if not span.context.trace_flags.sampled:
            return
        with self._cond:
            if self._stopping:
                return
            self._spans.append(span)
            if self._pending() > self.settings.max_spans:
                self._drop_oldest()
            if len(self._spans) == self.settings.batch_spans:
                self._cond.notify()

    def submit(self, payload: bytes, items: int) -> None:
        """Queue one encoded export request of `items` items (never blocks; a full queue drops the oldest)."""
        with self._cond:
            if self._stopping:
                self.counts.dropped_shutdown += items
                return
            self._enqueue(_Request(payload, items))
            self._cond.notify()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Deliver everything queued now; False when the backend did not take it all in time."""
        deadline = time.monotonic() + timeout_millis / 1000
        with self._cond:
            self._flushing += 1
            self._retry_at = 0.0  # a flush tries again at once
            self._cond.notify_all()
            try:
                while self._pending() and time.monotonic() < deadline and self._thread.is_alive():
                    self._cond.wait(min(0.05, max(0.0, deadline - time.monotonic())))
                return not self._pending()
            finally:
                self._flushing -= 1

    def shutdown(self, timeout: float | None = None) -> None:
        """Deliver what is queued within the shutdown timeout (or `timeout`, when that is shorter: what is
        left of the process's stop), spool the rest, stop the thread."""
        limit = self.stop(timeout)
        if limit is not None:
            self.join(limit)

    def stop(self, timeout: float | None = None) -> float | None:
        """Begin the shutdown without waiting (several queues then stop side by side); how long to join
        (None when it was stopped already).

        A send in flight may outlast the limit by its own timeout; a bounded stop does not wait it out.
        """
        limit = (
            self.settings.shutdown_timeout
            if timeout is None
            else min(timeout, self.settings.shutdown_timeout)
        )
        with self._cond:
            if self._stopping:
                return None
            self._stopping = True
            self._shutdown_timeout = limit
            self._retry_at = 0.0
            self._cond.notify_all()
        return limit + (2.0 if timeout is None else 0.2)

    def join(self, timeout: float) -> None:
        """Wait up to `timeout` for the stopped thread, then close the transport."""
        self._thread.join(max(0.0, timeout))
        if self._transport is not None:
            with contextlib.suppress(Exception):
                self._transport.close()

    # ---- figures ------------------------------------------------------------------------------

    @property
    def queued_items(self) -> int:
        """Items waiting: spans not yet encoded, encoded and queued, and being sent."""
        with self._cond:
            return self._pending()

    queued_spans = queued_items

    @property
    def queued_bytes(self) -> int:
        """Bytes of encoded requests waiting (and being sent)."""
        with self._cond:
            return self._queued_bytes + self._in_flight_bytes()

    def _sending(self) -> bool:
        """Whether a request is being sent and still counted (not yet given up to make room)."""
        return self._in_flight is not None and not self._in_flight_dropped

    def _in_flight_bytes(self) -> int:
        return len(self._in_flight.payload) if self._in_flight and not self._in_flight_dropped else 0

    def _pending(self) -> int:
        in_flight = self._in_flight.items if self._in_flight and not self._in_flight_dropped else 0
        return len(self._spans) + self._request_items + in_flight

    # ---- bounds (under the lock) --------------------------------------------------------------

    def _drop_oldest(self) -> None:
        """Make room for one item: the oldest request goes first (the one being sent, if its try fails),
        then the oldest queued request, else the oldest raw span."""
        if self._in_flight is not None and not self._in_flight_dropped:
            self._in_flight_dropped = True
        elif self._requests:
            self._forget(self._requests.popleft(), "full")
        elif self._spans:
            self._spans.popleft()
            self.counts.dropped_full += 1

    def _forget(self, request: _Request, why: str) -> None:
        """Remove a queued request from the totals and count its items as dropped."""
        self._queued_bytes -= len(request.payload)
        self._request_items -= request.items
        if why == "full":
            self.counts.dropped_full += request.items
        else:
            self.counts.dropped_shutdown += request.items
        if request.spooled is not None:
            with contextlib.suppress(OSError):
                request.spooled.unlink()

    def _enqueue(self, request: _Request, front: bool = False) -> None:
        """Add an encoded request; a new one makes room by dropping the oldest while a bound is exceeded.

        A request put back at the front after a failed try was counted all along, so it needs no room.
        """
        self._queued_bytes += len(request.payload)
        self._request_items += request.items
        if front:
            self._requests.appendleft(request)
            return
        self._requests.append(request)
        # Over the byte bound, the newest request may stay alone (one request above it at most). Over the
        # item bound, it goes too: raw spans that arrived while it was being encoded are newer than it.
        while (
            self._queued_bytes + self._in_flight_bytes() > self.settings.max_bytes
            and (len(self._requests) > 1 or self._sending())
        ) or (self._pending() > self.settings.max_spans and (self._requests or self._sending())):
            if self._sending():
                self._in_flight_dropped = True
            else:
                self._forget(self._requests.popleft(), "full")

    # ---- the sender thread --------------------------------------------------------------------

    def _run(self) -> None:
        self._load_spool()
        while True:
            with self._cond:
                self._wait_for_work()
                stopping = self._stopping
                batch = self._take_spans()
            if batch:
                self._encode_batches(batch)
            if stopping:
                self._drain_for_shutdown()
                return
            self._send_ready()

    def _wait_for_work(self) -> None:
        """Sleep until spans are due (a full batch, the schedule delay, a flush), a retry is due, or a stop."""
        deadline = time.monotonic() + self.settings.schedule_delay
        while not self._stopping:
            now = time.monotonic()
            if self._spans and (
                len(self._spans) >= self.settings.batch_spans or self._flushing or now >= deadline
            ):
                return
            if self._requests and now >= self._retry_at:
                return
            if not self._spans and not self._requests and now >= deadline:
                return
            wake = min(deadline, self._retry_at) if self._requests else deadline
            self._cond.wait(max(0.005, wake - now))

    def _take_spans(self) -> list[ReadableSpan]:
        taken = list(self._spans)
        self._spans.clear()
        return taken

    def _encode_batches(self, spans: list[ReadableSpan]) -> None:
        """Encode spans into requests of at most `batch_spans` each and queue them."""
        size = self.settings.batch_spans
        for start in range(0, len(spans), size):
            chunk = spans[start : start + size]
            try:
                payload = self._encode(chunk)
            except Exception:
                log.exception("could not encode spans for export", extra={"items": len(chunk)})
                continue
            with self._cond:
                self._enqueue(_Request(payload, len(chunk)))

    def _next(self) -> _Request | None:
        """Take the head request to send, or None when nothing is due."""
        with self._cond:
            if not self._requests or time.monotonic() < self._retry_at:
                return None
            request = self._requests.popleft()
            self._queued_bytes -= len(request.payload)
            self._request_items -= request.items
            self._in_flight = request
            self._in_flight_dropped = False
            return request

    def _send_ready(self, until: float | None = None) -> None:
        """Send queued requests in order until the queue is empty or the backend needs a pause."""
        while (request := self._next()) is not None:
            answer = self._try(request, until)
            with self._cond:
                self._in_flight = None
                if answer.verdict is Verdict.RETRY and self._in_flight_dropped:  # no room kept for it
                    self._queued_bytes += len(request.payload)
                    self._request_items += request.items
                    self._forget(request, "full")
                    self._schedule_retry(answer)
                    self._cond.notify_all()
                    return
                if answer.verdict is Verdict.RETRY:
                    self._enqueue(request, front=True)
                    self._schedule_retry(answer)
                    self._cond.notify_all()
                    return
                self._settled(request, answer)
                self._cond.notify_all()
            if until is not None and time.monotonic() >= until:
                return

    def _try(self, request: _Request, until: float | None) -> Answer:
        """One delivery attempt, with the transport built on first use."""
        try:
            if self._transport is None:
                self._transport = self._build_transport()
            timeout = self._transport.timeout
            if until is not None:
                timeout = max(0.1, min(timeout, until - time.monotonic()))
            return self._transport.send(request.payload, timeout)
        except Exception as exc:  # a transport bug must not kill the thread or lose the request
            log.exception("export failed unexpectedly", extra={"signal": self.signal.name})
            return Answer(Verdict.RETRY, f"{type(exc).__name__}: {exc}")

    def _settled(self, request: _Request, answer: Answer) -> None:
        """A request left the queue for good: delivered, or refused for good."""
        if request.spooled is not None:
            with contextlib.suppress(OSError):
                request.spooled.unlink()
        if answer.verdict is Verdict.SENT:
            self.counts.exported += request.items - answer.rejected
            self.counts.dropped_rejected += answer.rejected
            if self._outage_since is not None:
                log.info(
                    f"{self.signal.name} export recovered",
                    extra={
                        "signal": self.signal.name,
                        "outage_seconds": round(time.monotonic() - self._outage_since, 1),
                        "queued_items": self._pending(),
                    },
                )
            self._outage_since = None
            self._failures_in_row = 0
            self._retry_at = 0.0
        else:
            self.counts.dropped_rejected += request.items
            self._refusals_unlogged += request.items
            if time.monotonic() - self._refusal_logged_at >= REFUSAL_LOG_EVERY:
                log.error(
                    f"{self.signal.name} export refused for good; {self.signal.items} dropped",
                    extra={
                        "signal": self.signal.name,
                        "items": self._refusals_unlogged,
                        "reason": answer.reason[:300],
                    },
                )
                self._refusal_logged_at = time.monotonic()
                self._refusals_unlogged = 0

    def _schedule_retry(self, answer: Answer) -> None:
        """Back off exponentially with jitter, or as long as the backend asked (capped)."""
        self.counts.retries += 1
        self._failures_in_row += 1
        if answer.retry_after is not None:
            delay = min(answer.retry_after, self.settings.retry_max * 6)
        else:
            attempt = self._failures_in_row - 1
            delay = backoff_delay(attempt, self.settings.retry_initial, self.settings.retry_max, AROUND)
        self._retry_at = time.monotonic() + delay
        if self._outage_since is None:
            self._outage_since = time.monotonic()
            log.warning(
                f"{self.signal.name} export failing; keeping {self.signal.items} and retrying",
                extra={
                    "signal": self.signal.name,
                    "reason": answer.reason[:300],
                    "queued_items": self._pending(),
                },
            )

    # ---- shutdown and the spool ---------------------------------------------------------------

    def _drain_for_shutdown(self) -> None:
        """Try to deliver within the shutdown timeout; spool (or count as dropped) what is left."""
        until = time.monotonic() + self._shutdown_timeout
        while time.monotonic() < until:
            with self._cond:
                if not self._requests:
                    break
                self._retry_at = min(self._retry_at, until)
                wait = self._retry_at - time.monotonic()
            if wait > 0:
                time.sleep(min(wait, max(0.0, until - time.monotonic())))
                continue
            self._send_ready(until)
        with self._cond:
            left = list(self._requests)
            self._requests.clear()
            self._request_items = 0
            self._queued_bytes = 0
            self._cond.notify_all()
        if left:
            self._spool(left)

    def _spool(self, requests: list[_Request]) -> None:
        """Write undelivered requests to the spool directory (or count them dropped without one)."""
        what = {"signal": self.signal.name}
        if self.spool_dir is None:
            with self._cond:
                self.counts.dropped_shutdown += sum(r.items for r in requests)
            log.warning(
                f"{self.signal.items} not delivered at shutdown",
                extra={**what, "items": sum(r.items for r in requests)},
            )
            return
        written = 0
        try:
            self.spool_dir.mkdir(parents=True, exist_ok=True)
            stamp = time.time_ns()
            for number, request in enumerate(requests):
                if request.spooled is not None:  # still on disk from the last run
                    written += request.items
                    continue
                path = self.spool_dir / f"{stamp}-{number:06d}-{request.items}{SPOOL_SUFFIX}"
                temporary = path.with_suffix(".tmp")
                temporary.write_bytes(request.payload)
                temporary.replace(path)
                written += request.items
        except OSError as exc:
            log.error(f"could not spool undelivered {self.signal.items}", extra={**what, "error": str(exc)})
        with self._cond:
            self.counts.spooled += written
            self.counts.dropped_shutdown += sum(r.items for r in requests) - written
        log.info(
            f"undelivered {self.signal.items} spooled for the next start", extra={**what, "items": written}
        )

    def _load_spool(self) -> None:
        """Queue the requests a previous process of this instance spooled, oldest first."""
        if self.spool_dir is None or not self.spool_dir.is_dir():
            return
        loaded = 0
        for path in sorted(self.spool_dir.glob(f"*{SPOOL_SUFFIX}")):
            try:
                payload = path.read_bytes()
                items = int(path.stem.rsplit("-", 1)[1])
            except (OSError, ValueError, IndexError):
                continue
            with self._cond:
                self._enqueue(_Request(payload, items, spooled=path))
            loaded += items
        if loaded:
            log.info(
                f"spooled {self.signal.items} queued for delivery",
                extra={"signal": self.signal.name, "items": loaded},
            )


_ALL: weakref.WeakSet[SendingQueue] = weakref.WeakSet()


# Counter families by signal: the spans' names are the ones dashboards and the README already use.
_FAMILIES = {
    "traces": ("boutique_telemetry_spans", "Spans"),
    "logs": ("boutique_telemetry_log_records", "Log records"),
    "metrics": ("boutique_telemetry_metric_points", "Metric data points"),
    "profiles": ("boutique_telemetry_profiles", "Profiles (one per sample type in each export)"),
}


class QueueMetrics(Collector):
    """The sending queues of this process as Prometheus metrics (read when scraped, no per-item cost).

    Queue size and retries carry a `signal` label (traces, logs, metrics, profiles); exported and dropped
    items are counted in one family per signal, in that signal's unit (spans, log records, data points,
    profiles).
    `boutique_telemetry_export_queue_spans` stays the spans waiting, as before.
    """

    def collect(self) -> Iterator[Metric]:
        """Queue size in items and bytes, items exported and dropped by reason, retries; per signal."""
        queues = list(_ALL)
        by_signal: dict[str, list[SendingQueue]] = {name: [] for name in _FAMILIES}
        for queue in queues:
            by_signal.setdefault(queue.signal.name, []).append(queue)
        spans = GaugeMetricFamily("boutique_telemetry_export_queue_spans", "Spans waiting to be exported.")
        spans.add_metric([], sum(q.queued_items for q in by_signal["traces"]))
        yield spans
        size = GaugeMetricFamily(
            "boutique_telemetry_export_queue_items",
            "Items waiting to be exported (spans, log records, metric data points or profiles).",
            labels=["signal"],
        )
        size_bytes = GaugeMetricFamily(
            "boutique_telemetry_export_queue_bytes",
            "Bytes of encoded export requests waiting.",
            labels=["signal"],
        )
        retries = CounterMetricFamily(
            "boutique_telemetry_export_retries",
            "Export tries the backend answered with 'try later'.",
            labels=["signal"],
        )
        for signal, members in by_signal.items():
            size.add_metric([signal], sum(q.queued_items for q in members))
            size_bytes.add_metric([signal], sum(q.queued_bytes for q in members))
            retries.add_metric([signal], sum(q.counts.retries for q in members))
        yield from (size, size_bytes, retries)
        for signal, (prefix, what) in _FAMILIES.items():
            members = by_signal[signal]
            exported = CounterMetricFamily(f"{prefix}_exported", f"{what} the telemetry backend accepted.")
            exported.add_metric([], sum(q.counts.exported for q in members))
            yield exported
            dropped = CounterMetricFamily(
                f"{prefix}_dropped",
                f"{what} never delivered: queue full (oldest first), refused by the backend, or left at shutdown.",
                labels=["reason"],
            )
            dropped.add_metric(["queue_full"], sum(q.counts.dropped_full for q in members))
            dropped.add_metric(["rejected"], sum(q.counts.dropped_rejected for q in members))
            dropped.add_metric(["shutdown"], sum(q.counts.dropped_shutdown for q in members))
            yield dropped


REGISTRY.register(QueueMetrics())
