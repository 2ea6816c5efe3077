"""Error pages: the exceptions handlers raise, their status codes, trace ids, and one log line each."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import grpc
from opentelemetry import propagate, trace
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response

from boutique.mesh.failure import Failure
from boutique.shop.errors import FailedPrecondition, NotFound, ShopError, Unavailable
from boutique.shop.frontend.rendering import Renderer
from boutique.shop.frontend.settings import FrontendSettings

log = logging.getLogger(__name__)

STORES = frozenset({"redis"})  # dependency names that are a service's own store, not a service

_HTTP_TITLES = {
    400: (
        "Malformed request",
        "The browser sent something the shop could not read. Reload the page and try again.",
    ),
    404: ("Page not found", "There is nothing at this address. Head back to the shop and browse from there."),
    405: (
        "Method not allowed",
        "This address does not accept that kind of request. Use the links and buttons on the site.",
    ),
    413: ("Request too large", "The form sent was larger than the shop accepts. Send a shorter form."),
}


@dataclass(frozen=True)
class Problem:
    """One thing to fix: the form field (or part of the request) and what is wrong with it."""

    field: str
    message: str


class PageError(Exception):
    """A request answered with an error page: HTTP status, a title, a hint and the problems to fix."""

    def __init__(self, status: int, title: str, hint: str = "", problems: Sequence[Problem] = ()) -> None:
        super().__init__(f"{status} {title}")
        self.status = status
        self.title = title
        self.hint = hint
        self.problems = list(problems)


def trace_id_of(request: Request) -> str:
    """The trace id of the request's span, else of the caller's trace headers, else a fresh 32-hex id.

    Stable per request: the page, the log line and the trace all quote the same id.
    """
    cached = getattr(request.state, "trace_id", None)
    if isinstance(cached, str):
        return cached
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:  # not traced here: the caller's context, in whichever format it came
        context = trace.get_current_span(propagate.extract(request.headers)).get_span_context()
    trace_id = format(context.trace_id, "032x") if context.is_valid else secrets.token_hex(16)
    request.state.trace_id = trace_id
    return trace_id


def traced_id(request: Request) -> str:
    """The request's trace id when its trace is being recorded, else '' (nothing to link to)."""
    return trace_id_of(request) if trace.get_current_span().get_span_context().is_valid else ""


def who_failed(failure: Failure) -> str:
    """Which part of the shop failed, from the failure's dependency path (never from its message).

    ("cart",) is "the cart service"; ("checkout", "payment") is "the payment service (needed by
    checkout)"; a store behind a service reads "the cart service's store (redis)".
    """
    path = failure.dependency_path
    if not path:
        return "a service the shop depends on"
    if len(path) == 1:
        return f"the {path[0]} service"
    if path[-1] in STORES:
        owner = path[-2]
        through = f", needed by {path[0]}" if len(path) > 2 else ""
        return f"the {owner} service's store ({path[-1]}){through}"
    return f"the {path[-1]} service (needed by {path[0]})"


