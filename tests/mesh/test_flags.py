"""Flags through OpenFeature in one process: hot reload, fired flags on spans, bad files keep the last good."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider

from boutique.flags import FlagFile, shipped
from boutique.mesh.flags import FLAG_KEY, FLAG_VARIANT, Flags, install_flags
from boutique.mesh.settings import FlagSettings, MeshSettings, SettingsError
from tests.e2e.harness import eventually

tracer = TracerProvider().get_tracer("test")


@pytest.fixture
def flag_file(tmp_path: Path) -> FlagFile:
    file = FlagFile(tmp_path / "flags.json")
    file.seed()
    return file


@pytest.fixture
def flags(flag_file: FlagFile) -> Iterator[Flags]:
    yield install_flags(FlagSettings(source_path=str(flag_file.path), poll_ms=50), "cart", "cart-0")
    install_flags(FlagSettings())  # back to no provider: every flag at its coded default


def wait_for(flags: Flags, key: str, value: float) -> float:
    """Seconds until the process sees `value` for `key`."""
    began = time.monotonic()
    eventually(lambda: flags.number(key) == value, f"{key} = {value}", timeout=10, every=0.02)
    return time.monotonic() - began


def test_without_a_source_every_flag_is_its_coded_default() -> None:
    flags = install_flags(FlagSettings())
    assert flags.boolean("adFailure") is False
    assert flags.number("cartFailure", 0.25) == 0.25
    assert flags.object("meshCallFault") == {}


def test_a_change_to_the_file_takes_effect_without_a_restart(flag_file: FlagFile, flags: Flags) -> None:
    assert flags.number("cartFailure") == 0.0
    flag_file.set("cartFailure", "75%", by="test")
    print(f"\nreloaded in {wait_for(flags, 'cartFailure', 0.75):.2f}s")
    flag_file.reset(by="test")
    wait_for(flags, "cartFailure", 0.0)


def test_a_write_in_the_same_clock_tick_as_the_last_is_still_seen(flag_file: FlagFile, flags: Flags) -> None:
    before = flag_file.path.stat().st_mtime_ns
    flag_file.set("cartFailure", "75%", by="test")
    os.utime(flag_file.path, ns=(before, before))  # as a coarse clock stamps two quick writes
    wait_for(flags, "cartFailure", 0.75)
    flag_file.path.write_text(
        flag_file.path.read_text().replace('"defaultVariant": "75%"', '"defaultVariant": "100%"')
    )
    os.utime(flag_file.path, ns=(before, before))  # and a change in place, same inode and the same stamp
    wait_for(flags, "cartFailure", 1.0)


def test_targeting_sees_the_attributes_and_the_identity(flag_file: FlagFile, flags: Flags) -> None:
    flag_file.set("productCatalogFailure", "on", by="test")
    eventually(
        lambda: flags.boolean("productCatalogFailure", product_id="OLJCESPC7Z"), "the flag on", timeout=10
    )
    assert flags.boolean("productCatalogFailure", product_id="66VCHSJNUP") is False
    flag_file.set(
        "meshCallFault", "abortUnavailable", by="test", when={"caller": "frontend", "callee": "cart"}
    )
    eventually(
        lambda: flags.object("meshCallFault", caller="frontend", callee="cart"), "the rule", timeout=10
    )
    assert flags.object("meshCallFault", caller="checkout", callee="cart") == {}
    flag_file.set("grayReplica", "2s", by="test")
    time.sleep(0.3)
    assert flags.number("grayReplica") == 0  # this process is cart-0, not productcatalog-1


def test_a_percentage_splits_traces_not_calls(flag_file: FlagFile, flags: Flags) -> None:
    flag_file.set("meshCallFault", "delay2s", by="test", percent=50)
    eventually(lambda: "fractional" in json.dumps(flag_file.read()), "the rule written")
    time.sleep(0.3)
    fired = []
    for _ in range(400):
        with tracer.start_as_current_span("request"):
            first = flags.object("meshCallFault")
            assert flags.object("meshCallFault") == first  # the same trace decides the same way
            fired.append(bool(first))
    share = sum(fired) / len(fired)
    print(f"\nshare of traces delayed at 50 %: {share:.2f}")
    assert 0.3 < share < 0.7


def test_a_flag_that_changes_behaviour_is_recorded_on_the_span(flag_file: FlagFile, flags: Flags) -> None:
    flag_file.set("adFailure", "on", by="test")
    eventually(lambda: flags.boolean("adFailure"), "adFailure on", timeout=10)
    with tracer.start_as_current_span("GetAds") as span:
        flags.boolean("adFailure")
        flags.number("cartFailure")  # off: not recorded
    events = [e for e in span.events if e.name == "feature_flag.evaluation"]  # type: ignore[attr-defined]
    assert [e.attributes["feature_flag.key"] for e in events] == ["adFailure"]
    assert events[0].attributes["feature_flag.result.variant"] == "on"
    assert span.attributes[FLAG_KEY] == "adFailure"  # type: ignore[attr-defined]
    assert span.attributes[FLAG_VARIANT] == "on"  # type: ignore[attr-defined]


def test_a_malformed_file_keeps_the_last_good_flags_and_says_so_once(
    flag_file: FlagFile, flags: Flags, caplog: pytest.LogCaptureFixture
) -> None:
    flag_file.set("cartFailure", "50%", by="test")
    wait_for(flags, "cartFailure", 0.5)
    caplog.set_level(logging.INFO, logger="boutique.flags")
    flag_file.path.write_text('{"flags": {')
    eventually(lambda: "is not usable" in caplog.text, "the error logged", timeout=10)
    time.sleep(0.3)  # several more polls of the bad file
    assert flags.number("cartFailure") == 0.5
    errors = [r for r in caplog.records if "is not usable" in r.getMessage()]
    assert len(errors) == 1, "the same problem is reported once, not on every poll"
    assert str(flag_file.path) in errors[0].getMessage()


def test_an_unknown_variant_keeps_the_last_good_flags(
    flag_file: FlagFile, flags: Flags, caplog: pytest.LogCaptureFixture
) -> None:
    flag_file.set("cartFailure", "25%", by="test")
    wait_for(flags, "cartFailure", 0.25)
    caplog.set_level(logging.INFO, logger="boutique.flags")
    document = shipped()
    document["flags"]["cartFailure"]["defaultVariant"] = "60%"
    document["flags"]["adFailure"]["defaultVariant"] = "on"  # a good change in the same bad file
    flag_file.path.write_text(json.dumps(document))
    eventually(lambda: "defaultVariant '60%'" in caplog.text, "the unknown variant named", timeout=10)
    assert flags.number("cartFailure") == 0.25
    assert flags.boolean("adFailure") is False  # the whole file is refused, not half of it
    document["flags"]["cartFailure"]["defaultVariant"] = "100%"
    flag_file.path.write_text(json.dumps(document))
    wait_for(flags, "cartFailure", 1.0)
    # The provider reports the recovery from its event handler, just after the new flags are in place.
    eventually(lambda: "usable again" in caplog.text, "the recovery logged", timeout=10)


def test_a_value_of_the_wrong_type_gives_the_coded_default(flag_file: FlagFile, flags: Flags) -> None:
    flag_file.set("adFailure", "on", by="test")
    eventually(lambda: flags.boolean("adFailure"), "adFailure on", timeout=10)
    assert flags.string("adFailure", "as coded") == "as coded"  # a boolean flag asked as text
    assert flags.boolean("noSuchFlag") is False


def test_flag_settings_come_from_the_flagd_variables() -> None:
    settings = MeshSettings.from_env({"FLAGD_OFFLINE_FLAG_SOURCE_PATH": "/etc/flags/flags.json"}).flags
    assert settings.configured and settings.source_path == "/etc/flags/flags.json"
    remote = MeshSettings.from_env(
        {"FLAGD_HOST": "flagd", "FLAGD_PORT": "8013", "FLAGD_RESOLVER": "in-process"}
    )
    assert (remote.flags.host, remote.flags.port, remote.flags.resolver) == ("flagd", 8013, "in-process")
    assert not MeshSettings.from_env({}).flags.configured
    with pytest.raises(SettingsError, match="FLAGD_RESOLVER"):
        MeshSettings.from_env({"FLAGD_RESOLVER": "carrier-pigeon"})
    with pytest.raises(SettingsError, match="FLAGD_PORT"):
        MeshSettings.from_env({"FLAGD_PORT": "eighty"})
