"""Process faults made by `boutique chaos` (and the scenarios), read back to mark them on service charts.

`boutique chaos` appends one JSON object per line to `<data-dir>/chaos.jsonl`: `time` (unix seconds),
`action` (kill, recovered, stop, slow, resumed…), `service`, `instance`, `pid`, `duration` (seconds),
`by`, and per action `cpu` or `new_pid`. That line format is the whole contract: the observatory imports
nothing of the runner. A line that is not such an object is skipped, so a torn last line costs only itself.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from boutique.observatory.ui import charts
from boutique.observatory.ui.pages import duration

MAX_BYTES = 4 * 1024 * 1024  # the newest part of a long log is read; older actions are outside any window


@dataclass(frozen=True)
class Action:
    """One process fault: when, what, on which instance, for how long and by whom."""

    time: float
    action: str
    service: str
    instance: str
    duration: float
    by: str
    detail: dict[str, Any]

    def event(self) -> charts.Event:
        """The action as a chart marker: `kill cart-1`, with the whole record in its tooltip."""
        at_us = int(self.time * 1_000_000)
        label = f"{self.action} {self.instance}"
        lasting = f" for {duration(self.duration * 1e6)}" if self.duration and self.action != "kill" else ""
        cpu = f" at {self.detail['cpu']:.0%} CPU" if isinstance(self.detail.get("cpu"), int | float) else ""
        tooltip = f"{charts.clock(at_us, seconds=True)} UTC · chaos: {label}{cpu}{lasting}, by {self.by}"
        return charts.Event(at_us, label, tooltip)


def _action(entry: Any) -> Action | None:
    """The record as an Action, None when it is not one."""
    if not isinstance(entry, dict):
        return None
    try:
        return Action(
            time=float(entry["time"]),
            action=str(entry["action"]),
            service=str(entry["service"]),
            instance=str(entry.get("instance") or entry["service"]),
            duration=float(entry.get("duration") or 0.0),
            by=str(entry.get("by") or "someone"),
            detail={
                k: v for k, v in entry.items() if k not in ("time", "action", "service", "instance", "by")
            },
        )
    except (KeyError, TypeError, ValueError):
        return None


def read_actions(path: Path, service: str, start: float, end: float) -> list[Action]:
    """The actions on `service`'s instances between `start` and `end` (unix seconds), oldest first."""
    try:
        with path.open("rb") as log:
            size = log.seek(0, 2)
            log.seek(max(0, size - MAX_BYTES))
            text = log.read().decode(errors="replace")
    except OSError:  # no chaos yet, or the log cannot be read: nothing to mark
        return []
    found = []
    for line in text.splitlines():
        try:
            action = _action(json.loads(line))
        except ValueError:
            continue
        if action is not None and action.service == service and start <= action.time <= end:
            found.append(action)
    return sorted(found, key=lambda a: a.time)
