"""`GET /api/sampling` on the query port: the tail sampler's settings and its kept/dropped counts, as JSON.

Answer `{"data": {...}}`: with sampling off `{"enabled": false}`; with it on, the decision wait and
trace limit, traces and spans kept, dropped and held, spans that came after their trace's decision,
per policy (in config order) the traces and spans its own verdict kept and dropped, and the journal's
files and bytes. A policy's counts are its verdicts: a trace kept by another policy counts as dropped
by one that did not keep it.
"""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from boutique.observatory.sampling.stage import TailSampler


def sampling_routes(sampler: TailSampler | None) -> list[BaseRoute]:
    """The sampling route for the query port (answering `enabled: false` without a sampler)."""

    async def figures(request: Request) -> Response:
        """The sampler's settings and counts."""
        if sampler is None:
            return JSONResponse({"data": {"enabled": False}})
        return JSONResponse({"data": await run_in_threadpool(sampler.snapshot)})

    return [Route("/api/sampling", figures)]
