"""The Flags page and its JSON API: the feature flags of one flag file, read and switched from the browser.

`/flags` is the page. The API, on the same port:

- `GET /api/flags`: every flag (`FlagView.as_json()`), the file's path and whether this process can write it;
- `GET /api/flags/{name}`: one flag;
- `PUT /api/flags/{name}` with `{"variant": "on", "when": {"caller": "frontend"}, "percent": 50}` (`when` and
  `percent` optional): sets the flag, for every evaluation or only those the rule matches;
- `POST /api/flags/reset` with an optional `{"flags": [name, ...]}`: back as shipped (default: every flag);
- `GET /api/flags/history?since=<Unix µs>`: the changes since then, newest last.

Changes go through `boutique.flags.FlagFile`, as `boutique flags set` makes them: checked, atomic, kept as
history with who made them. A request that carries the observatory's token is recorded as `token`,
any other as the local user the observatory runs as. A refused request changes nothing; errors answer
`{"error": "why"}`.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from boutique.flags import Change, FlagFile, FlagFileError, FlagView, local_user
from boutique.observatory.receivers.base import Limits
from boutique.observatory.receivers.http import Refused, read_body
from boutique.observatory.ui.pages import render
from boutique.observatory.ui.timefmt import ago, now_us, utc_text

# A flag change is a few hundred bytes; the observatory's own body limit applies when it is lower.
MAX_BODY_BYTES = 64 << 10
BY_TOKEN = "token"
REFRESH_MS = 3000  # how often the page asks for the flags again, so changes made elsewhere show
NOT_CONFIGURED = (
    "This observatory has no flag file: the shop's flags come from elsewhere (a flagd server, or a file "
    "it was not told about). Start it with --flags-file PATH or FLAGD_OFFLINE_FLAG_SOURCE_PATH=PATH "
    "(`boutique up` does this) to see and switch them here."
)
SET_FIELDS = ("variant", "when", "percent")
EXAMPLE_COMMAND = "boutique observatory --flags-file .boutique/flags.json"


class ApiError(Exception):
    """A request answered with an error status and a message that says why; nothing was changed."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class FlagControls:
    """What the Flags page needs: the flag file (None: flags live elsewhere), the token, the body limit."""

    file: Path | None = None
    token: str | None = None
    max_body_bytes: int = MAX_BODY_BYTES

    @property
    def body_limit(self) -> int:
        """The largest request body the flag API reads."""
        return min(self.max_body_bytes, MAX_BODY_BYTES)


def change_json(change: Change) -> dict[str, Any]:
    """A change as the API answers it (time in Unix seconds, and in µs as `timeUs`)."""
    return {**asdict(change), "timeUs": int(change.time * 1_000_000)}


def writable(path: Path) -> bool:
    """Whether this process can change the file: replace it in its folder and append to its history."""
    beside = (path.with_name(path.name + ".history.jsonl"), path.with_name(path.name + ".lock"))
    return os.access(path.parent, os.W_OK) and all(os.access(p, os.W_OK) for p in beside if p.exists())


def is_on_off(view: FlagView) -> bool:
    """Whether the flag reads as a switch (its variants are exactly `on` and `off`)."""
    return set(view.variants) == {"on", "off"}


def rule_text(view: FlagView) -> str:
    """What the flag is set to, as a person reads it: `on`, `on when caller=frontend, 50%`, `off (disabled)`."""
    text = f"{view.variant} when {view.rule}" if view.rule else view.variant
    return text if view.enabled else f"{text} (disabled)"


def by_text(change: Change | None) -> tuple[str, str]:
    """When (how long ago) and by whom a flag last changed, and the UTC time for a tooltip."""
    if change is None:
        return "never changed", ""
    at_us = int(change.time * 1_000_000)
    return f"{ago(now_us() - at_us)} by {change.by}", utc_text(at_us)


# ---- reading requests ---------------------------------------------------------------------------


async def read_json(request: Request, limit: int) -> Any:
    """The request's JSON body (None when it has none); 413 past `limit` bytes, 415 / 400 when not JSON."""
    try:
        raw = await read_body(request, Limits(max_body_bytes=limit), allow_empty=True)
    except Refused as refused:
        raise ApiError(refused.status, refused.message) from None
    if not raw.strip():
        return None
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media != "application/json":
        raise ApiError(415, f"send the body as application/json, not {media or 'no content type'!r}")
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise ApiError(400, f"the body is not valid JSON: {exc}") from None


