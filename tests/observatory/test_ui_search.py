"""The search page over a real DuckDB store: the form, results, scatter plot and bad parameters."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pytest

from boutique.observatory.api.params import ParamError
from boutique.observatory.store.base import TagCondition
from boutique.observatory.store.duckdb_store import DuckDBStore
from boutique.observatory.ui.pages import service_colour
from boutique.observatory.ui.search import condition_text, split_conditions, time_ticks, utc_field
from boutique.observatory.ui.timefmt import ago
from tests.observatory.test_api_jaeger import MS, T0, TRACE_A, TRACE_B, TRACE_C, client

TRACE_D = "1234567890abcdef"  # as the API and the page print the 64-bit trace D
WIDE = {"lookback": "24h"}  # trace D is two hours old; the page's default lookback is one hour


@dataclass
class Page:
    """What a search page shows, read from its HTML."""

    status: int
    text: str
    options: dict[str, list[str]] = field(default_factory=dict)
    selected: dict[str, str] = field(default_factory=dict)
    inputs: dict[str, dict[str, str | None]] = field(default_factory=dict)  # inputs and selects by name
    rows: list[str] = field(default_factory=list)  # trace links of the table, in order
    dots: list[str] = field(default_factory=list)  # trace links of the scatter plot
    error_dots: list[str] = field(default_factory=list)
    titles: list[str] = field(default_factory=list)  # the dots' tooltips
    alert: str = ""


class _Reader(HTMLParser):
    """Collects the form's controls, the table's trace links and the scatter plot's dots."""

    def __init__(self, page: Page) -> None:
        """Read into `page`."""
        super().__init__()
        self.page = page
        self.select = ""
        self.option: str | None = None
        self.in_svg = False
        self.dot = ""
        self.in_title = False
        self.in_alert = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        """Note controls, options, trace links and dots as they open."""
        a = dict(attrs)
        if tag == "select":
            self.select = a["name"] or ""
            self.page.inputs[self.select] = a
            self.page.options[self.select] = []
        elif tag == "option":
            self.page.options[self.select].append(a["value"] or "")
            if "selected" in a:
                self.page.selected[self.select] = a["value"] or ""
        elif tag == "input":
            self.page.inputs[a["name"] or ""] = a
        elif tag == "svg":
            self.in_svg = True
        elif tag == "a" and self.in_svg:
            self.dot = a["href"] or ""
            self.page.dots.append(self.dot)
        elif tag == "title" and self.in_svg:
            self.in_title = True
        elif tag == "circle" and self.dot and "error" in (a.get("class") or ""):
            self.page.error_dots.append(self.dot)
        elif tag == "a" and "trace-link" in (a.get("class") or ""):
            self.page.rows.append(a["href"] or "")
        elif a.get("role") == "alert":
            self.in_alert = True

    def handle_endtag(self, tag: str) -> None:
        """Leave the plot, a dot, a tooltip or the alert."""
        if tag == "svg":
            self.in_svg = False
        elif tag == "a":
            self.dot = ""
        elif tag == "title":
            self.in_title = False
        elif tag == "p":
            self.in_alert = False

    def handle_data(self, data: str) -> None:
        """Keep the dots' tooltips and the alert's text."""
        if self.in_title:
            self.page.titles.append(data)
        if self.in_alert:
            self.page.alert += data


def read(response: httpx.Response) -> Page:
    """The page in a response."""
    page = Page(response.status_code, response.text)
    _Reader(page).feed(response.text)
    page.alert = " ".join(page.alert.split())
    return page


def links(*trace_ids: str) -> list[str]:
    """The trace page links of these traces."""
    return [f"/trace/{trace_id}" for trace_id in trace_ids]


async def search(http: httpx.AsyncClient, params: Any = None) -> Page:
    """Open the search page with these parameters."""
    return read(await http.get("/search", params=params))


# ---- the form ----------------------------------------------------------------------------------


async def test_form_lists_services_and_defaults(http: httpx.AsyncClient) -> None:
    """The form lists the stored services and shows the defaults."""
    page = await search(http)
    assert page.status == 200
    assert page.options["service"] == ["", "cart", "checkout", "currency", "frontend", "payment"]
    assert page.selected.get("service") is None
    assert "GET /checkout" in page.options["operation"] and "Charge" in page.options["operation"]
    assert page.selected["lookback"] == "1h"
    assert page.selected["sortBy"] == "start"
    assert page.inputs["limit"]["value"] == "20"
    assert "checked" not in page.inputs["errors"]
    # The hint names every operator the tags field accepts.
    for operator in ("key=value", "key!=value", "key^=text", "key~=regex"):
        assert operator in page.text
    assert 'aria-current="page" ' in page.text or 'href="/search" aria-current="page"' in page.text
    assert "/static/search.js" in page.text


