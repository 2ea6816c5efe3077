"""How a shopper recognises a request the shop shed because it was overloaded (free of Locust imports)."""

from __future__ import annotations

from collections.abc import Mapping

from boutique.mesh import errors

SHED = "SHED"  # the request type shed answers are counted under, apart from successes and failures
SHED_MARKER = errors.SHED  # header the frontend's concurrency limiter puts on a shed answer
MAX_RETRY_AFTER = 30.0  # seconds; a longer Retry-After is capped


def retry_after(status: int, headers: Mapping[str, str]) -> float | None:
    """Seconds to wait when the answer is a shed (503 with Retry-After or the shed marker), else None.

    A plain 503 (a dependency down, say) is an ordinary failure. A Retry-After that is not a number of
    seconds (an HTTP date) counts as one second.
    """
    if status != 503:
        return None
    value = (headers.get("retry-after") or "").strip()
    if not value and not headers.get(SHED_MARKER):
        return None
    try:
        return min(MAX_RETRY_AFTER, max(0.0, float(value)))
    except ValueError:
        return 1.0
