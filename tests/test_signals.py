"""The signal helper: a real process stops on SIGTERM or SIGINT through its loop, and `undo` gives the
signal back its default action."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading

import pytest

from boutique.signals import stop_on_signals

CHILD = """
import asyncio, os, signal, sys
from boutique.signals import stop_on_signals

async def main():
    stop = asyncio.Event()
    undo = stop_on_signals(asyncio.get_running_loop(), stop.set)
    print("ready", flush=True)
    await stop.wait()
    print("stopped through the loop", flush=True)
    undo()
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGTERM)  # handlers removed: the default action ends the process
    await asyncio.sleep(30)
    print("still alive", flush=True)

asyncio.run(main())
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_process_stops_through_its_loop_then_undo_restores_the_default(sig: signal.Signals) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
        child.send_signal(sig)
        out, err = child.communicate(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    print(out, err)
    assert out.splitlines() == ["stopped through the loop"]
    assert child.returncode == -signal.SIGTERM
    assert "Traceback" not in err


async def test_each_signal_calls_back_once_per_delivery() -> None:
    calls: list[str] = []
    got = asyncio.Event()

    def callback() -> None:
        calls.append("called")
        got.set()

    undo = stop_on_signals(asyncio.get_running_loop(), callback)
    try:
        os.kill(os.getpid(), signal.SIGINT)
        await asyncio.wait_for(got.wait(), 10)
    finally:
        undo()
    assert calls == ["called"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_outside_the_main_thread_nothing_is_installed_and_undo_is_harmless() -> None:
    outcome: list[object] = []

    def run() -> None:
        loop = asyncio.new_event_loop()
        try:
            undo = stop_on_signals(loop, lambda: None)
            undo()
            outcome.append("no error")
        except Exception as exc:  # the helper must not raise here
            outcome.append(exc)
        finally:
            loop.close()

    before = signal.getsignal(signal.SIGTERM)
    thread = threading.Thread(target=run)
    thread.start()
    thread.join(10)
    assert outcome == ["no error"]
    assert signal.getsignal(signal.SIGTERM) is before
