"""`boutique chaos` against a real `boutique up`: kill -9 an instance and see it serve again, stop one and
see it resume at the deadline, at once on Ctrl-C, and through the watchdog when the command itself is
killed -9; throttle one and see it stopped part of the time and running afterwards; bad input is refused."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from boutique.run import chaos
from tests.e2e.harness import Up, eventually, start_up
from tests.flags.support import observatory

PRODUCT = "OLJCESPC7Z"


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    """One `boutique up` for the module: every test faults a different service of it."""
    running = start_up(tmp_path_factory.mktemp("chaos"))
    try:
        yield running
    finally:
        running.stop()


def command(up: Up, *args: str) -> list[str]:
    return [sys.executable, "-m", "boutique.cli", "chaos", *args, "--data-dir", str(up.data_dir)]


def run_chaos(up: Up, *args: str, timeout: float = 90.0) -> subprocess.CompletedProcess[str]:
    """`boutique chaos ARGS` against this `up`, to the end."""
    return subprocess.run(command(up, *args), capture_output=True, text=True, timeout=timeout)


def start_chaos(up: Up, *args: str) -> subprocess.Popen[str]:
    """`boutique chaos ARGS` against this `up`, left running."""
    return subprocess.Popen(command(up, *args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def entry(up: Up, instance: str) -> dict:
    """The up.json entry of one instance."""
    return next(p for p in up.state()["processes"] if p["instance"] == instance)


def process_of(up: Up, instance: str) -> psutil.Process:
    """The running process of `instance`, checked to be one this `up` started."""
    pid = entry(up, instance)["pid"]
    mine = {p.pid: p for p in up.descendants()}
    assert pid in mine, (instance, pid)
    return mine[pid]


def is_stopped(process: psutil.Process) -> bool:
    try:
        return process.status() == psutil.STATUS_STOPPED
    except psutil.NoSuchProcess:
        return False


def serving(up: Up, instance: str, pid: int | None = None) -> bool:
    """`up` reports the instance SERVING (as `pid`, when given)."""
    found = entry(up, instance)
    return found["state"] == "SERVING" and (pid is None or found["pid"] == pid)


def records(up: Up, since: float) -> list[dict]:
    return chaos.history(up.data_dir, since)


def watchdogs(up: Up) -> list[psutil.Process]:
    """Chaos watchdogs still running for this `up`'s data directory."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        line = " ".join(process.info["cmdline"] or ())
        if "boutique.run.chaos" in line and str(up.data_dir) in line:
            found.append(process)
    return found


def page_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=5.0).status_code == 200
    except httpx.HTTPError:
        return False


def test_a_target_names_a_service_an_instance_or_an_index(up: Up) -> None:
    first = chaos.find(up.data_dir, "productcatalog")
    assert first.instance == "productcatalog-0" and first.up_pid == up.process.pid
    for spelling in ("productcatalog/productcatalog-0", "productcatalog/0", "productcatalog-0"):
        assert chaos.find(up.data_dir, spelling).pid == first.pid
    assert {t.instance for t in chaos.targets(up.data_dir)} >= {
        "productcatalog-0",
        "registry-0",
        "frontend-0",
    }


def test_kill_restarts_the_instance_and_the_shop_pages_recover(up: Up) -> None:
    since = time.time()
    old = process_of(up, "productcatalog-0")
    done = run_chaos(up, "kill", "productcatalog")
    print(done.stdout, done.stderr)
    assert done.returncode == 0, done.stderr
    assert f"killed productcatalog-0 (pid {old.pid}, SIGKILL)" in done.stdout
    assert "productcatalog-0 is SERVING again as pid" in done.stdout
    assert not old.is_running()
    new = process_of(up, "productcatalog-0")
    assert new.pid != old.pid and serving(up, "productcatalog-0", new.pid)
    eventually(
        lambda: page_ok(up.url) and page_ok(f"{up.url}/product/{PRODUCT}"), "the shop pages to recover"
    )
    kill, recovered = [r for r in records(up, since) if r["instance"] == "productcatalog-0"]
    assert kill["action"] == "kill" and kill["pid"] == old.pid and kill["by"] == chaos.by_default()
    assert recovered["action"] == "recovered" and recovered["new_pid"] == new.pid
    print(f"productcatalog-0 away for {recovered['duration']:.1f}s")
    # The observatory of that `up` marks both on the service's charts (once its spans have arrived).

    def service_page() -> str | None:
        page = httpx.get(f"{observatory(up)}/services/productcatalog", params={"lookback": "15m"}, timeout=10)
        return page.text if page.status_code == 200 else None

    page = eventually(service_page, "the productcatalog page")
    assert 'data-event="kill productcatalog-0"' in page
    assert 'data-event="recovered productcatalog-0"' in page


