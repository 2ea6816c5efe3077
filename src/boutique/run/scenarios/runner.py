"""One scenario against a running shop: set its faults, drive its shoppers, say where to look, check the
evidence, and put back everything it changed (flags as they were, every process running), also when
interrupted.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from rich.console import Console
from rich.live import Live
from rich.text import Text

from boutique.flags import FlagFile, FlagFileError
from boutique.run.chaos import ChaosError
from boutique.run.scenarios import links
from boutique.run.scenarios.evidence import (
    Evidence,
    LimiterWatch,
    MeshTimeline,
    Observatory,
    is_error,
    now_us,
    spans_of,
)
from boutique.run.scenarios.model import Check, FlagSetting, Scenario, Search, Stage, Undo, Verdict
from boutique.run.scenarios.shoppers import Shoppers
from boutique.run.scenarios.target import Target

CHECK_WAIT = 30.0  # seconds the checks may wait for spans to arrive, all together
TRACE_WAIT = 10.0  # seconds to wait for an example trace when not checking
ACTION_WAIT = 45.0  # seconds to wait for what an action started (a restart) before looking
PLAIN_EVERY = 3.0  # seconds between progress lines when the output is not a terminal


@dataclass
class Changes:
    """What a run changed, and how to put it back: each flag's entry as it was, each action's undo."""

    flags: FlagFile
    by: str
    say: Callable[[str], None]
    saved: dict[str, dict[str, Any]] = field(default_factory=dict)
    undos: list[Undo] = field(default_factory=list)

    def set_flags(self, settings: tuple[FlagSetting, ...]) -> None:
        """Remember each flag as it is, then set it (FlagFileError when the file or a setting is bad)."""
        document = self.flags.read()
        for setting in settings:
            if setting.flag not in document["flags"]:
                raise FlagFileError(f"no flag named {setting.flag!r} in {self.flags.path}")
            self.saved.setdefault(setting.flag, copy.deepcopy(document["flags"][setting.flag]))
        for setting in settings:
            when = dict(setting.when) if setting.when else None
            self.flags.set(setting.flag, setting.variant, self.by, when=when, percent=setting.percent)
            self.say(f"set {setting.describe()}")

    def lift(self) -> None:
        """Undo every action (last first) and put every flag back as it was; safe to call again."""
        while self.undos:
            undo = self.undos.pop()
            try:
                undo()
            except (ChaosError, OSError) as exc:
                self.say(f"could not undo an action: {exc}")
        for name in list(self.saved):
            try:
                change = self.flags.restore(name, self.saved[name], self.by)
            except (FlagFileError, OSError) as exc:
                self.say(f"could not restore {name}: {exc} (`boutique flags reset {name}` sets its default)")
                continue
            del self.saved[name]
            self.say(f"restored {name}" + (f" to {change.variant}" if change else " (it was as before)"))


class Progress:
    """The live progress line: a refreshed line on a terminal, a printed line every few seconds elsewhere."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.live: Live | None = None
        self.text = ""
        self.printed = 0.0

    def __enter__(self) -> Progress:
        if self.console.is_terminal:
            self.live = Live(Text(""), console=self.console, refresh_per_second=4, transient=True)
            self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.__exit__(None, None, None)
            self.live = None
        if self.text:
            self.console.print(self.text, highlight=False)

    def show(self, text: str) -> None:
        """Show the current progress."""
        self.text = text
        if self.live is not None:
            self.live.update(Text(text))
        elif time.monotonic() - self.printed >= PLAIN_EVERY:
            self.printed = time.monotonic()
            self.console.print(text, highlight=False)

    def say(self, message: str) -> None:
        """A message above the progress line."""
        self.console.print(f"  {message}", highlight=False)


