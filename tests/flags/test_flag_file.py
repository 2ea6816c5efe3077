"""The flag file: the shipped default, checks that refuse a bad document, atomic changes and their history."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from boutique.flags import FlagFile, FlagFileError, check_document, shipped

FAULT_FLAGS = {
    "adFailure", "adHighCpu", "adManualGc", "cartFailure", "emailMemoryLeak", "failedReadinessProbe",
    "imageSlowLoad", "intlShippingSlowdown", "paymentFailure", "paymentUnreachable", "productCatalogFailure",
    "recommendationCacheFailure", "productCatalogDbLock", "shippingWorkerPool", "meshCallFault", "grayReplica",
}  # fmt: skip


@pytest.fixture
def flag_file(tmp_path: Path) -> FlagFile:
    file = FlagFile(tmp_path / "flags.json")
    file.seed()
    return file


def test_the_shipped_file_is_valid_and_every_fault_is_off() -> None:
    document = shipped()
    assert check_document(document) == []
    assert set(document["flags"]) >= FAULT_FLAGS
    for name in FAULT_FLAGS:
        flag = document["flags"][name]
        value = flag["variants"][flag["defaultVariant"]]
        assert value in (False, 0, {}), f"{name} ships with a fault on"
        assert flag["metadata"]["description"], f"{name} has no description"


def test_the_open_telemetry_demo_names_and_variants_are_kept() -> None:
    flags = shipped()["flags"]
    assert set(flags["cartFailure"]["variants"]) == {"off", "10%", "25%", "50%", "75%", "90%", "100%"}
    assert set(flags["emailMemoryLeak"]["variants"]) == {"off", "1x", "10x", "100x", "1000x", "10000x"}
    assert set(flags["imageSlowLoad"]["variants"]) == {"off", "5sec", "10sec"}
    assert flags["intlShippingSlowdown"]["variants"]["10sec"] == 10
    assert flags["loadGeneratorTraffic"]["defaultVariant"] == "on"


def test_seed_writes_the_shipped_file_once_and_adds_flags_an_older_file_lacks(tmp_path: Path) -> None:
    file = FlagFile(tmp_path / "flags.json")
    assert file.seed() == []
    assert file.read() == shipped()
    file.set("adFailure", "on", by="me")
    document = json.loads(file.path.read_text())
    del document["flags"]["grayReplica"]
    file.path.write_text(json.dumps(document))
    assert file.seed() == ["adFailure"]  # what is on is reported, and kept
    assert "grayReplica" in file.read()["flags"]
    assert file.view("adFailure").variant == "on"


def test_set_changes_one_flag_and_remembers_who_and_when(flag_file: FlagFile) -> None:
    change = flag_file.set("cartFailure", "50%", by="local user alice")
    assert (change.flag, change.variant, change.previous, change.by) == (
        "cartFailure",
        "50%",
        "off",
        "local user alice",
    )
    view = flag_file.view("cartFailure")
    assert view.variant == "50%" and not view.is_default
    assert view.last_change == change
    assert flag_file.read()["flags"]["cartFailure"]["defaultVariant"] == "50%"
    assert flag_file.history() == [change]


def test_targeted_set_writes_a_flagd_rule_on_caller_callee_and_percent(flag_file: FlagFile) -> None:
    flag_file.set(
        "meshCallFault", "delay2s", by="me", when={"caller": "frontend", "callee": "cart"}, percent=25
    )
    flag = flag_file.read()["flags"]["meshCallFault"]
    assert flag["defaultVariant"] == "off"  # everything the rule does not match stays off
    test, chosen, otherwise = flag["targeting"]["if"]
    assert {"==": [{"var": "caller"}, "frontend"]} in test["and"]
    assert chosen == {"fractional": [["delay2s", 25], ["off", 75]]}
    assert otherwise == "off"
    view = flag_file.view("meshCallFault")
    assert view.variant == "delay2s" and view.rule == "callee=cart, caller=frontend, 25%"
    assert view.description  # the description survives the rule's metadata


def test_a_plain_set_keeps_the_shipped_targeting(flag_file: FlagFile) -> None:
    flag_file.set("productCatalogFailure", "on", by="me")
    flag = flag_file.read()["flags"]["productCatalogFailure"]
    assert flag["defaultVariant"] == "on"
    assert flag["targeting"] == shipped()["flags"]["productCatalogFailure"]["targeting"]


@pytest.mark.parametrize(
    ("name", "variant", "targeting", "message"),
    [
        ("noSuchFlag", "on", {}, "no flag named 'noSuchFlag'"),
        ("cartFailure", "60%", {}, "has no variant '60%'"),
        ("cartFailure", "50%", {"percent": 0}, "percent must be in"),
        ("cartFailure", "50%", {"percent": 101}, "percent must be in"),
        ("cartFailure", "50%", {"when": {"caller": ""}}, "targeting needs key=value"),
    ],
)
def test_a_bad_change_is_refused_and_changes_nothing(
    flag_file: FlagFile, name: str, variant: str, targeting: dict, message: str
) -> None:
    before = flag_file.path.read_bytes()
    with pytest.raises(FlagFileError, match=message):
        flag_file.set(name, variant, by="me", **targeting)
    assert flag_file.path.read_bytes() == before
    assert flag_file.history() == []


def test_reset_puts_every_changed_flag_back_and_records_it(flag_file: FlagFile) -> None:
    flag_file.set("adFailure", "on", by="me")
    flag_file.set("meshCallFault", "abortUnavailable", by="me", when={"callee": "currency"})
    changes = flag_file.reset(by="you")
    assert {c.flag for c in changes} == {"adFailure", "meshCallFault"}
    assert flag_file.read() == shipped()
    assert all(view.is_default for view in flag_file.views())
    assert flag_file.reset(by="you") == []  # nothing left to reset


@pytest.mark.parametrize(
    ("mutate", "problem"),
    [
        (lambda d: d["flags"]["adFailure"].update(defaultVariant="maybe"), "defaultVariant 'maybe'"),
        (lambda d: d["flags"]["adFailure"].update(state="ON"), "state must be ENABLED or DISABLED"),
        (lambda d: d["flags"]["adFailure"].update(variants={}), "variants must be a non-empty object"),
        (lambda d: d["flags"]["adFailure"].update(description="x"), "unknown field 'description'"),
        (
            lambda d: d["flags"]["adFailure"].update(
                targeting={"fractional": [["sometimes", 50], ["off", 50]]}
            ),
            "targeting names variant 'sometimes'",
        ),
        (lambda d: d.update(flags=[]), "'flags' must be an object"),
    ],
)
def test_check_document_names_each_mistake(mutate, problem: str) -> None:  # type: ignore[no-untyped-def]
    document = shipped()
    mutate(document)
    assert any(problem in found for found in check_document(document)), check_document(document)


def test_a_file_with_a_mistake_is_reported_on_read(flag_file: FlagFile) -> None:
    flag_file.path.write_text("{ not json")
    with pytest.raises(FlagFileError, match="not JSON"):
        flag_file.read()
    with pytest.raises(FlagFileError, match="not JSON"):
        flag_file.set("adFailure", "on", by="me")


def test_concurrent_writers_lose_no_change(flag_file: FlagFile) -> None:
    names = ["adFailure", "adHighCpu", "adManualGc", "failedReadinessProbe", "paymentUnreachable"]
    threads = [threading.Thread(target=flag_file.set, args=(n, "on", f"writer {n}")) for n in names]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert {v.name for v in flag_file.views() if v.variant == "on" and v.name in names} == set(names)
    assert len(flag_file.history()) == len(names)


def test_a_torn_history_line_does_not_hide_the_others(flag_file: FlagFile) -> None:
    flag_file.set("adFailure", "on", by="me")
    with open(flag_file.history_path, "a") as out:
        out.write('{"time": 1, "flag": "adF')  # a crash in the middle of a line
    flag_file.set("adFailure", "off", by="me")
    assert [c.variant for c in flag_file.history()] == ["on", "off"]
