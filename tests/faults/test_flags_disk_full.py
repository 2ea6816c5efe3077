"""A full disk under the flag file: a change is refused whole, the last good file stays, and it works
again once there is room (a real size-limited tmpfs, the real Flags API)."""

from __future__ import annotations

import errno
import os
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette

from boutique.flags import FlagFile
from boutique.observatory.api import query_routes
from boutique.observatory.ui import ui_routes
from boutique.observatory.ui.flags import FlagControls
from tests.observatory.test_api_jaeger import build_store


def fill(disk: Path) -> Path:
    """Write until the disk says ENOSPC; the filler file (delete it to make room)."""
    filler = disk / "filler"
    with open(filler, "wb") as out:
        try:
            while True:
                out.write(b"\0" * (1 << 20))
                out.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler


@pytest.fixture
async def api(tmp_path: Path, small_disk: Path) -> AsyncIterator[tuple[httpx.AsyncClient, FlagFile]]:
    """The Flags API over a flag file on the small disk (the trace store elsewhere)."""
    file = FlagFile(small_disk / "flags.json")
    file.seed()
    store = build_store(tmp_path / "store")
    app = Starlette(routes=[*query_routes(store), *ui_routes(store, flag_controls=FlagControls(file.path))])
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://o") as http:
            yield http, file
    finally:
        store.close()


async def test_a_full_disk_refuses_the_change_and_keeps_the_last_good_file(
    api: tuple[httpx.AsyncClient, FlagFile], small_disk: Path
) -> None:
    http, file = api
    assert (await http.put("/api/flags/adFailure", json={"variant": "on"})).status_code == 200
    before = file.path.read_bytes()
    filler = fill(small_disk)

    answer = await http.put("/api/flags/cartFailure", json={"variant": "50%"})
    assert answer.status_code == 507, answer.text
    assert "nothing changed" in answer.json()["error"]
    assert (await http.post("/api/flags/reset", json={})).status_code == 507
    with pytest.raises(OSError):
        file.set("paymentFailure", "10%", by="test")
    assert file.path.read_bytes() == before  # the last good file, whole
    assert [n for n in os.listdir(small_disk) if n.startswith(".flags-")] == []  # no temporary file left
    assert file.view("adFailure").variant == "on" and file.view("cartFailure").variant == "off"

    filler.unlink()
    assert (await http.put("/api/flags/cartFailure", json={"variant": "50%"})).status_code == 200
    assert file.view("cartFailure").variant == "50%"