async def test_operations_follow_the_service(http: httpx.AsyncClient) -> None:
    """The operation dropdown holds the chosen service's operations."""
    page = await search(http, {"service": "cart"})
    assert page.options["operation"] == ["", "AddItem", "GetCart"]
    # An operation given in the URL stays chosen even if the store does not list it for the service.
    page = await search(http, {"service": "cart", "operation": "Nope"})
    assert page.selected["operation"] == "Nope"
    assert page.rows == []


async def test_form_keeps_the_submitted_values(http: httpx.AsyncClient) -> None:
    """After a search every field shows what was submitted."""
    params = {
        "service": "frontend",
        "operation": "POST /cart",
        "conditions": 'http.method=POST "app.note=two words"',
        "minDuration": "10ms",
        "maxDuration": "1s",
        "lookback": "6h",
        "limit": "5",
        "errors": "true",
        "sortBy": "duration",
        "spanKind": "server",
    }
    page = await search(http, params)
    assert page.selected["service"] == "frontend"
    assert page.selected["operation"] == "POST /cart"
    assert page.inputs["conditions"]["value"] == 'http.method=POST "app.note=two words"'
    assert page.inputs["minDuration"]["value"] == "10ms"
    assert page.inputs["maxDuration"]["value"] == "1s"
    assert page.selected["lookback"] == "6h"
    assert page.inputs["limit"]["value"] == "5"
    assert "checked" in page.inputs["errors"]
    assert page.selected["sortBy"] == "duration"
    assert page.inputs["spanKind"] == {"type": "hidden", "name": "spanKind", "value": "server"}


# ---- results -----------------------------------------------------------------------------------


async def test_search_by_service(http: httpx.AsyncClient) -> None:
    """A search by service (and operation) finds its traces and no others."""
    page = await search(http, {"service": "payment", **WIDE})
    assert page.status == 200
    assert page.rows == links(TRACE_A)
    page = await search(http, {"service": "cart", **WIDE})
    assert page.rows == links(TRACE_C, TRACE_B, TRACE_D)
    page = await search(http, {"service": "frontend", "operation": "GET /cart", **WIDE})
    assert page.rows == links(TRACE_B, TRACE_D)


async def test_search_without_service(http: httpx.AsyncClient) -> None:
    """Without a service every service is searched, over the last hour by default."""
    assert (await search(http)).rows == links(TRACE_C, TRACE_B, TRACE_A)  # the last hour
    assert (await search(http, WIDE)).rows == links(TRACE_C, TRACE_B, TRACE_A, TRACE_D)
    assert (await search(http, {"operation": "Charge"})).rows == links(TRACE_A)
    assert (await search(http, {"service": "", "operation": "", "conditions": "", **WIDE})).rows == links(
        TRACE_C, TRACE_B, TRACE_A, TRACE_D
    )


async def test_row_shows_root_counts_and_services(http: httpx.AsyncClient) -> None:
    """A row shows the root, span and error counts, duration, start and services."""
    page = await search(http, {"service": "payment"})
    assert "<strong>frontend</strong>: GET /checkout" in page.text
    assert '<span class="badge error">2</span>' in page.text  # payment/Charge and Charge failed
    assert "<td>8</td>" in page.text
    assert '<td class="mono">50ms</td>' in page.text
    for service in ("frontend", "checkout", "payment", "currency"):
        swatch = (
            f'<span class="swatch" data-service="{service}" style="background: {service_colour(service)}">'
        )
        assert f"{swatch}</span>{service}</span>" in page.text  # coloured on the server, as in the browser
    minutes = [
        int(m) for m in re.findall(r"(\d+)m ago", page.text)
    ]  # the data set dates from collection time
    assert minutes and all(10 <= m < 60 for m in minutes)
    assert f'datetime="{utc_field(T0)}Z"' in page.text


async def test_tag_conditions(http: httpx.AsyncClient) -> None:
    """Tag conditions with every operator filter, in the field's syntax and the API's."""

    async def found(conditions: str) -> list[str]:
        """The trace links the page finds for these tag conditions."""
        return (await search(http, {"conditions": conditions, **WIDE})).rows

    assert await found("http.method=POST") == links(TRACE_C)
    assert await found("http.method!=GET") == links(TRACE_C)
    assert await found("http.url^=https://shop http.status_code=200") == links(TRACE_A)
    assert await found(r"http.url~=\?x=\d") == links(TRACE_A)
    assert await found("http.method~=^G") == links(TRACE_B, TRACE_A, TRACE_D)
    assert await found("error=true") == links(TRACE_C, TRACE_A)
    assert await found("http.method=POST http.status_code=200") == []
    # A repeated tagQuery (the API's form) works on the page too and shows up in the tags field.
    page = await search(http, [("tagQuery", "http.method=GET"), ("tagQuery", "http.status_code=200")])
    assert page.rows == links(TRACE_B, TRACE_A)
    assert page.inputs["conditions"]["value"] == "http.method=GET http.status_code=200"
    page = await search(http, {"tags": '{"http.method": "POST"}'})
    assert page.rows == links(TRACE_C)
    assert page.inputs["conditions"]["value"] == "http.method=POST"