def run_scenario(scenario: Scenario, target: Target, duration: float, check: bool, console: Console) -> int:
    """Run one scenario; 0 when done (and every check passed), 1 when a check failed, 130 interrupted."""
    console.print(Text.assemble((scenario.name, "bold"), f": {scenario.title}"))
    console.print(f"  {scenario.breaks}", highlight=False)
    changes = Changes(
        FlagFile(target.flag_file), f"scenario {scenario.name}", lambda m: console.print(f"  {m}")
    )
    for service, wanted in scenario.replicas.items():
        have = len(target.instances(service))
        if have < wanted:
            console.print(
                f"  note: best seen with {wanted} {service} instances (this shop runs {have}; "
                f"`boutique up --replicas {service}={wanted}`)",
                highlight=False,
            )
    if target.observatory_url:
        live = [links.mesh_url(target.observatory_url)] if scenario.look.mesh else []
        if scenario.look.service_page:
            live.insert(0, links.service_url(target.observatory_url, scenario.look.service_page))
        if live:
            console.print(f"  watch it live: {'  '.join(live)}", highlight=False)
    try:
        changes.set_flags(scenario.flags)
        passed = asyncio.run(_drive(scenario, target, duration, check, changes, console))
    except (KeyboardInterrupt, asyncio.CancelledError):  # Ctrl-C, or SIGTERM (it cancels the run)
        console.print("interrupted")
        return 130
    except FlagFileError as exc:
        console.print(f"boutique scenario: {exc}", style="red", highlight=False)
        return 2
    finally:
        changes.lift()
    return 0 if passed else 1


async def _drive(
    scenario: Scenario, target: Target, duration: float, check: bool, changes: Changes, console: Console
) -> bool:
    """Shoppers, actions and progress for the duration (and the recovery); then links and checks."""
    main = asyncio.current_task()
    loop = asyncio.get_running_loop()
    if main is not None:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            # Ctrl-C and SIGTERM both put everything back first; SIGINT is handled here even when the
            # process was started with it ignored (a background job of a non-interactive shell).
            for stop in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(stop, main.cancel)
    async with httpx.AsyncClient(timeout=10.0, trust_env=False) as client:
        base = target.observatory_url
        observatory = Observatory(base, client) if base else None
        timeline = MeshTimeline(base, client) if base else None
        limiters = LimiterWatch(target, client)
        shoppers = Shoppers(target.frontend_url, scenario.traffic)
        evidence = Evidence(target, observatory, timeline, limiters, shoppers.tally, start_us=now_us())
        for watcher in (timeline, limiters):
            if watcher is not None:
                watcher.start()
        shoppers.start()
        console.print(
            f"  {scenario.traffic.shoppers} shoppers ({scenario.traffic.mix}) for {duration:g}s against "
            f"{target.frontend_url}",
            highlight=False,
        )
        try:
            with Progress(console) as progress:
                stage = Stage(target, evidence, duration, changes.by, progress.say)
                await _fault_phase(scenario, stage, shoppers, changes, progress)
                if scenario.recovered is not None:
                    progress.say("lifting the faults; waiting for the shop to recover")
                    await asyncio.to_thread(changes.lift)
                    evidence.fault_end_us = now_us()
                    await _recovery_phase(scenario, scenario.recovered, evidence, shoppers, progress)
        finally:
            await shoppers.stop()
            for watcher in (timeline, limiters):
                if watcher is not None:
                    await watcher.stop()
            await asyncio.to_thread(changes.lift)
        if evidence.tasks:
            await asyncio.wait(evidence.tasks, timeout=ACTION_WAIT)
        _summary(console, shoppers, duration)
        await _where_to_look(console, scenario, evidence, wait=not check)
        return await _checks(console, scenario, evidence) if check else True


async def _fault_phase(
    scenario: Scenario, stage: Stage, shoppers: Shoppers, changes: Changes, progress: Progress
) -> None:
    """The duration with the faults on: actions at their moments, progress every quarter second."""
    began = time.monotonic()
    pending = sorted(scenario.actions, key=lambda action: action.at)
    while (elapsed := time.monotonic() - began) < stage.duration:
        while pending and elapsed >= pending[0].at * stage.duration:
            action = pending.pop(0)
            stage.say(action.describe)
            try:
                undo = await action.run(stage)
            except ChaosError as exc:
                stage.say(f"could not: {exc}")
                continue
            if undo is not None:
                changes.undos.append(undo)
        limiters = f"  [{stage.evidence.limiters.latest()}]" if scenario.traffic.mix == "flood" else ""
        progress.show(f"  {elapsed:4.0f}s/{stage.duration:g}s  {shoppers.tally.line()}{limiters}")
        await asyncio.sleep(0.25)