def test_kill_no_wait_returns_at_once_and_up_restarts_it(up: Up) -> None:
    old = process_of(up, "payment-0")
    done = run_chaos(up, "kill", "payment/payment-0", "--no-wait")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"chaos: killed payment-0 (pid {old.pid}, SIGKILL)"
    eventually(lambda: entry(up, "payment-0")["pid"] not in (None, old.pid), "up to restart payment-0")
    eventually(lambda: serving(up, "payment-0"), "payment-0 to serve again")


def test_stop_holds_the_process_stopped_then_resumes_it(up: Up) -> None:
    since = time.time()
    target = process_of(up, "ad-0")
    stopping = start_chaos(up, "stop", "ad", "--for", "2s")
    eventually(lambda: is_stopped(target), "ad-0 to be stopped (state T)", every=0.02)
    out, err = stopping.communicate(timeout=30)
    print(out, err)
    assert stopping.returncode == 0, err
    assert "stopped ad-0" in out and "resumed ad-0" in out
    assert target.is_running() and not is_stopped(target)
    eventually(lambda: serving(up, "ad-0", target.pid), "ad-0 to serve again, same process")
    stop, resume = [r for r in records(up, since) if r["instance"] == "ad-0"]
    assert (stop["action"], stop["duration"], stop["pid"]) == ("stop", 2.0, target.pid)
    assert (resume["action"], resume["reason"]) == ("resume", "deadline")
    assert not watchdogs(up)


@pytest.mark.parametrize(
    ("instance", "sig"),
    [("email-0", signal.SIGINT), ("shipping-0", signal.SIGTERM)],
    ids=["SIGINT", "SIGTERM"],
)
def test_interrupting_the_command_resumes_the_process_at_once(
    up: Up, instance: str, sig: signal.Signals
) -> None:
    target = process_of(up, instance)
    stopping = start_chaos(up, "stop", instance, "--for", "5m")
    eventually(lambda: is_stopped(target), f"{instance} to be stopped", every=0.02)
    stopping.send_signal(sig)
    out, err = stopping.communicate(timeout=30)  # far less than the 5 minutes asked for
    print(out, err)
    assert stopping.returncode == 130
    assert f"interrupted by {sig.name}" in out
    assert not is_stopped(target) and target.is_running()
    eventually(lambda: serving(up, instance, target.pid), f"{instance} to serve again")
    assert not watchdogs(up)


def test_the_watchdog_resumes_the_process_when_the_command_is_killed(up: Up) -> None:
    since = time.time()
    target = process_of(up, "checkout-0")
    stopping = start_chaos(up, "stop", "checkout", "--for", "3s")
    eventually(lambda: is_stopped(target), "checkout-0 to be stopped", every=0.02)
    stopping.kill()
    stopping.communicate(timeout=10)
    eventually(lambda: not is_stopped(target), "the watchdog to resume checkout-0", timeout=30)
    assert target.is_running()
    resume = [r for r in records(up, since) if r["instance"] == "checkout-0"][-1]
    assert (resume["action"], resume["reason"]) == ("resume", "watchdog")
    eventually(lambda: not watchdogs(up), "the watchdog to exit")
    eventually(lambda: serving(up, "checkout-0", target.pid), "checkout-0 to serve again")


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def test_slow_stops_the_process_part_of_the_time_and_leaves_it_running(up: Up) -> None:
    since = time.time()
    target = process_of(up, "currency-0")
    pages = {"count": 0}
    quit_traffic = threading.Event()

    def browse() -> None:
        with httpx.Client(timeout=5.0) as client:
            client.post(f"{up.url}/setCurrency", data={"currency_code": "EUR"})  # prices go through currency
            while not quit_traffic.is_set():
                try:
                    client.get(up.url)
                    pages["count"] += 1
                except httpx.HTTPError:
                    pass

    shopper = threading.Thread(target=browse, daemon=True)
    shopper.start()
    try:
        began, cpu, count = time.monotonic(), cpu_seconds(target), pages["count"]
        time.sleep(2)
        normal = (cpu_seconds(target) - cpu) / (time.monotonic() - began)
        normal_pages = (pages["count"] - count) / (time.monotonic() - began)

        began, cpu, count = time.monotonic(), cpu_seconds(target), pages["count"]
        slowing = start_chaos(up, "slow", "currency", "--for", "3s", "--cpu", "20%")
        samples = []
        while slowing.poll() is None:
            samples.append(is_stopped(target))
            time.sleep(0.01)
        slowed = (cpu_seconds(target) - cpu) / (time.monotonic() - began)
        slowed_pages = (pages["count"] - count) / (time.monotonic() - began)
    finally:
        quit_traffic.set()
        shopper.join(10)
    out, err = slowing.communicate(timeout=10)
    print(out, err)
    print(
        f"currency-0 CPU {normal:.1%} of one core at {normal_pages:.0f} pages/s, "
        f"{slowed:.1%} at {slowed_pages:.0f} pages/s while slowed to 20%; "
        f"stopped in {sum(samples)} of {len(samples)} samples"
    )
    assert slowing.returncode == 0, err
    assert any(samples), "currency-0 was never seen stopped"
    assert target.is_running() and not is_stopped(target)
    slow, resume = [r for r in records(up, since) if r["instance"] == "currency-0"]
    assert (slow["action"], slow["cpu"]) == ("slow", 0.2)
    assert resume["reason"] == "deadline" and resume["stops"] > 1
    eventually(lambda: serving(up, "currency-0", target.pid), "currency-0 to serve again")


