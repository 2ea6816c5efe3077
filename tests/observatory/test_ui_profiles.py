"""The Profiles page on the server: how its form becomes `/api/profiles…` parameters, its windows and
comparisons, a span's profile, its errors, and the links to it. The flame graph itself is drawn in the
browser: test_ui_profiles_browser."""

from __future__ import annotations

import html
import re
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import parse_qsl

import httpx
import pytest
from starlette.datastructures import QueryParams

from boutique.observatory.profiles.model import ProfileBatch, frame_label
from boutique.observatory.ui.logs import FormError
from boutique.observatory.ui.profiles import api_params, form_values, window_of
from boutique.observatory.ui.search import utc_field
from boutique.observatory.ui.timefmt import LOOKBACKS
from tests.observatory.profile_builders import BatchRow, profile_batch
from tests.observatory.test_api_jaeger import T0, TRACE_A, build_store, client

NOW = T0 + 3_600_000_000
SPAN = "a300000000000003"  # checkout PlaceOrder in trace A


def profile(params: dict[str, str]) -> tuple[list[tuple[str, str]], tuple[int, int] | None]:
    """The API parameters the page makes of its own, and the base window to compare with."""
    query = QueryParams(params)
    form = form_values(query)
    window = window_of(form, query, NOW)
    return api_params(form, window), window.base


def test_filters_and_windows() -> None:
    hour = LOOKBACKS["1h"]
    assert profile({"service": "cart"}) == (
        [("service", "cart"), ("type", "cpu"), ("start", str(NOW - hour)), ("end", str(NOW))],
        None,
    )
    items, _ = profile(
        {"service": "cart", "instance": "cart-2", "type": "wall", "granularity": "line", "lookback": "15m"}
    )
    assert items == [
        ("service", "cart"),
        ("instance", "cart-2"),
        ("type", "wall"),
        ("granularity", "line"),
        ("start", str(NOW - LOOKBACKS["15m"])),
        ("end", str(NOW)),
    ]
    # From/To in UTC, or start/end in µs as the API takes them.
    items, _ = profile({"service": "cart", "from": utc_field(T0), "to": utc_field(T0 + 60_000_000)})
    assert items[-2:] == [("start", str(T0)), ("end", str(T0 + 60_000_000))]
    items, _ = profile({"service": "cart", "start": "5", "end": "9"})
    assert items[-2:] == [("start", "5"), ("end", "9")]


def test_comparisons() -> None:
    hour = LOOKBACKS["1h"]
    # The window before, as long.
    assert profile({"service": "cart", "compare": "previous"})[1] == (NOW - 2 * hour, NOW - hour)
    # Another window: both bounds, or one and the compared window's length.
    base_from, base_to = utc_field(T0 - 7_200_000_000), utc_field(T0 - 3_600_000_000)
    custom = {"service": "cart", "compare": "custom", "baseFrom": base_from, "baseTo": base_to}
    assert profile(custom)[1] == (T0 - 7_200_000_000, T0 - 3_600_000_000)
    assert profile({"service": "cart", "baseFrom": base_from})[1] == (
        T0 - 7_200_000_000,
        T0 - 7_200_000_000 + hour,
    )
    assert profile({"service": "cart", "baseStart": "100", "baseEnd": "200"})[1] == (100, 200)


def test_a_spans_profile_is_at_the_spans_own_time() -> None:
    items, base = profile({"traceID": TRACE_A.upper(), "spanID": SPAN, "compare": "previous"})
    assert items == [("type", "cpu"), ("traceID", TRACE_A), ("spanID", SPAN)]  # no time: the span's
    assert base is None  # a span is not compared with a window
    items, _ = profile({"traceID": TRACE_A, "spanID": SPAN, "lookback": "5m"})
    assert items[-2:] == [("start", str(NOW - LOOKBACKS["5m"])), ("end", str(NOW))]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"lookback": "3h"}, "lookback"),
        ({"lookback": "custom"}, "from"),
        ({"from": "yesterday"}, "from"),
        ({"start": "soon"}, "from"),
        ({"from": utc_field(T0), "to": utc_field(T0 - 1_000_000)}, "to"),
        ({"type": "cpu time!"}, "type"),
        ({"granularity": "module"}, "granularity"),
        ({"traceID": "xyz", "spanID": "1"}, "traceID"),
        ({"traceID": TRACE_A, "spanID": "12345678901234567"}, "spanID"),
        ({"spanID": SPAN}, "traceID"),
        ({"compare": "yesterday"}, "compare"),
        ({"compare": "custom"}, "baseFrom"),
        ({"compare": "custom", "baseFrom": "then"}, "baseFrom"),
        ({"baseStart": "200", "baseEnd": "100"}, "baseTo"),
    ],
)
def test_bad_fields_say_which_and_why(params: dict[str, str], field: str) -> None:
    with pytest.raises(FormError) as caught:
        profile({"service": "cart", **params})
    assert caught.value.field == field and caught.value.reason


# ---- the page, over a store holding traces and a profile -------------------------------------------


def checkout_profile() -> ProfileBatch:
    """Ten seconds of checkout's samples, most of them in trace A's PlaceOrder span."""
    place = [frame_label("main", "app.py", 1), frame_label("place_order", "checkout/service.py", 30)]
    idle = [frame_label("main", "app.py", 1), frame_label("wait", "threading.py", 320)]
    return profile_batch(
        BatchRow(
            frames,
            seconds * 1_000_000_000,
            T0 + 10 * 1000,
            "checkout",
            "checkout-1",
            type=kind,
            trace_id=bytes.fromhex(trace),
            span_id=bytes.fromhex(span),
        )
        for frames, seconds, trace, span in ((place, 8, TRACE_A, SPAN), (idle, 2, "", ""))
        for kind in ("cpu", "wall")
    )


