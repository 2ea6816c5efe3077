"""The Flags page and API over a real flag file, the flag markers on the service charts, and the real
observatory process finding its flag file and guarding changes with its token."""

from __future__ import annotations

import asyncio
import getpass
import json
import os
import re
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from boutique.flags import Change, FlagFile, shipped
from boutique.observatory.api import query_routes
from boutique.observatory.ui import ui_routes
from boutique.observatory.ui.charts import Event, place_markers
from boutique.observatory.ui.flags import MAX_BODY_BYTES, FlagControls
from tests.observatory.process import start_observatory
from tests.observatory.test_api_jaeger import build_store
from tests.observatory.test_ui_services import charts_of

SHIPPED = list(shipped()["flags"])
ME = f"local user {getpass.getuser()}"


@pytest.fixture
def flag_file(tmp_path: Path) -> FlagFile:
    """A flag file seeded as `boutique up` seeds it."""
    file = FlagFile(tmp_path / "flags" / "flags.json")
    file.seed()
    return file


async def ui_client(tmp_path: Path, **pages: Any) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the query API and UI over the test store; `pages` go to `ui_routes`."""
    store = build_store(tmp_path)
    app = Starlette(routes=[*query_routes(store), *ui_routes(store, **pages)])
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://observatory") as http:
            yield http
    finally:
        store.close()


@pytest.fixture
async def http(tmp_path: Path, flag_file: FlagFile) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the query port's routes, the Flags page over `flag_file`."""
    async for client in ui_client(tmp_path, flag_controls=FlagControls(flag_file.path)):
        yield client