def test_a_slow_whose_command_is_killed_is_resumed_at_once(up: Up) -> None:
    since = time.time()
    target = process_of(up, "recommendation-0")
    slowing = start_chaos(up, "slow", "recommendation", "--for", "5m", "--cpu", "5%")
    eventually(lambda: is_stopped(target), "recommendation-0 to be stopped", every=0.01)
    slowing.kill()
    slowing.communicate(timeout=10)
    # A throttle must not turn into a stop: the watchdog resumes it now, not in 5 minutes.
    eventually(
        lambda: any(r["action"] == "resume" for r in records(up, since)), "the watchdog to resume it", 30
    )
    assert not is_stopped(target) and target.is_running()
    assert records(up, since)[-1]["reason"] == "watchdog"
    eventually(lambda: not watchdogs(up), "the watchdog to exit")


def test_the_api_fault_is_awaitable_and_locks_the_instance(up: Up) -> None:
    target = process_of(up, "cart-0")
    fault = chaos.stop(up.data_dir, "cart", 60.0, by="test")
    assert is_stopped(target)
    second = run_chaos(up, "stop", "cart-0", "--for", "1s")
    assert second.returncode == 2 and "cart-0 is already being stopped or slowed" in second.stderr
    fault.end()
    assert fault.outcome == "ended" and not is_stopped(target)

    async def over() -> chaos.Fault:
        return await chaos.stop(up.data_dir, "cart", 0.5, by="test")

    assert asyncio.run(over()).outcome == "deadline"
    assert not is_stopped(target) and target.is_running()
    with chaos.slow(up.data_dir, "cart", 60.0, cpu=0.5) as throttle:
        assert not throttle.done()
    assert throttle.outcome == "ended" and not is_stopped(target) and target.is_running()


BAD_INPUT = [
    (("kill", "nosuch"), "no service or instance 'nosuch'"),
    (("kill", "ad/ad-7"), "ad has no instance 'ad-7'"),
    (("stop", "ad", "--for", "0s"), "--for 0s: must be above 0"),
    (("stop", "ad", "--for", "11m"), "at most 10m"),
    (("stop", "ad", "--for", "soon"), "not a duration"),
    (("slow", "ad", "--cpu", "0%"), "from 1% to 99%"),
    (("slow", "ad", "--cpu", "lots"), "expected a percentage"),
    (("kill", "ad", "--timeout", "0s"), "--timeout 0s: must be above 0"),
]


def test_bad_input_is_one_line_and_exit_2(up: Up) -> None:
    before = process_of(up, "ad-0")
    running = [(args, said, start_chaos(up, *args)) for args, said in BAD_INPUT]  # side by side: quicker
    for args, said, command_ in running:
        out, err = command_.communicate(timeout=60)
        assert command_.returncode == 2, (args, out, err)
        assert out == "" and said in err and err.count("\n") == 1, (args, err)
    assert before.is_running() and not is_stopped(before)
    assert before.pid == entry(up, "ad-0")["pid"]


def test_no_up_running_is_refused(up: Up, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "boutique.cli", "chaos", "kill", "ad", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2 and "no `boutique up` state in" in done.stderr
    gone = subprocess.Popen(["true"])
    gone.wait()
    (tmp_path / "up.json").write_text(json.dumps({**up.state(), "pid": gone.pid}))
    with pytest.raises(chaos.ChaosError, match="is not running"):
        chaos.kill(tmp_path, "ad")


def test_only_processes_of_that_up_can_be_targeted(up: Up, tmp_path: Path) -> None:
    """An up.json naming a process `up` did not start (here our own `sleep`) is refused, not obeyed."""
    bystander = subprocess.Popen(["sleep", "60"])
    try:
        state = up.state()
        entry = {"service": "ad", "instance": "ad-0", "pid": bystander.pid, "state": "SERVING"}
        (tmp_path / "up.json").write_text(json.dumps({**state, "processes": [entry]}))
        for action in ("kill", "stop"):
            done = subprocess.run(
                [sys.executable, "-m", "boutique.cli", "chaos", action, "ad", "--data-dir", str(tmp_path)],
                capture_output=True,
                text=True,
            )
            assert done.returncode == 2 and "refusing to signal it" in done.stderr, done.stderr
        process = psutil.Process(bystander.pid)
        assert bystander.poll() is None and process.status() != psutil.STATUS_STOPPED
    finally:
        bystander.kill()
        bystander.wait()