async def _recovery_phase(
    scenario: Scenario, recovered: Check, evidence: Evidence, shoppers: Shoppers, progress: Progress
) -> None:
    """Traffic goes on after the faults are lifted until `recovered` passes (or `scenario.recovery` s)."""
    began = time.monotonic()
    while (elapsed := time.monotonic() - began) < scenario.recovery:
        verdict = await _probe(recovered, evidence)
        progress.show(f"  recovering {elapsed:4.0f}s  {shoppers.tally.line()}  [{verdict.seen}]")
        if verdict.ok:
            progress.say(f"recovered after {elapsed:.0f}s: {verdict.seen}")
            return
        await asyncio.sleep(1.0)
    progress.say(f"not recovered after {scenario.recovery:g}s")


def _summary(console: Console, shoppers: Shoppers, duration: float) -> None:
    tally = shoppers.tally
    took = max(1e-3, time.monotonic() - tally.began)
    console.print(
        f"traffic: {tally.requests} requests in {took:.0f}s ({tally.requests / took:.1f}/s), "
        f"{tally.errors} server errors or no answer" + (f", {tally.shed} shed" if tally.shed else ""),
        highlight=False,
    )
    for line in tally.summary()[:8]:
        console.print(f"  {line}", highlight=False)


async def _example_trace(evidence: Evidence, searches: tuple[Search, ...], wait: float) -> tuple[Search, str]:
    """The first search that finds a trace, and the id of its most telling trace (most error spans)."""
    observatory = evidence.need_observatory()
    deadline = time.monotonic() + wait
    while True:
        for search in searches:
            with contextlib.suppress(httpx.HTTPError):
                found = await observatory.find(search, evidence.start_us, evidence.end_us)
                if found:
                    best = max(found, key=lambda trace: sum(is_error(s) for s in spans_of(trace)))
                    return search, str(best["traceID"])
        if time.monotonic() >= deadline:
            return searches[0], ""
        await asyncio.sleep(1.0)


async def _where_to_look(console: Console, scenario: Scenario, evidence: Evidence, wait: bool) -> None:
    """The observatory pages that show the evidence."""
    base = evidence.target.observatory_url
    if not base:
        console.print(
            "this boutique up runs no observatory: nothing to look at (start it without --no-observatory)"
        )
        return
    look = scenario.look
    search, trace_id = await _example_trace(evidence, look.searches, TRACE_WAIT if wait else CHECK_WAIT)
    console.print(f"where to look (observatory at {base}):")
    console.print(
        f"  traces:   {links.search_url(base, search, evidence.start_us, evidence.end_us)}", highlight=False
    )
    if trace_id:
        console.print(f"  a trace:  {links.trace_url(base, trace_id)}", highlight=False)
    else:
        console.print("  a trace:  none found yet (spans may still be on their way: try the search)")
    if look.service_page:
        console.print(f"  service:  {links.service_url(base, look.service_page)}", highlight=False)
    if look.mesh:
        console.print(f"  mesh:     {links.mesh_url(base)}", highlight=False)
    if look.profile:
        service, kind = look.profile
        profile = links.profile_url(base, service, kind, evidence.start_us, evidence.end_us)
        console.print(f"  profile:  {profile}", highlight=False)
    for note in look.notes:
        console.print(f"  - {note}", highlight=False)


async def _probe(check: Check, evidence: Evidence) -> Verdict:
    """One answer of a check; a failed request is a failed answer."""
    try:
        return await check.probe(evidence)
    except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
        return Verdict(False, f"could not ask: {exc}")


async def _checks(console: Console, scenario: Scenario, evidence: Evidence) -> bool:
    """Every check (each asked again until it passes, CHECK_WAIT s for all); PASS/FAIL lines."""
    if evidence.observatory is None:
        console.print("checks need the observatory, and this boutique up runs none", style="red")
        return False
    checks = [*scenario.checks, *([scenario.recovered] if scenario.recovered else [])]
    deadline = time.monotonic() + CHECK_WAIT
    console.print("checks:")
    passed = True
    for check in checks:
        while True:
            verdict = await _probe(check, evidence)
            if verdict.ok or time.monotonic() >= deadline:
                break
            await asyncio.sleep(1.0)
        passed &= verdict.ok
        mark = ("SKIP", "yellow") if verdict.skipped else ("PASS", "green")
        mark = mark if verdict.ok else ("FAIL", "red")
        console.print(Text.assemble("  ", mark, f"  {check.name}: {verdict.seen}"))
    return passed