@pytest.fixture
async def http(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client on the query routes and pages of a store holding traces A to D and the profile."""
    store = build_store(tmp_path)
    store.append(checkout_profile())
    try:
        async with client(store) as http:
            yield http
    finally:
        store.close()


def embedded(page: str, name: str) -> dict[str, str]:
    """A query the page hands its script (`data-query`, `data-base`)."""
    found = re.search(rf'data-{name}="([^"]*)"', page)
    assert found, f"no data-{name} in the page"
    return dict(parse_qsl(html.unescape(found.group(1))))


async def test_page_lists_services_then_shows_one(http: httpx.AsyncClient) -> None:
    answer = await http.get("/profiles")
    assert answer.status_code == 200
    assert '<a href="/profiles" aria-current="page">Profiles</a>' in answer.text
    assert 'href="/profiles?service=checkout"' in answer.text
    assert 'id="profile"' not in answer.text  # nothing to draw before a service is chosen

    answer = await http.get("/profiles", params={"service": "checkout", "compare": "previous", "q": "place"})
    assert answer.status_code == 200
    query = embedded(answer.text, "query")
    assert query["service"] == "checkout" and query["type"] == "cpu"
    start, end = int(query["start"]), int(query["end"])
    assert end - start == LOOKBACKS["1h"]
    assert embedded(answer.text, "base") == {"baseStart": str(start - (end - start)), "baseEnd": str(start)}
    assert 'id="profile-search" type="search" value="place"' in answer.text
    assert '<option value="tasks" title="Where every asyncio task was waiting or running">' in answer.text
    assert '<option value="checkout-1">checkout-1</option>' in answer.text
    pprof = re.search(r'id="profile-pprof" href="([^"]*)"', answer.text)
    assert pprof and html.unescape(pprof.group(1)).startswith(
        "/api/profiles/pprof?service=checkout&type=cpu&"
    )

    # What the page hands its script is what the API answers.
    tree = await http.get("/api/profiles", params=embedded(answer.text, "query") | {"start": str(T0)})
    assert tree.status_code == 200 and tree.json()["data"]["total"] == 10_000_000_000


async def test_span_profile_names_the_span(http: httpx.AsyncClient) -> None:
    answer = await http.get("/profiles", params={"traceID": TRACE_A, "spanID": SPAN, "service": "checkout"})
    assert answer.status_code == 200
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", answer.text))
    assert "Samples taken while span PlaceOrder (checkout, a300000000000003) ran" in text
    assert f'href="/trace/{TRACE_A}?span={SPAN}" id="back-to-trace"' in answer.text
    assert embedded(answer.text, "query") == {
        "service": "checkout",
        "type": "cpu",
        "traceID": TRACE_A,
        "spanID": SPAN,
    }
    tree = await http.get("/api/profiles", params=embedded(answer.text, "query"))
    assert tree.json()["data"]["total"] == 8_000_000_000  # only the samples taken in the span
    # A span the store does not hold: said so, and the page still asks for its samples.
    answer = await http.get("/profiles", params={"traceID": TRACE_A, "spanID": "ffff"})
    assert answer.status_code == 200
    assert "the span itself is not stored" in answer.text and "data-query" in answer.text
    # A whole trace's samples, in any of its spans and services.
    answer = await http.get("/profiles", params={"traceID": TRACE_A})
    assert answer.status_code == 200
    assert f'Samples taken while trace <span class="mono">{TRACE_A}</span> ran' in answer.text
    assert f'href="/trace/{TRACE_A}" id="back-to-trace"' in answer.text
    assert embedded(answer.text, "query") == {"type": "cpu", "traceID": TRACE_A}
    tree = await http.get("/api/profiles", params=embedded(answer.text, "query"))
    assert tree.json()["data"]["total"] == 8_000_000_000


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"lookback": "3h"}, "Lookback: one of 5m, 15m, 1h, 6h, 24h or custom, not &#39;3h&#39;"),
        (
            {"type": "<b>"},
            "Type: a profile type is a short name such as cpu or wall, not &#39;&lt;b&gt;&#39;",
        ),
        ({"traceID": "nothex", "spanID": "1"}, "TraceID: a trace id is 1 to 32 hexadecimal digits"),
        ({"compare": "custom"}, "BaseFrom: give the base window&#39;s From (and To) to compare with"),
    ],
)
async def test_bad_fields_are_explained_not_a_500(
    http: httpx.AsyncClient, params: dict[str, str], message: str
) -> None:
    answer = await http.get("/profiles", params={"service": "checkout", **params})
    assert answer.status_code == 400
    assert "Cannot show the profile." in answer.text and message in answer.text
    assert 'aria-invalid="true"' in answer.text
    assert "data-query" not in answer.text  # nothing is asked for
    assert '<option value="checkout" selected>checkout</option>' in answer.text  # the form is kept


async def test_navigation_and_the_trace_pages_link(http: httpx.AsyncClient) -> None:
    page = (await http.get("/search")).text
    assert '<a href="/profiles">Profiles</a>' in page
    script = (await http.get("/static/trace.js")).text
    assert 'id="span-profile-link" href="/profiles?${query}">Profile of this span</a>' in script
    for asset in ("/static/profiles.js", "/static/profiles.css"):
        assert (await http.get(asset)).status_code == 200
