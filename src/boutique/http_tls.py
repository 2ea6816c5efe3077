"""Certificate checks of our HTTP clients, loaded only by a client that may open a TLS connection.

httpx makes a client's TLS context when the client is made, and with certificate checks on (its default)
that reads the whole CA bundle, 20-60 ms per client, even when the client will only ever speak plain
HTTP, as the clients of the registry and of status endpoints on loopback do.
"""

from __future__ import annotations

from urllib.parse import urlsplit


def verify_for(*urls: str) -> bool:
    """httpx's `verify` for a client that requests only `urls` (its base URL, or each of its endpoints).

    False when every one is plain http: no certificate is ever presented, so none is checked and no CA
    bundle is needed. True (httpx's checks, unchanged) as soon as one is https, or when none is known.
    A client given False must not follow redirects to URLs other than these.
    """
    return not urls or any(urlsplit(url).scheme.lower() != "http" for url in urls)
