"""The query API's own JSON routes, called in process by the pages that draw on the server.

The Logs and Metrics pages read exactly what `GET /api/logs…` and `GET /api/metrics…` answer, through
the same routes a program calls (no socket, no second copy of the queries), so the pages and the API
can never disagree about parameters, defaults or errors.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx
from starlette.routing import BaseRoute, Router

Params = Sequence[tuple[str, str]]


@dataclass(frozen=True)
class Answer:
    """An API answer: its HTTP status and its JSON body (None when the body is not JSON)."""

    status: int
    body: Any

    @property
    def ok(self) -> bool:
        """Whether the API answered 200."""
        return self.status == 200

    @property
    def data(self) -> Any:
        """The answer's `data` (None for an error or a body without one)."""
        return self.body.get("data") if self.ok and isinstance(self.body, dict) else None

    @property
    def message(self) -> str:
        """Why the API refused (its `errors[0].msg`, or the status when it said nothing readable)."""
        if isinstance(self.body, dict):
            errors = self.body.get("errors") or []
            if errors and isinstance(errors[0], dict) and errors[0].get("msg"):
                return str(errors[0]["msg"])
            if isinstance(self.body.get("error"), str):
                return str(self.body["error"])
        return f"the query API answered HTTP {self.status}"


class LocalApi:
    """A client of the query routes that calls them in process through their ASGI app."""

    def __init__(self, routes: Sequence[BaseRoute]) -> None:
        self._client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=Router(list(routes)), raise_app_exceptions=False),
            base_url="http://observatory",
        )

    async def get(self, path: str, params: Params = ()) -> Answer:
        """`GET path?params` answered by the routes (404 when none serves the path)."""
        response = await self._client.get(path, params=list(params), headers={"accept": "application/json"})
        try:
            body = response.json()
        except ValueError:
            body = None
        return Answer(response.status_code, body)
