"""Bearer tokens: the one check every server here uses to guard its endpoints, and the header to send.

Compared in constant time (`hmac.compare_digest` on bytes), so an answer's timing says nothing about
how much of a guess was right. Free of imports beyond the standard library: the mesh (status
endpoints, registry) and the observatory share it.
"""

from __future__ import annotations

import hmac

SCHEME = "Bearer "


def _raw(value: str | bytes) -> bytes:
    """Bytes to compare: compare_digest refuses text that is not ASCII, and bytes never."""
    return value if isinstance(value, bytes) else value.encode("utf-8", errors="surrogateescape")


def same_token(given: str | bytes | None, token: str) -> bool:
    """Whether `given` (a cookie, a form field) is exactly `token`, compared in constant time."""
    return hmac.compare_digest(_raw(given or b""), _raw(token))


def bearer_matches(authorization: str | bytes | None, token: str) -> bool:
    """Whether an `Authorization` header (or gRPC metadata) value is `Bearer <token>`."""
    return hmac.compare_digest(_raw(authorization or b""), _raw(SCHEME + token))


def bearer_headers(token: str | None) -> dict[str, str]:
    """The `authorization` header that carries `token`; no header without a token."""
    return {"authorization": SCHEME + token} if token else {}