async def test_errors_only_and_durations(http: httpx.AsyncClient) -> None:
    """Errors only, min/max duration and sorting by duration."""
    assert (await search(http, {"errors": "true", **WIDE})).rows == links(TRACE_C, TRACE_A)
    assert (await search(http, {"minDuration": "45ms", **WIDE})).rows == links(TRACE_C, TRACE_A)
    assert (await search(http, {"minDuration": "100ms"})).rows == links(TRACE_C)
    assert (await search(http, {"maxDuration": "10ms", "service": "cart", **WIDE})).rows == links(
        TRACE_B, TRACE_D
    )
    assert (await search(http, {"sortBy": "duration", **WIDE})).rows == links(
        TRACE_C, TRACE_A, TRACE_B, TRACE_D
    )
    assert (await search(http, {"errors": "true", "service": "payment", "minDuration": "1s"})).rows == []


async def test_time_window_and_limit(http: httpx.AsyncClient) -> None:
    """From/To (or the API's start/end) bound the search; the limit caps it."""
    half = ".500"  # date-time fields may carry a fraction of a second
    page = await search(http, {"from": utc_field(T0) + half, "lookback": "custom"})
    assert page.rows == links(TRACE_C, TRACE_B)
    assert page.inputs["from"]["value"] == utc_field(T0) + half
    page = await search(http, {"to": utc_field(T0 + 1000 * MS) + half, "lookback": "custom"})
    assert page.rows == links(TRACE_B, TRACE_A, TRACE_D)
    # Without "custom" the lookback counts back from To.
    page = await search(http, {"to": utc_field(T0 + 1000 * MS) + half, "lookback": "1h"})
    assert page.rows == links(TRACE_B, TRACE_A)
    # The API's start/end in µs work too, and show in the date-time fields.
    page = await search(http, {"start": str(T0 + 500 * MS), "end": str(T0 + 1500 * MS)})
    assert page.rows == links(TRACE_B)
    assert page.inputs["from"]["value"] == utc_field(T0)
    assert page.selected["lookback"] == "custom"
    page = await search(http, {"limit": "2", **WIDE})
    assert page.rows == links(TRACE_C, TRACE_B)
    assert "raise it to see more" in page.text


async def test_page_and_api_agree(http: httpx.AsyncClient) -> None:
    """The page finds what `GET /api/traces` finds for the same parameters."""
    cases: list[dict[str, str]] = [
        {"service": "frontend", "lookback": "24h"},
        {"operation": "GetCart", "lookback": "6h", "sortBy": "duration"},
        {"tagQuery": "http.url^=https", "errors": "true", "lookback": "1h"},
        {"minDuration": "5ms", "maxDuration": "60ms", "lookback": "24h", "limit": "3"},
    ]
    for params in cases:
        api = (await http.get("/api/traces", params=params)).json()["data"]
        page = await search(http, params)
        assert page.rows == links(*(trace["traceID"] for trace in api)), params


async def test_empty_result_is_friendly(http: httpx.AsyncClient) -> None:
    """No result is a message, not an empty table."""
    page = await search(http, {"service": "nobody"})
    assert page.status == 200
    assert page.rows == [] and page.dots == []
    assert "0 traces" in page.text
    assert "No traces match these conditions" in page.text


async def test_empty_store(tmp_path: Path) -> None:
    """The page works before any span arrives."""
    store = DuckDBStore(tmp_path / "empty.duckdb")
    try:
        async with client(store) as http:
            page = await search(http)
    finally:
        store.close()
    assert page.status == 200
    assert page.options["service"] == [""]
    assert "No traces match" in page.text


# ---- the scatter plot --------------------------------------------------------------------------


async def test_scatter_has_one_linked_dot_per_trace(http: httpx.AsyncClient) -> None:
    """The scatter plot has one dot per trace, linked, red for errors, with axes."""
    page = await search(http, WIDE)
    assert sorted(page.dots) == sorted(page.rows) == sorted(links(TRACE_A, TRACE_B, TRACE_C, TRACE_D))
    assert sorted(page.error_dots) == sorted(links(TRACE_A, TRACE_C))
    assert len(page.titles) == 4
    assert any(title.startswith("frontend: POST /cart — 120ms, 2 errors") for title in page.titles)
    # Labelled axes: durations up to the longest trace and clock times.
    assert ">0</text>" in page.text and ">150ms</text>" in page.text
    page = await search(http, {"service": "payment"})
    assert page.dots == links(TRACE_A)