def parse_set(body: Any) -> tuple[str, dict[str, str] | None, float | None]:
    """The variant, targeting and percentage of a PUT body; 400 with what is wrong."""
    if not isinstance(body, dict):
        raise ApiError(400, 'the body must be a JSON object such as {"variant": "on"}')
    unknown = [key for key in body if key not in SET_FIELDS]
    if unknown:
        raise ApiError(400, f"unknown field {unknown[0]!r} (the fields are {', '.join(SET_FIELDS)})")
    variant = body.get("variant")
    if not isinstance(variant, str) or not variant:
        raise ApiError(400, f'"variant" must be the name of a variant, not {json.dumps(variant)}')
    when = body.get("when")
    if when is not None:
        if not isinstance(when, dict):
            raise ApiError(400, f'"when" must be an object of attribute -> value, not {json.dumps(when)}')
        for key, value in when.items():
            if not key or not isinstance(value, str) or not value:
                raise ApiError(
                    400, f'"when" needs non-empty text values, got {json.dumps(key)}: {json.dumps(value)}'
                )
    percent = body.get("percent")
    if percent is not None:
        if isinstance(percent, bool) or not isinstance(percent, (int, float)):
            raise ApiError(400, f'"percent" must be a number in (0, 100], not {json.dumps(percent)}')
        if not math.isfinite(percent) or not 0 < percent <= 100:
            raise ApiError(400, f'"percent" must be in (0, 100], not {percent}')
    return variant, when or None, None if percent is None else float(percent)


def parse_reset(body: Any) -> list[str] | None:
    """The flags a reset names (None: every flag); 400 with what is wrong."""
    if body is None:
        return None
    if not isinstance(body, dict) or set(body) - {"flags"}:
        raise ApiError(400, 'the body must be empty or a JSON object such as {"flags": ["adFailure"]}')
    names = body.get("flags")
    if names is None:
        return None
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
        raise ApiError(400, f'"flags" must be a list of flag names, not {json.dumps(names)}')
    if not names:
        raise ApiError(400, '"flags" is empty: name at least one flag, or send no body to reset every flag')
    return list(dict.fromkeys(names))


def parse_since(request: Request) -> float:
    """The `since` parameter (Unix µs, default 0) in seconds; 400 when it is not a whole number."""
    text = request.query_params.get("since", "").strip() or "0"
    if not text.isdigit() or len(text) > 17:
        raise ApiError(400, f"since must be Unix microseconds (a whole number), not {text!r}")
    return int(text) / 1_000_000


# ---- the handlers -------------------------------------------------------------------------------