class ErrorPages:
    """Turns every failure into an error page (never a traceback) and logs it as one JSON line."""

    def __init__(self, renderer: Renderer, settings: FrontendSettings) -> None:
        self.renderer = renderer
        self.settings = settings

    async def page_error(self, request: Request, exc: Exception) -> Response:
        """A failure the handler described itself: bad input, unknown product, payment declined."""
        assert isinstance(exc, PageError)
        trace_id = traced_id(request)
        self._log(request, exc.status, exc.title, problems=exc.problems, trace_id=trace_id)
        return self.render(request, exc.status, exc.title, exc.hint, exc.problems, trace_id=trace_id)

    async def http_error(self, request: Request, exc: Exception) -> Response:
        """Routing and protocol failures raised by Starlette: 404, 405, 400, 413."""
        assert isinstance(exc, HTTPException)
        title, hint = _HTTP_TITLES.get(exc.status_code, (exc.detail, ""))
        problems = [Problem("request", exc.detail)] if exc.status_code == 400 and exc.detail else []
        trace_id = traced_id(request)
        self._log(request, exc.status_code, title, problems=problems, trace_id=trace_id)
        return self.render(
            request, exc.status_code, title, hint, problems, trace_id=trace_id, headers=exc.headers
        )

    async def shop_error(self, request: Request, exc: Exception) -> Response:
        """A dependency failed: 503 when it is down, 502 when it answered with something unusable.

        Everything comes from the error's Failure: who failed, the status, what the shopper may be told,
        and the trace of the failed call (the request's own when the call was not traced).
        """
        assert isinstance(exc, ShopError)
        failure = exc.failure
        who = who_failed(failure)
        headers = None
        if failure.code is grpc.StatusCode.RESOURCE_EXHAUSTED:  # shed by its concurrency limit: try soon
            status, title = 503, "The shop is busy"
            hint = f"{who.capitalize()} has more requests than it can take right now. Try again in a moment."
            headers = {"Retry-After": "1"}
        elif failure.retryable or isinstance(exc, Unavailable | FailedPrecondition):  # down: try again later
            status, title = 503, "Service unavailable"
            hint = f"The shop could not reach {who}. Wait a moment and try again."
        elif isinstance(exc, NotFound):
            status, title = 404, "Not found"
            hint = f"{who.capitalize()} does not know what was asked for. Head back to the shop."
        else:
            status, title = 502, "Bad gateway"
            hint = f"{who.capitalize()} gave an answer the shop could not use. Try again later."
        told = failure.public_message  # what the service lets the shopper know, if anything
        problems = [Problem(failure.failed_service or "request", told)] if told else []
        trace_id = failure.trace_id or trace_id_of(request)
        trace.get_current_span().record_exception(exc)
        self._log(request, status, title, error=str(exc), trace_id=trace_id, failure=failure)
        return self.render(request, status, title, hint, problems, trace_id=trace_id, headers=headers)

    async def unexpected(self, request: Request, exc: Exception) -> Response:
        """Anything else: log it with its traceback, answer 500 with a reference id and no details."""
        trace_id = trace_id_of(request)
        trace.get_current_span().record_exception(exc)
        log.error(
            "request failed",
            exc_info=exc,
            extra={"status": 500, "method": request.method, "path": request.url.path, "trace_id": trace_id},
        )
        hint = "Something went wrong on our side. Try again; if it keeps happening, quote the trace id."
        try:
            return self.render(request, 500, "Internal error", hint, trace_id=trace_id)
        except Exception:  # the error page itself failed: answer without templates
            log.exception("error page failed", extra={"trace_id": trace_id})
            return PlainTextResponse(f"internal error (trace id {trace_id})", status_code=500)

    def render(
        self,
        request: Request,
        status: int,
        title: str,
        hint: str,
        problems: Sequence[Problem] = (),
        trace_id: str = "",
        headers: Mapping[str, str] | None = None,
    ) -> HTMLResponse:
        """The error page: status, title, what to fix, and a linked trace id for dependency failures."""
        context = {
            "status": status,
            "title": title,
            "hint": hint,
            "problems": list(problems),
            "trace_id": trace_id,
            "trace_url": self.settings.trace_url(trace_id) if trace_id else "",
        }
        return self.renderer.page(request, "error.html", context, status=status, headers=headers)

    def _log(
        self,
        request: Request,
        status: int,
        title: str,
        problems: Sequence[Problem] = (),
        error: str = "",
        trace_id: str = "",
        failure: Failure | None = None,
    ) -> None:
        """One JSON line per failed request (with the failure's fields); messages name fields, never the
        values sent."""
        extra: dict[str, object] = {"status": status, "method": request.method, "path": request.url.path}
        if failure is not None:
            extra.update(failure.log_fields())
        if problems:
            extra["problems"] = [f"{p.field}: {p.message}" for p in problems]
        if error:
            extra["error"] = error
        if trace_id:
            extra["trace_id"] = trace_id
        level = logging.ERROR if status >= 500 else logging.WARNING
        log.log(level, f"request failed: {title}", extra=extra)
