"""The shopper's cookies: a session id (a UUID) and a display currency, validated on every request."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field

from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

SESSION_COOKIE = "shop_session-id"
CURRENCY_COOKIE = "shop_currency"
CURRENCIES = ("USD", "EUR", "CAD", "JPY", "GBP", "TRY")
DEFAULT_CURRENCY = "USD"
COOKIE_MAX_AGE = 48 * 3600
NO_COOKIE_PATHS = ("/static/", "/_healthz")

_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


@dataclass
class Session:
    """Who is shopping and in which currency, plus the cookies this response must set or expire."""

    id: str
    currency: str = DEFAULT_CURRENCY
    outgoing: dict[str, str | None] = field(default_factory=dict)

    @classmethod
    def from_cookies(cls, cookies: dict[str, str]) -> Session:
        """Trust nothing: a missing or malformed session id or currency is replaced (and re-set)."""
        session = cls(id=valid_session_id(cookies.get(SESSION_COOKIE, "")) or "")
        if not session.id:
            session.id = str(uuid.uuid4())
            session.outgoing[SESSION_COOKIE] = session.id
        currency = cookies.get(CURRENCY_COOKIE)
        if currency in CURRENCIES:
            session.currency = currency
        elif currency is not None:
            session.outgoing[CURRENCY_COOKIE] = DEFAULT_CURRENCY
        return session

    def set_currency(self, code: str) -> None:
        """Switch the display currency; the cookie goes out with this response."""
        self.currency = code
        self.outgoing[CURRENCY_COOKIE] = code

    def end(self) -> None:
        """Log out: expire both cookies."""
        self.outgoing = {SESSION_COOKIE: None, CURRENCY_COOKIE: None}


def valid_session_id(value: str) -> str | None:
    """The session id in canonical lower-case form if it is a UUID, else None."""
    value = value.strip().lower()
    return value if _UUID.match(value) else None


def set_cookie_header(name: str, value: str | None) -> bytes:
    """A Set-Cookie header value: HttpOnly, SameSite=Lax, whole site; None expires the cookie."""
    if value is None:
        return f"{name}=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax".encode("latin-1")
    return f"{name}={value}; Path=/; Max-Age={COOKIE_MAX_AGE}; HttpOnly; SameSite=Lax".encode("latin-1")


def session_of(connection: HTTPConnection) -> Session:
    """The request's session (set by SessionMiddleware); a throwaway default outside of it."""
    session = getattr(connection.state, "session", None)
    return session if isinstance(session, Session) else Session(id=str(uuid.uuid4()))


class SessionMiddleware:
    """Attaches a validated Session to each request and writes the cookies it asks for."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Read the cookies into a Session; set the cookies it asks for on the response."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        session = Session.from_cookies(HTTPConnection(scope).cookies)
        scope.setdefault("state", {})["session"] = session
        quiet = str(scope.get("path", "")).startswith(NO_COOKIE_PATHS)

        async def send_with_cookies(message: Message) -> None:
            """Forward a message, adding Set-Cookie headers to the response start."""
            if message["type"] == "http.response.start" and not quiet and session.outgoing:
                headers = list(message.get("headers", []))
                headers += [(b"set-cookie", set_cookie_header(k, v)) for k, v in session.outgoing.items()]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_cookies)
