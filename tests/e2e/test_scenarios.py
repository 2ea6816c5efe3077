"""`boutique scenario`: every shipped scenario runs against one real `boutique up` and finds its evidence.

One `up` (two product catalog replicas, for the crash scenario) serves the whole module; each scenario
runs as a real `boutique scenario run NAME --check` process, which sets its faults, drives its own
shoppers, asks the observatory for the evidence and puts every flag back. Durations are short; the
figures each run printed are shown, never asserted on.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from boutique.flags import FlagFile
from boutique.run.scenarios import SCENARIOS
from tests.e2e.harness import Up, eventually, start_up

pytestmark = pytest.mark.e2e

DURATION = "10s"


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    """One shop for the module, with the replicas the scenarios need."""
    replicas = {s: n for scenario in SCENARIOS for s, n in scenario.replicas.items()}
    extra = ["--replicas", ",".join(f"{s}={n}" for s, n in sorted(replicas.items()))] if replicas else []
    running = start_up(tmp_path_factory.mktemp("scenarios"), *extra)
    yield running
    running.stop()


def command(*args: str) -> list[str]:
    """The `boutique scenario` command line."""
    return [sys.executable, "-m", "boutique.cli", "scenario", *args]


def scenario(*args: str, timeout: float = 150.0) -> subprocess.CompletedProcess[str]:
    """Run `boutique scenario ARGS` to its end."""
    return subprocess.run(command(*args), capture_output=True, text=True, timeout=timeout)


def flags_of(up: Up) -> dict:
    """Every flag's entry in the shop's flag file."""
    return dict(FlagFile(up.data_dir / "flags.json").read()["flags"])


def test_list_names_every_scenario_with_its_fault() -> None:
    listed = scenario("list")
    assert listed.returncode == 0, listed.stderr
    print(listed.stdout)
    for shipped in SCENARIOS:
        line = next(
            (line for line in listed.stdout.splitlines() if line.startswith(shipped.name + " ")), None
        )
        assert line is not None, f"{shipped.name} not listed"
        assert shipped.title in line
    for setting in (f for s in SCENARIOS for f in s.flags):
        assert setting.describe() in listed.stdout


def test_a_scenario_needs_a_running_shop(tmp_path: Path) -> None:
    answer = scenario("run", SCENARIOS[0].name, "--data-dir", str(tmp_path))
    assert answer.returncode == 2
    assert "no running boutique up" in answer.stderr and "boutique up --data-dir" in answer.stderr
    unknown = scenario("run", "no-such-scenario", "--data-dir", str(tmp_path))
    assert unknown.returncode == 2 and SCENARIOS[0].name in unknown.stderr


@pytest.mark.parametrize("name", [s.name for s in SCENARIOS])
def test_every_scenario_shows_its_evidence_and_puts_the_flags_back(up: Up, name: str) -> None:
    shipped = next(s for s in SCENARIOS if s.name == name)
    before = flags_of(up)
    began = time.monotonic()
    ran = scenario("run", name, "--check", "--duration", DURATION, "--data-dir", str(up.data_dir))
    took = time.monotonic() - began
    print(f"--- {name} ({took:.1f}s) ---\n{ran.stdout}{ran.stderr}")
    assert ran.returncode == 0, f"{name} failed:\n{ran.stdout}\n{ran.stderr}"
    checks = [line for line in ran.stdout.splitlines() if line.strip().startswith(("PASS", "FAIL", "SKIP"))]
    expected = len(shipped.checks) + (1 if shipped.recovered else 0)
    assert len(checks) == expected and not [c for c in checks if c.strip().startswith("FAIL")], checks
    assert "where to look" in ran.stdout and "/search?service=" in ran.stdout
    if shipped.look.service_page:
        assert f"/services/{shipped.look.service_page}" in ran.stdout
    if shipped.look.mesh:
        assert "/mesh" in ran.stdout
    assert flags_of(up) == before, "the scenario left flags changed"
    for setting in shipped.flags:
        assert f"restored {setting.flag}" in ran.stdout


def test_an_interrupted_scenario_puts_every_flag_back_as_it_was(up: Up) -> None:
    """A flag someone had set stays as they set it; the ones the scenario set go back on SIGINT."""
    flag_file = FlagFile(up.data_dir / "flags.json")
    flag_file.set("meshCallFault", "delay2s", by="test", when={"caller": "checkout", "callee": "shipping"})
    try:
        before = flags_of(up)
        process = subprocess.Popen(
            command("run", "recommendations-down", "--duration", "5m", "--data-dir", str(up.data_dir)),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:

            def changed() -> dict | None:
                now = flags_of(up)["meshCallFault"]
                return now if now != before["meshCallFault"] else None

            now = eventually(changed, "the scenario to set its flag", timeout=30)
            assert "abortUnavailable" in json.dumps(now)
            time.sleep(1.0)  # shoppers are shopping
            process.send_signal(signal.SIGINT)
            output, _ = process.communicate(timeout=60)
        finally:
            if process.poll() is None:
                process.kill()
        print(output)
        assert process.returncode == 130, output
        assert "restored meshCallFault" in output
        assert flags_of(up) == before
    finally:
        flag_file.reset(by="test", names=["meshCallFault"])
