"""What a scenario is: the faults it sets, the traffic it drives, where to look and what must show."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from boutique.run.scenarios.search import Search
from boutique.run.scenarios.shoppers import Traffic

if TYPE_CHECKING:
    from boutique.run.scenarios.evidence import Evidence
    from boutique.run.scenarios.target import Target


@dataclass(frozen=True)
class FlagSetting:
    """One flag set for the scenario: a variant, for every evaluation or those matching `when`/`percent`."""

    flag: str
    variant: str
    when: Mapping[str, str] | None = None
    percent: float | None = None

    def describe(self) -> str:
        """`flag=variant (key=value, 50%)` as the scenario prints it."""
        rule = [f"{key}={value}" for key, value in sorted((self.when or {}).items())]
        if self.percent is not None:
            rule.append(f"{self.percent:g}%")
        return f"{self.flag}={self.variant}" + (f" ({', '.join(rule)})" if rule else "")


@dataclass(frozen=True)
class Verdict:
    """The outcome of one check: passed or not, and what was seen."""

    ok: bool
    seen: str
    skipped: bool = False  # the check does not apply to this shop (ok stays True); `seen` says why


@dataclass(frozen=True)
class Check:
    """One piece of evidence the observatory must show; `probe` is asked until it passes or time runs out."""

    name: str
    probe: Callable[[Evidence], Awaitable[Verdict]]


@dataclass(frozen=True)
class Look:
    """Where the evidence is: trace searches (the first that finds a trace gives the example trace), the
    service whose RED chart moves, the Mesh page, the flame graph that shows the cause, and what to see
    there."""

    searches: tuple[Search, ...]
    service_page: str = ""
    mesh: bool = False
    notes: tuple[str, ...] = ()
    profile: tuple[str, str] | None = None  # (service, type): the flame graph that shows the cause


Undo = Callable[[], None]


@dataclass(frozen=True)
class Stage:
    """What an action works with: the shop, the run's evidence, its length, who acts, and where to report."""

    target: Target
    evidence: Evidence
    duration: float
    by: str
    say: Callable[[str], None]


ActionFn = Callable[[Stage], Awaitable[Undo | None]]


@dataclass(frozen=True)
class Action:
    """A fault made on processes (kill, stop) at a point of the run, rather than through a flag."""

    describe: str
    at: float  # share of the duration after which it happens (0 = at once)
    run: ActionFn


@dataclass(frozen=True)
class Scenario:
    """A guided failure: what it breaks, how, under which traffic, where to look and what must show."""

    name: str
    title: str
    breaks: str  # what breaks and what the shop should do about it, a short paragraph
    flags: tuple[FlagSetting, ...] = ()
    actions: tuple[Action, ...] = ()
    traffic: Traffic = field(default_factory=Traffic)
    look: Look = Look((Search("frontend"),))
    checks: tuple[Check, ...] = ()
    # Lift the faults after the duration and keep the traffic going until `recovered` passes (at most
    # `recovery` seconds): for scenarios whose point is that the shop heals.
    recovery: float = 0.0
    recovered: Check | None = None
    replicas: Mapping[str, int] = field(default_factory=dict)  # instances the scenario is best seen with
