"""Prometheus scraping from the registry: a prometheus.yml using file_sd, and the targets file kept current."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from boutique.mesh.instance import Instance
from boutique.mesh.registry.client import RegistryClient, RegistryError

log = logging.getLogger(__name__)

METRICS_PORT = "metrics"
# Prometheus' duration syntax: units from largest to smallest, each at most once (e.g. 1m30s, 500ms).
_PROMETHEUS_DURATION = re.compile(r"^(?!$)(\d+y)?(\d+w)?(\d+d)?(\d+h)?(\d+m)?(\d+s)?(\d+ms)?$")

TargetGroup = dict[str, Any]


def _address(host: str, port: int) -> str:
    """host:port, with an IPv6 host in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def targets(services: Mapping[str, Sequence[Instance]]) -> list[TargetGroup]:
    """file_sd groups, one per instance with a metrics port, labelled by service and instance id.

    Sorted by service, instance id and address, so an unchanged registry renders to the same bytes.
    """
    groups = [
        {
            "targets": [_address(instance.host, instance.ports[METRICS_PORT])],
            "labels": {"service": name, "instance": instance.id},
        }
        for name, instances in services.items()
        for instance in instances
        if METRICS_PORT in instance.ports
    ]
    return sorted(groups, key=lambda g: (g["labels"]["service"], g["labels"]["instance"], g["targets"]))


def render_targets(groups: Sequence[TargetGroup]) -> str:
    """The targets file's text: a JSON list of groups with sorted keys, ending in a newline."""
    return json.dumps(list(groups), indent=2, sort_keys=True) + "\n"


def prometheus_duration(seconds: float) -> str:
    """Seconds as a Prometheus duration ('2s', '500ms'); at least 1ms."""
    millis = max(1, round(seconds * 1000))
    return f"{millis // 1000}s" if millis % 1000 == 0 else f"{millis}ms"


def _check_duration(name: str, value: str) -> str:
    """`value` when it is a Prometheus duration; ValueError naming the option otherwise."""
    if not _PROMETHEUS_DURATION.match(value) or not any(ch in "123456789" for ch in value):
        raise ValueError(f"{name} {value!r} is not a positive Prometheus duration (use e.g. 15s, 1m, 500ms)")
    return value


def _quote(text: str) -> str:
    """A YAML double-quoted scalar (JSON string syntax is a subset of it)."""
    return json.dumps(text)


def scrape_config(
    targets_file: Path,
    interval: str,
    job: str = "boutique",
    refresh_interval: str = "30s",
    credentials_file: Path | None = None,
) -> str:
    """prometheus.yml text: one job scraping /metrics of every target in `targets_file` every `interval`.

    Prometheus watches the targets file for changes; `refresh_interval` is its fallback re-read.
    With `credentials_file`, scrapes send its content as a bearer token (metrics ports off loopback
    require BOUTIQUE_STATUS_TOKEN), so the token itself stays out of this file.
    """
    _check_duration("scrape interval", interval)
    _check_duration("refresh interval", refresh_interval)
    lines = [
        "# Written by `boutique prometheus-config`; targets come from the service registry.",
        "global:",
        f"  scrape_interval: {interval}",
        f"  evaluation_interval: {interval}",
        "scrape_configs:",
        f"  - job_name: {_quote(job)}",
        "    metrics_path: /metrics",
        "    scheme: http",
    ]
    if credentials_file is not None:
        lines += [
            "    authorization:",
            "      type: Bearer",
            f"      credentials_file: {_quote(str(credentials_file.absolute()))}",
        ]
    lines += [
        "    file_sd_configs:",
        "      - files:",
        f"          - {_quote(str(targets_file.absolute()))}",
        f"        refresh_interval: {refresh_interval}",
    ]
    return "\n".join(lines) + "\n"


def write_atomically(path: Path, text: str, mode: int = 0o644) -> None:
    """Replace `path` with `text` in one step (temp file in the same directory, then os.replace).

    A reader such as Prometheus sees the old file or the new one, never a partial one.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temp, mode)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


@dataclass(frozen=True)
class Change:
    """What one rewrite of the targets file did: targets ("instance@host:port") added and removed, new total."""

    added: tuple[str, ...]
    removed: tuple[str, ...]
    total: int


def _keys(groups: Iterable[TargetGroup]) -> set[str]:
    """Every target of the groups as "instance@host:port" (a restart on a new port is one out, one in)."""
    return {
        f"{group.get('labels', {}).get('instance', '')}@{address}"
        for group in groups
        for address in group.get("targets", [])
    }


def _read_groups(path: Path) -> list[TargetGroup]:
    """The groups in an existing targets file; an absent or unreadable file counts as none."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    return [group for group in data if isinstance(group, dict)] if isinstance(data, list) else []


class TargetsFile:
    """The file_sd targets file: rewritten only when its content would change."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._groups = _read_groups(path)
        self._text = render_targets(self._groups) if path.exists() else None

    def update(self, services: Mapping[str, Sequence[Instance]]) -> Change | None:
        """Write the targets of `services` when they differ from the file's; the change, or None."""
        groups = targets(services)
        text = render_targets(groups)
        if text == self._text:
            return None
        before, after = _keys(self._groups), _keys(groups)
        write_atomically(self.path, text)
        self._groups, self._text = groups, text
        return Change(tuple(sorted(after - before)), tuple(sorted(before - after)), len(groups))


async def write_once(url: str, token: str | None, path: Path) -> Change | None:
    """Read the registry once and write the targets file (RegistryError when it is unreachable)."""
    async with RegistryClient(url, token) as client:
        return TargetsFile(path).update(await client.services())


async def watch(
    url: str, token: str | None, path: Path, refresh: float = 2.0, stop: asyncio.Event | None = None
) -> None:
    """Poll the registry every `refresh` seconds and keep `path` current, until `stop` is set or cancelled.

    Each rewrite logs one line with the counts added and removed. While the registry is unreachable
    the file keeps its last targets: an outage never empties it.
    """
    stop = stop or asyncio.Event()
    targets_file = TargetsFile(path)
    failing = False
    async with RegistryClient(url, token) as client:
        while not stop.is_set():
            try:
                services = await client.services()
            except RegistryError as exc:
                if not failing:
                    log.warning(
                        "cannot read the registry; keeping the last targets",
                        extra={"registry": url, "error": exc.reason, "path": str(path)},
                    )
                failing = True
            else:
                if failing:
                    log.info("registry reachable again", extra={"registry": url})
                failing = False
                try:
                    change = targets_file.update(services)
                except OSError as exc:  # a full disk or a removed directory: try again next round
                    log.error("cannot write the targets file", extra={"path": str(path), "error": str(exc)})
                    change = None
                if change is not None:
                    log.info(
                        "prometheus targets changed",
                        extra={
                            "added": len(change.added),
                            "removed": len(change.removed),
                            "targets": change.total,
                            "path": str(path),
                        },
                    )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), refresh)