@pytest.fixture
async def unconfigured(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """A client of an observatory that knows no flag file."""
    async for client in ui_client(tmp_path, flag_controls=FlagControls()):
        yield client


def put(http: httpx.AsyncClient, name: str, body: Any) -> Any:
    """PUT /api/flags/{name} with a JSON body."""
    return http.put(f"/api/flags/{name}", json=body)


# ---- reading --------------------------------------------------------------------------------------


async def test_list_every_flag(http: httpx.AsyncClient, flag_file: FlagFile) -> None:
    answer = await http.get("/api/flags")
    assert answer.status_code == 200
    body = answer.json()
    assert body["file"] == str(flag_file.path) and body["writable"] is True
    assert [flag["name"] for flag in body["flags"]] == SHIPPED
    assert body["flags"] == [view.as_json() for view in flag_file.views()]
    ad = next(flag for flag in body["flags"] if flag["name"] == "adFailure")
    assert ad["variant"] == "off" and ad["isDefault"] and ad["lastChange"] is None
    assert ad["variants"] == {"off": False, "on": True} and ad["description"]


async def test_get_one_flag(http: httpx.AsyncClient, flag_file: FlagFile) -> None:
    answer = await http.get("/api/flags/cartFailure")
    assert answer.status_code == 200 and answer.json() == flag_file.view("cartFailure").as_json()
    missing = await http.get("/api/flags/noSuchFlag")
    assert missing.status_code == 404 and "no flag named 'noSuchFlag'" in missing.json()["error"]


# ---- changing -------------------------------------------------------------------------------------


async def test_set_a_variant(http: httpx.AsyncClient, flag_file: FlagFile) -> None:
    answer = await put(http, "adFailure", {"variant": "on"})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["flag"]["variant"] == "on" and not body["flag"]["isDefault"]
    change = body["change"]
    assert (change["flag"], change["variant"], change["previous"], change["by"]) == (
        "adFailure",
        "on",
        "off",
        ME,
    )
    assert change["timeUs"] == int(change["time"] * 1_000_000)
    assert flag_file.read()["flags"]["adFailure"]["defaultVariant"] == "on"  # what every process reads
    listed = (await http.get("/api/flags/adFailure")).json()
    assert listed["lastChange"]["by"] == ME and listed["variant"] == "on"


async def test_set_with_a_rule(http: httpx.AsyncClient, flag_file: FlagFile) -> None:
    body = {"variant": "delay500ms", "when": {"caller": "frontend", "callee": "cart"}, "percent": 50}
    answer = await put(http, "meshCallFault", body)
    assert answer.status_code == 200, answer.text
    flag = answer.json()["flag"]
    assert flag["variant"] == "delay500ms" and flag["rule"] == "callee=cart, caller=frontend, 50%"
    written = flag_file.read()["flags"]["meshCallFault"]
    assert written["defaultVariant"] == "off"  # only what the rule matches is delayed
    assert "fractional" in json.dumps(written["targeting"])
    # Without a rule the flag applies to every evaluation again.
    answer = await put(http, "meshCallFault", {"variant": "abortInternal", "when": None, "percent": None})
    assert answer.json()["flag"]["rule"] == "" and flag_file.view("meshCallFault").variant == "abortInternal"


async def test_reset_some_then_all(http: httpx.AsyncClient, flag_file: FlagFile) -> None:
    for name, variant in (("adFailure", "on"), ("cartFailure", "50%"), ("imageSlowLoad", "5sec")):
        assert (await put(http, name, {"variant": variant})).status_code == 200
    answer = await http.post("/api/flags/reset", json={"flags": ["cartFailure"]})
    assert answer.status_code == 200, answer.text
    assert [(c["flag"], c["previous"], c["variant"], c["by"]) for c in answer.json()["changes"]] == [
        ("cartFailure", "50%", "off", ME)
    ]
    assert {f["name"] for f in answer.json()["flags"] if not f["isDefault"]} == {"adFailure", "imageSlowLoad"}
    answer = await http.post("/api/flags/reset")  # no body: every flag
    assert answer.status_code == 200
    assert sorted(c["flag"] for c in answer.json()["changes"]) == ["adFailure", "imageSlowLoad"]
    assert all(view.is_default for view in flag_file.views())
    again = await http.post("/api/flags/reset", json={})
    assert again.status_code == 200 and again.json()["changes"] == []


async def test_history_since(http: httpx.AsyncClient, flag_file: FlagFile) -> None:
    await put(http, "adFailure", {"variant": "on"})
    middle_us = time.time_ns() // 1000
    await asyncio.sleep(0.002)
    await put(http, "paymentFailure", {"variant": "10%"})
    await put(http, "adFailure", {"variant": "off"})
    every = (await http.get("/api/flags/history")).json()["changes"]
    assert [(c["flag"], c["variant"]) for c in every] == [
        ("adFailure", "on"),
        ("paymentFailure", "10%"),
        ("adFailure", "off"),
    ]  # newest last
    later = (await http.get("/api/flags/history", params={"since": middle_us})).json()["changes"]
    assert [(c["flag"], c["variant"]) for c in later] == [("paymentFailure", "10%"), ("adFailure", "off")]
    assert all(c["timeUs"] >= middle_us for c in later)


# ---- bad input: an answer that says why, and nothing changed -------------------------------------

BAD_REQUESTS = [
    # (method, path, request arguments, status, words in the error)
    ("PUT", "/api/flags/noSuchFlag", {"json": {"variant": "on"}}, 404, "no flag named 'noSuchFlag'"),
    ("PUT", "/api/flags/adFailure", {"json": {"variant": "maybe"}}, 400, "no variant 'maybe'"),
    ("PUT", "/api/flags/adFailure", {"json": {"variant": "on", "percent": 0}}, 400, "(0, 100]"),
    ("PUT", "/api/flags/adFailure", {"json": {"variant": "on", "percent": 100.5}}, 400, "(0, 100]"),
    ("PUT", "/api/flags/adFailure", {"json": {"variant": "on", "percent": -5}}, 400, "(0, 100]"),
    ("PUT", "/api/flags/adFailure", {"json": {"variant": "on", "percent": "50"}}, 400, '"percent" must be'),
    ("PUT", "/api/flags/adFailure", {"json": {"variant": "on", "percent": True}}, 400, '"percent" must be'),
    (
        "PUT",
        "/api/flags/adFailure",
        {"content": b'{"variant": "on", "percent": NaN}', "headers": {"content-type": "application/json"}},
        400,
        "(0, 100]",
    ),
    ("PUT", "/api/flags/adFailure", {"json": {"variant": True}}, 400, '"variant" must be'),
    ("PUT", "/api/flags/adFailure", {"json": {"percent": 10}}, 400, '"variant" must be'),
    ("PUT", "/api/flags/adFailure", {"json": ["on"]}, 400, "must be a JSON object"),
    ("PUT", "/api/flags/adFailure", {"json": "on"}, 400, "must be a JSON object"),
    ("PUT", "/api/flags/adFailure", {}, 400, "must be a JSON object"),
    (
        "PUT",
        "/api/flags/adFailure",
        {"json": {"variant": "on", "colour": "red"}},
        400,
        "unknown field 'colour'",
    ),
    ("PUT", "/api/flags/adFailure", {"json": {"variant": "on", "when": "frontend"}}, 400, '"when" must be'),
    ("PUT", "/api/flags/adFailure", {"json": {"variant": "on", "when": {"caller": 3}}}, 400, '"when" needs'),
    ("PUT", "/api/flags/adFailure", {"json": {"variant": "on", "when": {"caller": ""}}}, 400, '"when" needs'),
    (
        "PUT",
        "/api/flags/adFailure",
        {"content": b'{"variant": "on"', "headers": {"content-type": "application/json"}},
        400,
        "not valid JSON",
    ),
    (
        "PUT",
        "/api/flags/adFailure",
        {"content": b'{"variant": "\xff"}', "headers": {"content-type": "application/json"}},
        400,
        "not valid JSON",
    ),
    (
        "PUT",
        "/api/flags/adFailure",
        {"content": b'{"variant": "on"}', "headers": {"content-type": "text/plain"}},
        415,
        "application/json",
    ),
    (
        "PUT",
        "/api/flags/adFailure",
        {"json": {"variant": "on", "pad": "x" * MAX_BODY_BYTES}},
        413,
        f"larger than {MAX_BODY_BYTES} bytes",
    ),
    (
        "PUT",
        "/api/flags/adFailure",
        {"json": {"variant": "on"}, "headers": {"origin": "http://evil.example"}},
        403,
        "another site",
    ),
    ("POST", "/api/flags/reset", {"json": {"flags": ["adFailure", "noSuchFlag"]}}, 404, "'noSuchFlag'"),
    ("POST", "/api/flags/reset", {"json": {"flags": []}}, 400, "name at least one flag"),
    ("POST", "/api/flags/reset", {"json": {"flags": "adFailure"}}, 400, '"flags" must be a list'),
    ("POST", "/api/flags/reset", {"json": {"flags": [1]}}, 400, '"flags" must be a list'),
    ("POST", "/api/flags/reset", {"json": ["adFailure"]}, 400, "must be empty or a JSON object"),
    ("POST", "/api/flags/reset", {"json": {"flag": ["adFailure"]}}, 400, "must be empty or a JSON object"),
    (
        "POST",
        "/api/flags/reset",
        {"content": b"{", "headers": {"content-type": "application/json"}},
        400,
        "not valid JSON",
    ),
    ("POST", "/api/flags/reset", {"headers": {"origin": "null"}}, 403, "another site"),
    ("GET", "/api/flags/history", {"params": {"since": "yesterday"}}, 400, "Unix microseconds"),
    ("GET", "/api/flags/history", {"params": {"since": "-1"}}, 400, "Unix microseconds"),
]


@pytest.mark.parametrize(
    ("method", "path", "arguments", "status", "words"),
    BAD_REQUESTS,
    ids=[f"{m} {p.rsplit('/', 1)[-1]} {s} {w[:24]}" for m, p, _, s, w in BAD_REQUESTS],
)
async def test_bad_requests_change_nothing(
    http: httpx.AsyncClient,
    flag_file: FlagFile,
    method: str,
    path: str,
    arguments: dict[str, Any],
    status: int,
    words: str,
) -> None:
    await put(http, "cartFailure", {"variant": "25%"})  # something a wrong reset would undo
    before = (flag_file.path.read_bytes(), flag_file.history_path.read_bytes())
    answer = await http.request(method, path, **arguments)
    assert answer.status_code == status, answer.text
    assert words in answer.json()["error"], answer.json()
    assert (flag_file.path.read_bytes(), flag_file.history_path.read_bytes()) == before


async def test_a_huge_body_sent_in_chunks_is_refused(http: httpx.AsyncClient, flag_file: FlagFile) -> None:
    before = flag_file.path.read_bytes()

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"variant": "on", "pad": "'
        for _ in range(20):
            yield b"x" * 8192
        yield b'"}'

    answer = await http.put(
        "/api/flags/adFailure", content=chunks(), headers={"content-type": "application/json"}
    )
    assert answer.status_code == 413 and "larger than" in answer.json()["error"]
    assert flag_file.path.read_bytes() == before


async def test_a_broken_file_is_an_error_not_a_crash(http: httpx.AsyncClient, flag_file: FlagFile) -> None:
    flag_file.path.write_text('{"flags": {"adFailure": {"state": "ON"}}}')
    answer = await http.get("/api/flags")
    assert answer.status_code == 503 and "state must be ENABLED or DISABLED" in answer.json()["error"]
    assert (await put(http, "adFailure", {"variant": "on"})).status_code == 503
    page = await http.get("/flags")
    assert page.status_code == 503 and "state must be ENABLED or DISABLED" in page.text


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write to any folder, so it cannot be made read-only")
async def test_a_read_only_file_is_shown_and_not_changed(
    http: httpx.AsyncClient, flag_file: FlagFile
) -> None:
    flag_file.path.parent.chmod(0o555)
    try:
        assert (await http.get("/api/flags")).json()["writable"] is False
        answer = await put(http, "adFailure", {"variant": "on"})
        assert answer.status_code == 403 and "read-only" in answer.json()["error"]
        assert 'badge error">read-only' in (await http.get("/flags")).text
    finally:
        flag_file.path.parent.chmod(0o755)
    assert flag_file.view("adFailure").variant == "off"


# ---- the page ---------------------------------------------------------------------------------------


def rows_of(page: str) -> dict[str, str]:
    """Each flag row's markup by flag name."""
    return dict(re.findall(r'<tr data-flag="(\w+)"(.*?)</tr>', page, re.S))


async def test_the_page(http: httpx.AsyncClient, flag_file: FlagFile) -> None:
    await put(http, "meshCallFault", {"variant": "delay2s", "when": {"caller": "frontend"}, "percent": 50})
    await put(http, "adFailure", {"variant": "on"})
    answer = await http.get("/flags")
    assert answer.status_code == 200
    page = answer.text
    assert '<a href="/flags" aria-current="page">Flags</a>' in page
    assert str(flag_file.path) in page and 'badge ok">writable' in page
    assert 'id="reset-all"' in page and '<script src="/static/flags.js"></script>' in page
    rows = rows_of(page)
    assert list(rows) == SHIPPED
    for name, flag in shipped()["flags"].items():
        assert flag["metadata"]["description"].replace("'", "&#39;") in rows[name]
        for variant in flag["variants"]:
            assert f'<option value="{variant}"' in rows[name]
    mesh = rows["meshCallFault"]
    assert mesh.startswith(' class="changed"')  # not as shipped: highlighted
    assert "delay2s when caller=frontend, 50%" in mesh and f"by {ME}" in mesh
    assert '<option value="delay2s" selected>' in mesh
    ad = rows["adFailure"]
    assert ad.startswith(' class="changed"') and 'data-role="toggle"' in ad and 'aria-pressed="true"' in ad
    assert ">Turn off</button>" in ad
    cart = rows["cartFailure"]
    assert not cart.startswith(' class="changed"') and "never changed" in cart
    assert 'data-role="toggle"' not in cart  # seven variants: a choice, not a switch
    assert (await http.get("/static/flags.js")).status_code == 200
    assert (await http.get("/static/flags.css")).status_code == 200


async def test_without_a_flag_file(unconfigured: httpx.AsyncClient) -> None:
    page = await unconfigured.get("/flags")
    assert page.status_code == 200
    assert 'id="flags-not-configured"' in page.text and "flagd server" in page.text
    assert "--flags-file" in page.text and "/static/flags.js" not in page.text
    for method, path in (
        ("GET", "/api/flags"),
        ("GET", "/api/flags/adFailure"),
        ("PUT", "/api/flags/adFailure"),
        ("POST", "/api/flags/reset"),
        ("GET", "/api/flags/history"),
    ):
        answer = await unconfigured.request(method, path, json={"variant": "on"} if method == "PUT" else None)
        assert answer.status_code == 404, (method, path)
        assert "flags come from elsewhere" in answer.json()["error"]


# ---- markers on the service charts ----------------------------------------------------------------


def remember(file: FlagFile, change: Change) -> None:
    """Add a change to the file's history as if it had been made at its time."""
    with open(file.history_path, "a") as out:
        out.write(json.dumps(asdict(change)) + "\n")


async def test_a_flag_change_is_a_marker_on_every_chart(http: httpx.AsyncClient, flag_file: FlagFile) -> None:
    old = Change(time.time() - 3 * 3600, "paymentFailure", "50%", "off", "someone")  # outside the hour
    remember(flag_file, old)
    await put(http, "adFailure", {"variant": "on"})
    page = (await http.get("/services/checkout", params={"lookback": "1h"})).text
    charts = charts_of(page)
    assert list(charts) == ["rate", "errors", "latency"]
    for key, chart in charts.items():
        markers = re.findall(
            r'<g class="marker" data-event="([^"]*)">\s*<title>([^<]*)</title>\s*<line x1="([\d.]+)"', chart
        )
        assert [label for label, _, _ in markers] == ["adFailure → on"], key
        _, tooltip, x = markers[0]
        assert f"flag adFailure: off → on, by {ME}" in tooltip
        assert 230 < float(x) <= 438  # now: the right half of the hour (the plot spans 58 to 438)
        assert ">adFailure → on</text>" in chart
        assert "paymentFailure" not in chart
    assert "Dashed lines mark 1 flag change" in page


async def test_no_markers_without_changes(http: httpx.AsyncClient) -> None:
    page = (await http.get("/services/checkout")).text
    assert 'class="marker"' not in page and "flag change" not in page


def test_marker_labels_do_not_overlap() -> None:
    events = [Event(t, f"flag{t} → on", "") for t in range(4)]
    near = place_markers([(100.0 + k, e) for k, e in enumerate(events)], 58.0, 438.0, 12.0)
    assert [m.label_y for m in near[:3]] == [21.0, 33.0, 45.0]  # one row each
    assert near[3].label == "" and near[3].label_x is None  # no room left: the tooltip still tells
    right = place_markers([(430.0, events[0])], 58.0, 438.0, 12.0)
    assert right[0].anchor == "end" and right[0].label_x == 427.0  # near the right edge: left of the line


# ---- the real process ------------------------------------------------------------------------------


@pytest.fixture
def two_files(tmp_path: Path) -> Iterator[tuple[FlagFile, FlagFile]]:
    """Two seeded flag files."""
    files = FlagFile(tmp_path / "a" / "flags.json"), FlagFile(tmp_path / "b" / "flags.json")
    for file in files:
        file.seed()
    yield files


def test_the_process_finds_its_flag_file(
    tmp_path: Path, two_files: tuple[FlagFile, FlagFile], monkeypatch: pytest.MonkeyPatch
) -> None:
    from_env, from_option = two_files
    monkeypatch.setenv("FLAGD_OFFLINE_FLAG_SOURCE_PATH", str(from_env.path))
    monkeypatch.delenv("BOUTIQUE_OBSERVATORY_TOKEN", raising=False)
    running = start_observatory(tmp_path / "data")
    try:
        base = running.query_url
        assert httpx.get(f"{base}/api/flags", timeout=10).json()["file"] == str(from_env.path)
        answer = httpx.put(f"{base}/api/flags/adFailure", json={"variant": "on"}, timeout=10)
        assert answer.status_code == 200 and answer.json()["change"]["by"] == ME
        assert from_env.view("adFailure").variant == "on"
    finally:
        running.stop()
    running = start_observatory(tmp_path / "data", "--flags-file", str(from_option.path))
    try:
        body = httpx.get(f"{running.query_url}/api/flags", timeout=10).json()
        assert body["file"] == str(from_option.path)  # the option wins over the environment
    finally:
        running.stop()


def test_with_a_token_changes_need_it_and_are_recorded_as_token(
    tmp_path: Path, flag_file: FlagFile, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FLAGD_OFFLINE_FLAG_SOURCE_PATH", raising=False)
    running = start_observatory(tmp_path / "data", "--token", "s3cret", "--flags-file", str(flag_file.path))
    try:
        base = running.query_url
        before = flag_file.path.read_bytes()
        assert httpx.get(f"{base}/api/flags", timeout=10).status_code == 401
        refused = httpx.put(f"{base}/api/flags/adFailure", json={"variant": "on"}, timeout=10)
        assert refused.status_code == 401
        wrong = {"authorization": "Bearer guess"}
        refused = httpx.post(f"{base}/api/flags/reset", headers=wrong, timeout=10)
        assert refused.status_code == 401
        assert flag_file.path.read_bytes() == before and not flag_file.history()

        bearer = {"authorization": "Bearer s3cret"}
        answer = httpx.put(f"{base}/api/flags/adFailure", json={"variant": "on"}, headers=bearer, timeout=10)
        assert answer.status_code == 200 and answer.json()["change"]["by"] == "token"
        # A browser signs in once; its cookie stands for the token.
        with httpx.Client(base_url=base, timeout=10) as browser:
            assert browser.post("/login", data={"token": "s3cret"}).status_code in (200, 303)
            assert "Flags" in browser.get("/flags").text
            answer = browser.put("/api/flags/cartFailure", json={"variant": "10%"})
            assert answer.status_code == 200 and answer.json()["change"]["by"] == "token"
        assert [c.by for c in flag_file.history()] == ["token", "token"]
        assert "s3cret" not in flag_file.history_path.read_text()
    finally:
        running.stop()