# ---- bad parameters ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "field_name", "words"),
    [
        ({"minDuration": "abc"}, "minDuration", ["Min duration", "not a duration", "'abc'"]),
        ({"conditions": "http.url~=(oops"}, "conditions", ["Tags", "invalid regular expression"]),
        ({"conditions": "justakey"}, "conditions", ["Tags", "expected key=value"]),
        ({"conditions": '"unclosed=x'}, "conditions", ["Tags", "No closing quotation"]),
        ({"minDuration": "2s", "maxDuration": "1s"}, "maxDuration", ["Max duration", "less than"]),
        ({"limit": "-1"}, "limit", ["Limit", "at least 0"]),
        ({"lookback": "forever"}, "lookback", ["Lookback", "not a duration"]),
        ({"from": "yesterday"}, "from", ["From", "RFC 3339"]),
        ({"sortBy": "random"}, "sortBy", ["Sort", "start or duration"]),
        ({"errors": "maybe"}, "errors", ["Errors only", "true or false"]),
    ],
)
async def test_bad_parameters_keep_the_form(
    http: httpx.AsyncClient, params: dict[str, str], field_name: str, words: list[str]
) -> None:
    """A bad parameter is a 400 with the form as submitted and the message by it."""
    page = await search(http, {"service": "cart", **params})
    assert page.status == 400
    for word in words:
        assert word in page.alert, page.alert
    assert page.selected["service"] == "cart"  # the form stays, as submitted
    assert page.options["service"][1:] == ["cart", "checkout", "currency", "frontend", "payment"]
    assert page.inputs[field_name]["aria-invalid"] == "true"
    assert page.inputs[field_name]["aria-describedby"] == "search-error"
    assert page.text.count('aria-invalid="true"') == 1
    assert page.rows == [] and "Traceback" not in page.text
    if field_name in ("minDuration", "conditions"):
        assert page.inputs[field_name]["value"] == params[field_name]


# ---- helpers -----------------------------------------------------------------------------------


def test_split_conditions_keeps_regexes_and_quoted_values() -> None:
    """The tags field splits at spaces, honours quotes, keeps backslashes."""
    assert split_conditions(r"http.status_code=500  error=true rpc.method^=Get app.user~=^gold\d") == [
        "http.status_code=500",
        "error=true",
        "rpc.method^=Get",
        r"app.user~=^gold\d",
    ]
    assert split_conditions("\"app.note=two words\" x='a b'") == ["app.note=two words", "x=a b"]
    with pytest.raises(ParamError):
        split_conditions('x="open')


def test_condition_text_round_trips() -> None:
    """A condition written back into the field parses to the same condition."""
    for condition in (
        TagCondition("a", "=", "1"),
        TagCondition("a", "!=", "x"),
        TagCondition("a", "prefix", "Get"),
        TagCondition("a", "regex", r"^g\d+"),
        TagCondition("note", "=", "two 'quoted' words"),
    ):
        (term,) = split_conditions(condition_text(condition))
        op = {"=": "=", "!=": "!=", "prefix": "^=", "regex": "~="}[condition.op]
        assert term == f"{condition.key}{op}{condition.value}"
    assert condition_text(TagCondition("a", "regex", r"^g\d")) == r"a~=^g\d"  # bare unless it must be quoted


def test_ago() -> None:
    """Relative start times."""
    assert ago(-5) == "just now"
    assert ago(400_000) == "just now"
    assert ago(42_000_000) == "42s ago"
    assert ago(185_000_000) == "3m ago"
    assert ago(5 * 3600_000_000 + 1) == "5h ago"
    assert ago(3 * 86_400_000_000) == "3d ago"


def test_time_ticks_are_round_and_inside() -> None:
    """Time ticks fall on round times inside the range."""
    low = 1_700_000_003_000_000
    ticks = time_ticks(low, low + 50_000_000)
    assert 3 <= len(ticks) <= 7
    assert all(low <= at <= low + 50_000_000 and at % 10_000_000 == 0 for at, _ in ticks)
    assert all(len(label) == 8 for _, label in ticks)  # HH:MM:SS
    ticks = time_ticks(low, low + 3 * 86_400_000_000)
    assert 2 <= len(ticks) <= 7 and all(at % 86_400_000_000 == 0 for at, _ in ticks)
