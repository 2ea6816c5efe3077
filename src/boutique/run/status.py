"""What `boutique up` shows: a live status table on a terminal, plain event lines otherwise.

rich and psutil are imported by the table alone: plain lines, and the start of `up`, need neither.
"""

from __future__ import annotations

import csv
import time
from pathlib import Path
from typing import TYPE_CHECKING

from boutique.run.supervisor import Child
from boutique.shop.services import SERVICES

if TYPE_CHECKING:
    from rich.console import Group

_COLOURS = {"SERVING": "green", "running": "green", "starting": "yellow", "stopping": "yellow"}


def _rss_mb(pid: int | None) -> str:
    import psutil

    if pid is None:
        return "-"
    try:
        process = psutil.Process(pid)
        rss = process.memory_info().rss + sum(c.memory_info().rss for c in process.children(recursive=True))
    except psutil.Error:
        return "-"
    return f"{rss / 2**20:.0f}"


def _uptime(child: Child) -> str:
    if child.pid is None:
        return "-"
    seconds = int(time.monotonic() - child.started_at)
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def load_summary(csv_prefix: Path) -> str | None:
    """One line from the load generator's Locust CSV: requests, rate and failures so far."""
    path = Path(f"{csv_prefix}_stats.csv")
    try:
        with path.open(newline="") as handle:
            rows = [row for row in csv.DictReader(handle) if row.get("Name") == "Aggregated"]
    except OSError:
        return None
    if not rows:
        return None
    row = rows[-1]
    return (
        f"load: {row.get('Request Count', '0')} requests, {float(row.get('Requests/s') or 0):.1f}/s, "
        f"{row.get('Failure Count', '0')} failed, median {row.get('Median Response Time', '?')} ms"
    )


def _not_started(service: str) -> str:
    """Why `up` runs no process for a service the user pinned elsewhere."""
    return f"not started: {SERVICES[service].address_variable} is set"


def table(
    children: list[Child], header: str, footer: list[str], external: dict[str, str] | None = None
) -> Group:
    """The live table: one row per process, then one per service the user pinned to their own address."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    grid = Table(title=header, title_justify="left", expand=False, pad_edge=False)
    for column in ("service", "instance", "pid", "address", "state", "restarts", "up", "RSS MB"):
        grid.add_column(column, no_wrap=True)
    for child in children:
        colour = _COLOURS.get(child.state, "red")
        grid.add_row(
            child.plan.service,
            child.plan.instance,
            str(child.pid or "-"),
            child.plan.address or "-",
            Text(child.state, style=colour),
            str(child.restarts),
            _uptime(child),
            _rss_mb(child.pid),
        )
    for service, address in (external or {}).items():
        state = Text(_not_started(service), style="cyan")
        grid.add_row(service, "external", "-", address, state, "-", "-", "-")
    return Group(grid, *(Text(line) for line in footer))


def event_line(child: Child) -> str:
    """A plain line for a state change, for logs and non-terminal output."""
    where = f" on {child.plan.address}" if child.plan.address else ""
    pid = f" pid {child.pid}" if child.pid else ""
    return f"{child.plan.instance}: {child.state}{where}{pid}"


def external_line(service: str, address: str) -> str:
    """A plain line for a service the user pinned: every process calls their address, ours is not run."""
    return f"{service}: external at {address} ({_not_started(service)})"
