"""Every process of a real `boutique up` takes a flag change without a restart, and refuses a bad file."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from boutique.shop.services import BACKENDS
from tests.e2e.harness import Up, eventually, log_events
from tests.flags.support import flag_file, set_flag

pytestmark = pytest.mark.e2e
INSTANCES = [f"{name}-0" for name in [*BACKENDS, "frontend"]]


@pytest.fixture(scope="module")
def up(shop: Up) -> Iterator[Up]:
    """The flag modules' shared shop."""
    yield shop
    flag_file(shop).reset(by="test")


def logged(data_dir: Path, needle: str) -> set[str]:
    """Instances whose log has an event containing `needle`."""
    found = set()
    for instance in INSTANCES:
        path = data_dir / "logs" / f"{instance}.log"
        if path.exists() and needle in path.read_text(errors="replace"):
            found.add(instance)
    return found


def test_every_process_starts_with_the_seeded_file(up: Up) -> None:
    path = up.data_dir / "flags.json"
    assert flag_file(up).read()["flags"]["adFailure"]["defaultVariant"] == "off"
    for instance in INSTANCES:
        events = [e["event"] for e in log_events(up.data_dir, instance, f"flags: 18 flags from {path}")]
        assert events, f"{instance} did not load the flag file"


def test_a_change_reaches_every_process_without_a_restart(up: Up) -> None:
    pids = {p["instance"]: p["pid"] for p in up.state()["processes"]}
    began = time.monotonic()
    set_flag(up, "cartFailure", "10%")
    eventually(
        lambda: logged(up.data_dir, "flags: changed cartFailure") == set(INSTANCES),
        "every process to log the change",
        timeout=30,
        every=0.05,
    )
    print(f"\n{len(INSTANCES)} processes took the change within {time.monotonic() - began:.2f}s")
    assert {p["instance"]: p["pid"] for p in up.state()["processes"]} == pids  # nothing restarted
    flag_file(up).reset(by="test")


def test_a_malformed_file_is_refused_by_every_process_and_the_fix_is_taken(up: Up) -> None:
    path = up.data_dir / "flags.json"
    good = path.read_text()
    path.write_text(good[: len(good) // 2])  # cut in half, as an editor crash would leave it
    eventually(
        lambda: logged(up.data_dir, "is not usable") == set(INSTANCES),
        "every process to report the bad file",
        timeout=30,
    )
    text = (up.data_dir / "logs" / "cart-0.log").read_text()
    assert "keeping the last good flags" in text and str(path) in text
    path.write_text(good)
    eventually(
        lambda: logged(up.data_dir, "is usable again") == set(INSTANCES),
        "every process to take the fixed file",
        timeout=30,
    )
    assert all(p["state"] == "SERVING" for p in up.state()["processes"] if p["service"] in BACKENDS)