class FlagPages:
    """The Flags page and API over one flag file."""

    def __init__(self, controls: FlagControls) -> None:
        self.controls = controls
        self.file = FlagFile(controls.file) if controls.file else None

    def _file(self) -> FlagFile:
        if self.file is None:
            raise ApiError(404, NOT_CONFIGURED)
        return self.file

    def _writer(self, request: Request) -> str:
        """Who makes this change; a change sent by a page of another site is refused.

        With a token set, the server lets no request reach a page or API without it (`BearerAuth`: the
        header, or the cookie of the sign-in page), so every change here was made with the token.
        """
        origin = request.headers.get("origin")
        if origin and urlsplit(origin).netloc != request.headers.get("host"):
            raise ApiError(403, f"a change sent from another site ({origin}) is refused")
        return BY_TOKEN if self.controls.token else local_user()

    def _check_writable(self, file: FlagFile) -> None:
        if not writable(file.path):
            raise ApiError(403, f"{file.path} is read-only for the observatory: nothing changed")

    async def _view(self, file: FlagFile, name: str) -> FlagView:
        """One flag; 404 when the file has none of that name."""
        views = await self._views(file)
        found = next((view for view in views if view.name == name), None)
        if found is None:
            raise ApiError(404, f"no flag named {name!r} in {file.path}")
        return found

    @staticmethod
    async def _views(file: FlagFile) -> list[FlagView]:
        try:
            return await run_in_threadpool(file.views)
        except FlagFileError as exc:
            raise ApiError(503, str(exc)) from None

    async def list_flags(self, request: Request) -> Response:
        """`GET /api/flags`: every flag, the file and whether it can be changed from here."""
        file = self._file()
        views = await self._views(file)
        return JSONResponse(
            {
                "file": str(file.path),
                "writable": writable(file.path),
                "flags": [view.as_json() for view in views],
            }
        )

    async def get_flag(self, request: Request) -> Response:
        """`GET /api/flags/{name}`: one flag."""
        return JSONResponse((await self._view(self._file(), request.path_params["name"])).as_json())

    async def set_flag(self, request: Request) -> Response:
        """`PUT /api/flags/{name}`: set a variant, for every evaluation or those the rule matches."""
        file = self._file()
        by = self._writer(request)
        body = await read_json(request, self.controls.body_limit)
        name = request.path_params["name"]
        view = await self._view(file, name)
        variant, when, percent = parse_set(body)
        if variant not in view.variants:
            raise ApiError(400, f"{name} has no variant {variant!r} (choose from {', '.join(view.variants)})")
        self._check_writable(file)
        try:
            change = await run_in_threadpool(file.set, name, variant, by, when, percent)
        except FlagFileError as exc:
            raise ApiError(400, str(exc)) from None
        except OSError as exc:  # a full disk, a vanished directory: the rename never happened
            raise ApiError(
                507, f"could not write {file.path} ({exc.strerror or exc}); nothing changed"
            ) from None
        return JSONResponse({"change": change_json(change), "flag": (await self._view(file, name)).as_json()})

    async def reset(self, request: Request) -> Response:
        """`POST /api/flags/reset`: the named flags (default: all) back as shipped."""
        file = self._file()
        by = self._writer(request)
        names = parse_reset(await read_json(request, self.controls.body_limit))
        views = await self._views(file)
        known = {view.name for view in views}
        missing = [name for name in names or () if name not in known]
        if missing:
            raise ApiError(404, f"no flag named {missing[0]!r} in {file.path}: nothing reset")
        self._check_writable(file)
        try:
            changes = await run_in_threadpool(file.reset, by, names)
        except FlagFileError as exc:
            raise ApiError(400, str(exc)) from None
        except OSError as exc:
            raise ApiError(
                507, f"could not write {file.path} ({exc.strerror or exc}); nothing changed"
            ) from None
        views = await self._views(file)
        return JSONResponse(
            {"changes": [change_json(c) for c in changes], "flags": [v.as_json() for v in views]}
        )

    async def history(self, request: Request) -> Response:
        """`GET /api/flags/history?since=µs`: the changes since then, newest last."""
        file = self._file()
        since = parse_since(request)
        changes = await run_in_threadpool(file.history, since)
        return JSONResponse({"file": str(file.path), "changes": [change_json(c) for c in changes]})

    async def page(self, request: Request) -> Response:
        """`/flags`: every flag with its description, setting, last change and the controls to switch it."""
        context: dict[str, Any] = {
            "configured": self.file is not None,
            "explanation": NOT_CONFIGURED,
            "example_command": EXAMPLE_COMMAND,
            "file": str(self.file.path) if self.file else "",
            "writable": False,
            "rows": [],
            "error": None,
            "refresh_ms": REFRESH_MS,
        }
        if self.file is None:
            return render(request, "flags.html", "flags", context)
        context["writable"] = writable(self.file.path)
        try:
            views = await self._views(self.file)
        except ApiError as exc:
            context["error"] = exc.message
            return render(request, "flags.html", "flags", context, status=exc.status)
        context["rows"] = [row(view) for view in views]
        return render(request, "flags.html", "flags", context)


def row(view: FlagView) -> dict[str, Any]:
    """What the page shows of one flag."""
    changed, changed_utc = by_text(view.last_change)
    return {
        "name": view.name,
        "description": view.description,
        "variants": list(view.variants),
        "variant": view.variant,
        "default_variant": view.default_variant,
        "setting": rule_text(view),
        "is_default": view.is_default,
        "on_off": is_on_off(view),
        "changed": changed,
        "changed_utc": changed_utc,
    }


Handler = Callable[[Request], Awaitable[Response]]


def _guarded(handler: Handler) -> Handler:
    """The handler, answering an `ApiError` as `{"error": message}` with its status."""

    async def answer(request: Request) -> Response:
        try:
            return await handler(request)
        except ApiError as exc:
            return JSONResponse({"error": exc.message}, status_code=exc.status)

    answer.__doc__ = handler.__doc__
    return answer


def routes(controls: FlagControls | None = None) -> list[BaseRoute]:
    """The Flags page and its JSON API."""
    pages = FlagPages(controls or FlagControls())
    return [
        Route("/flags", pages.page),
        Route("/api/flags", _guarded(pages.list_flags)),
        Route("/api/flags/history", _guarded(pages.history)),
        Route("/api/flags/reset", _guarded(pages.reset), methods=["POST"]),
        Route("/api/flags/{name}", _guarded(pages.get_flag), methods=["GET"]),
        Route("/api/flags/{name}", _guarded(pages.set_flag), methods=["PUT"]),
    ]
