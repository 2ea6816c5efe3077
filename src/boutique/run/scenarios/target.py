"""The running `boutique up` a scenario works on, as its state file (`<data-dir>/up.json`) describes it."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from boutique.run.up import FLAG_FILE, STATE_FILE


class NoShop(RuntimeError):
    """No running `boutique up` in the data directory; the message says how to start one."""


@dataclass(frozen=True)
class Process:
    """One process of the shop: its service, instance id, pid and addresses."""

    service: str
    instance: str
    pid: int | None
    address: str
    metrics: str | None
    state: str
    restarts: int

    @classmethod
    def from_json(cls, entry: dict[str, Any]) -> Process:
        """One entry of up.json's `processes`."""
        return cls(
            service=str(entry["service"]),
            instance=str(entry["instance"]),
            pid=entry.get("pid"),
            address=str(entry.get("address") or ""),
            metrics=entry.get("metrics"),
            state=str(entry.get("state") or ""),
            restarts=int(entry.get("restarts") or 0),
        )


@dataclass(frozen=True)
class Target:
    """A running shop: its data directory, URLs, flag file and processes."""

    data_dir: Path
    up_pid: int
    frontend_url: str
    observatory_url: str | None
    flag_file: Path
    processes: tuple[Process, ...]

    @classmethod
    def load(cls, data_dir: Path) -> Target:
        """Read up.json; NoShop when it is missing or the `up` it describes has exited."""
        path = data_dir / STATE_FILE
        hint = f"start one with `boutique up --data-dir {data_dir}` (or pass the --data-dir it uses)"
        try:
            state = json.loads(path.read_text())
        except FileNotFoundError:
            raise NoShop(f"no running boutique up: {path} does not exist; {hint}") from None
        except (OSError, ValueError) as exc:
            raise NoShop(f"cannot read {path}: {exc}") from None
        pid = int(state.get("pid") or 0)
        if not pid or not _alive(pid):
            raise NoShop(f"the boutique up of {data_dir} (pid {pid}) is not running; {hint}")
        flag_file = Path(os.environ.get("FLAGD_OFFLINE_FLAG_SOURCE_PATH") or data_dir / FLAG_FILE)
        if not flag_file.exists():
            raise NoShop(f"no flag file at {flag_file}: this boutique up does not read flags from a file")
        return cls(
            data_dir=data_dir,
            up_pid=pid,
            frontend_url=str(state["frontend_url"]),
            observatory_url=state.get("observatory_url"),
            flag_file=flag_file,
            processes=tuple(Process.from_json(entry) for entry in state.get("processes", [])),
        )

    def refreshed(self) -> Target:
        """The same shop as up.json describes it now (pids change when the supervisor restarts one)."""
        return Target.load(self.data_dir)

    def instances(self, service: str) -> list[Process]:
        """The processes of one service, in instance order."""
        return [p for p in self.processes if p.service == service]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
