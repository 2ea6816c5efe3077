"""`boutique scenario list | run NAME`: the guided failures, against the `boutique up` of a data directory."""

from __future__ import annotations

import argparse
import sys

from rich.console import Console

from boutique.mesh import parse_duration
from boutique.run.scenarios.catalogue import BY_NAME, SCENARIOS
from boutique.run.scenarios.runner import run_scenario
from boutique.run.scenarios.target import NoShop, Target

MAX_DURATION = 600.0


def run_command(args: argparse.Namespace) -> int:
    """List the scenarios, or run one: 0 done, 1 a check failed, 2 bad input or no shop, 130 interrupted."""
    console = Console(highlight=False, markup=False, soft_wrap=True)  # URLs and tags print as they are
    if args.action == "list":
        return _list(console)
    scenario = BY_NAME.get(args.name)
    if scenario is None:
        print(
            f"boutique scenario: no scenario {args.name!r} (choose from {', '.join(BY_NAME)})",
            file=sys.stderr,
        )
        return 2
    try:
        duration = parse_duration(args.duration)
        if not 0 < duration <= MAX_DURATION:
            raise ValueError(
                f"--duration {args.duration} must be above 0 and at most {MAX_DURATION / 60:.0f}m"
            )
        target = Target.load(args.data_dir.resolve())
    except (ValueError, NoShop) as exc:
        print(f"boutique scenario: {exc}", file=sys.stderr)
        return 2
    if args.check and not target.observatory_url:
        print("boutique scenario: --check needs the observatory; this boutique up runs none", file=sys.stderr)
        return 2
    return run_scenario(scenario, target, duration, args.check, console)


def _list(console: Console) -> int:
    width = max(len(s.name) for s in SCENARIOS)
    for scenario in SCENARIOS:
        faults = [f.describe() for f in scenario.flags] + [a.describe for a in scenario.actions]
        console.print(f"{scenario.name:<{width}}  {scenario.title}", highlight=False)
        console.print(
            f"{'':<{width}}  fault: {'; '.join(faults) or 'none: the traffic itself'}", highlight=False
        )
    console.print("\nrun one: boutique scenario run NAME [--check] [--duration 30s] [--data-dir DIR]")
    return 0
