"""Feature flags of one process, evaluated through OpenFeature: a flag file in process, or a flagd server.

`install_flags` picks the provider from `FlagSettings` once at start; `flags()` is what services ask.
An evaluation whose value differs from the caller's default changes behaviour, so it is recorded on the
active span the OpenTelemetry way (a `feature_flag.evaluation` event, and `feature_flag.key` /
`feature_flag.result.variant` attributes the search can find). A flag file with a mistake is refused
whole: the last good flags stay and one clear error is logged.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Mapping
from typing import Any

from openfeature import api
from openfeature.client import OpenFeatureClient
from openfeature.contrib.hook.opentelemetry import TracingHook
from openfeature.evaluation_context import EvaluationContext
from openfeature.event import EventDetails, ProviderEvent
from openfeature.exception import ParseError
from openfeature.flag_evaluation import FlagEvaluationDetails, Reason
from openfeature.hook import HookContext, HookHints
from opentelemetry import trace

from boutique.flags import check_document
from boutique.mesh.settings import FlagSettings

log = logging.getLogger("boutique.flags")

FLAG_KEY = "feature_flag.key"
FLAG_VARIANT = "feature_flag.result.variant"


class RecordWhenItMatters(TracingHook):
    """Record an evaluation on the active span only when it changes behaviour (or failed).

    Every request evaluates several flags; an event for each "off" would bury the ones that fired.
    """

    def finally_after(
        self, hook_context: HookContext, details: FlagEvaluationDetails[Any], hints: HookHints
    ) -> None:
        """Add the `feature_flag.evaluation` event and attributes when the value is not the default."""
        failed = details.reason == Reason.ERROR
        if not failed and details.value == hook_context.default_value:
            return
        super().finally_after(hook_context, details, hints)
        span = trace.get_current_span()
        span.set_attribute(FLAG_KEY, details.flag_key)
        if details.variant:
            span.set_attribute(FLAG_VARIANT, details.variant)


class Flags:
    """The flags one process evaluates, each call with the process's identity and the caller's attributes."""

    def __init__(self, client: OpenFeatureClient, service: str = "", instance: str = "") -> None:
        self._client = client
        self._identity = {"service": service, "instance": instance}

    def boolean(self, key: str, default: bool = False, **attributes: Any) -> bool:
        """A boolean flag (default: what the code does when no flag says otherwise)."""
        return self._client.get_boolean_value(key, default, self._context(attributes))

    def number(self, key: str, default: float = 0.0, **attributes: Any) -> float:
        """A number flag; integers in the file count as numbers."""
        return float(self._client.get_float_value(key, default, self._context(attributes)))

    def string(self, key: str, default: str = "", **attributes: Any) -> str:
        """A string flag."""
        return self._client.get_string_value(key, default, self._context(attributes))

    def object(self, key: str, default: Mapping[str, Any] | None = None, **attributes: Any) -> dict[str, Any]:
        """An object flag (e.g. a mesh fault's settings); empty when off."""
        value = self._client.get_object_value(key, dict(default or {}), self._context(attributes))
        return value if isinstance(value, dict) else dict(default or {})

    def _context(self, attributes: Mapping[str, Any]) -> EvaluationContext:
        """Who asks (service, instance, attributes), keyed by the trace so a percentage splits traces."""
        span_context = trace.get_current_span().get_span_context()
        key = format(span_context.trace_id, "032x") if span_context.is_valid else uuid.uuid4().hex
        return EvaluationContext(targeting_key=key, attributes={**self._identity, **attributes})


_flags: Flags | None = None


def flags() -> Flags:
    """The process's flags (every flag at its coded default until `install_flags` runs)."""
    global _flags
    if _flags is None:
        _flags = Flags(api.get_client())
    return _flags


def install_flags(settings: FlagSettings, service: str = "", instance: str = "") -> Flags:
    """Choose the provider from `settings` (file, flagd server, or none) and record fired flags on spans."""
    global _flags
    provider = _provider(settings)
    if provider is not None:
        _report_provider_events(settings.describe())
        api.set_provider(provider)
    else:
        api.clear_providers()
    api.clear_hooks()
    api.add_hooks([RecordWhenItMatters()])
    _flags = Flags(api.get_client(), service, instance)
    return _flags


def _provider(settings: FlagSettings) -> Any:
    """The flagd provider for these settings, or None when no flag source is configured."""
    if not settings.configured:
        return None
    from openfeature.contrib.provider.flagd import FlagdProvider
    from openfeature.contrib.provider.flagd.config import ResolverType

    from boutique.mesh.flag_watch import watch_every_write

    if settings.source_path:
        provider = FlagdProvider(
            resolver_type=ResolverType.FILE,
            offline_flag_source_path=settings.source_path,
            deadline_ms=settings.poll_ms,
        )
        watch_every_write(provider)
        _refuse_bad_documents(provider)
        return provider
    resolver = ResolverType.IN_PROCESS if settings.resolver == "in-process" else ResolverType.RPC
    return FlagdProvider(resolver_type=resolver, host=settings.host, port=settings.port)


class _CheckedStore:
    """Stands between the file watcher and the evaluator: a document with a mistake never replaces the last good."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def update(self, document: dict[str, Any]) -> None:
        """Hand a checked document on; ParseError (which the watcher reports) for one with a mistake."""
        problems = check_document(document)
        if problems:
            raise ParseError("; ".join(problems))
        self._inner.update(document)


def _refuse_bad_documents(provider: Any) -> None:
    """Put the document check in front of the in-process evaluator (flagd checks only the shape)."""
    connector = getattr(getattr(provider, "resolver", None), "connector", None)
    if connector is None or not hasattr(connector, "flag_store"):
        raise RuntimeError("the flagd provider's file watcher has changed; the flag file check cannot attach")
    connector.flag_store = _CheckedStore(connector.flag_store)
    # The watcher logs a stack trace on every poll while the file is bad; the error event says it once.
    logging.getLogger("openfeature.contrib").addFilter(lambda record: record.funcName != "handle_error")


_handlers: list[tuple[ProviderEvent, Any]] = []


def _report_provider_events(source: str) -> None:
    """Log a bad flag source once per distinct problem, and its recovery (replacing earlier reporters)."""
    for event, handler in _handlers:
        with contextlib.suppress(ValueError):  # clear_providers already dropped it
            api.remove_handler(event, handler)
    _handlers.clear()
    state = {"error": "", "loaded": ""}

    def on_error(details: EventDetails) -> None:
        message = details.message or "unknown error"
        if message != state["error"]:
            state["error"] = message
            log.error("flags: %s is not usable (%s); keeping the last good flags", source, message)

    def on_change(details: EventDetails) -> None:
        if state["error"]:
            log.info("flags: %s is usable again", source)
            state["error"] = ""
        if details.flags_changed and not state["loaded"]:
            state["loaded"] = "yes"
            log.info("flags: %d flags from %s", len(details.flags_changed), source)
        elif details.flags_changed:
            log.info("flags: changed %s", ", ".join(sorted(details.flags_changed)))

    _handlers.extend(
        [
            (ProviderEvent.PROVIDER_ERROR, on_error),
            (ProviderEvent.PROVIDER_READY, on_change),
            (ProviderEvent.PROVIDER_CONFIGURATION_CHANGED, on_change),
        ]
    )
    for event, handler in _handlers:
        api.add_handler(event, handler)
