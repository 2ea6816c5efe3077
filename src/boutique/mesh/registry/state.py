"""The registry's in-memory state: instances under TTL leases, per-service indexes and blocking waits.

Pure and loop-agnostic (the clock is injected), so time-based behaviour can be tested with a logical
clock. Every change to a service's instance set moves its index forward; watchers blocked on an index
wake as soon as it moves.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import logging
import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from boutique.mesh.instance import CRITICAL, PASSING, Instance

log = logging.getLogger(__name__)

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
PORT_NAME_PATTERN = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,31}")
METADATA_KEY_PATTERN = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
HOSTNAME_PATTERN = re.compile(rf"(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*")
MIN_TTL = 1.0
MAX_TTL = 3600.0
MIN_CHECK_INTERVAL = 0.5
MAX_CHECK_INTERVAL = 3600.0
MAX_INSTANCES = 10_000
MAX_SERVICES = 1_000
MAX_PORTS = 16
MAX_METADATA = 32
MAX_METADATA_VALUE = 512
CHECK_TYPES = ("grpc", "http")
STATUSES = (PASSING, CRITICAL)


class LimitExceeded(Exception):
    """The registry holds as many services or instances as it allows; nothing was added."""


@dataclass(frozen=True)
class CheckSpec:
    """An active health check: probe `port` (a port name of the instance) by gRPC health or HTTP GET."""

    kind: str
    port: str
    path: str = "/healthz"
    interval: float = 10.0

    def to_json(self) -> dict[str, object]:
        """The API's JSON shape of a check."""
        return {"type": self.kind, "port": self.port, "path": self.path, "interval": self.interval}


@dataclass(frozen=True)
class Record:
    """One registered instance with its lease; `check_generation` changes whenever its check does."""

    instance: Instance
    ttl: float
    expires_at: float
    check: CheckSpec | None = None
    check_generation: int = 0


@dataclass(frozen=True)
class Registered:
    """The outcome of a register call: the stored record, whether it was new, the service's index."""

    record: Record
    created: bool
    index: int


@dataclass
class _Watch:
    """Watchers blocked on one service: an event set (and replaced) on the next change."""

    event: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    waiters: int = 0


def validate_name(kind: str, name: str) -> None:
    """Raise ValueError unless `name` is a valid service name or instance id."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise ValueError(
            f"{kind} {name!r} is not a valid name (1-128 characters: letters, digits, '.', '_', '-';"
            " starting with a letter or digit)"
        )


def validate_ttl(ttl: float) -> None:
    """Raise ValueError unless the lease TTL lies between 1 s and 1 h."""
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not math.isfinite(ttl):
        raise ValueError("ttl must be a number of seconds")
    if not MIN_TTL <= ttl <= MAX_TTL:
        raise ValueError(f"ttl must be between {MIN_TTL:g}s and {MAX_TTL:g}s (got {ttl:g}s)")


def validate_host(host: str) -> None:
    """Raise ValueError unless `host` is an IP address or a DNS host name."""
    if not isinstance(host, str) or not host:
        raise ValueError("address must be a non-empty IP address or host name")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if not HOSTNAME_PATTERN.fullmatch(host):
            raise ValueError(f"address {host!r} is neither an IP address nor a host name") from None


def validate_instance(instance: Instance) -> None:
    """Raise ValueError naming the first thing wrong with an instance (names, host, ports, metadata)."""
    validate_name("service", instance.service)
    validate_name("instance id", instance.id)
    validate_host(instance.host)
    if not instance.ports:
        raise ValueError("ports must name at least one port, e.g. {'grpc': 50051}")
    if len(instance.ports) > MAX_PORTS:
        raise ValueError(f"at most {MAX_PORTS} ports")
    for name, number in instance.ports.items():
        if not isinstance(name, str) or not PORT_NAME_PATTERN.fullmatch(name):
            raise ValueError(f"port name {name!r} is not valid (a letter, then letters, digits, '_', '-')")
        if isinstance(number, bool) or not isinstance(number, int) or not 0 < number < 65536:
            raise ValueError(f"port {name!r} must be an integer between 1 and 65535 (got {number!r})")
    if len(instance.metadata) > MAX_METADATA:
        raise ValueError(f"at most {MAX_METADATA} metadata entries")
    for key, value in instance.metadata.items():
        if not isinstance(key, str) or not METADATA_KEY_PATTERN.fullmatch(key):
            raise ValueError(f"metadata key {key!r} is not valid (1-64 letters, digits, '_', '.', '-')")
        if not isinstance(value, str) or len(value) > MAX_METADATA_VALUE:
            raise ValueError(f"metadata {key!r} must be a string of at most {MAX_METADATA_VALUE} characters")


def validate_check(check: CheckSpec, ports: Mapping[str, int]) -> None:
    """Raise ValueError unless the check has a known type, one of the instance's ports, a sane interval."""
    if check.kind not in CHECK_TYPES:
        raise ValueError(f"check type must be one of {', '.join(CHECK_TYPES)} (got {check.kind!r})")
    if check.port not in ports:
        raise ValueError(f"check port {check.port!r} is not one of the instance's ports ({', '.join(ports)})")
    if not check.path.startswith("/") or len(check.path) > 1024 or any(c <= " " for c in check.path):
        raise ValueError(f"check path {check.path!r} must start with '/' and contain no spaces")
    interval = check.interval
    if not math.isfinite(interval) or not MIN_CHECK_INTERVAL <= interval <= MAX_CHECK_INTERVAL:
        raise ValueError(
            f"check interval must be between {MIN_CHECK_INTERVAL:g}s and {MAX_CHECK_INTERVAL:g}s"
            f" (got {interval:g}s)"
        )


class RegistryState:
    """Instances by service under TTL leases, with a global index and one index per service.

    A service's index is the global index at its last change, so it only ever grows — also across
    the service emptying and coming back. Unknown services report a floor index (at least the
    first index) so a watcher can block on a service before any instance of it exists.
    """

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        max_instances: int = MAX_INSTANCES,
        max_services: int = MAX_SERVICES,
        first_index: int = 1,
    ) -> None:
        self._clock = clock
        self.max_instances = max_instances
        self.max_services = max_services
        self._services: dict[str, dict[str, Record]] = {}
        self._count = 0
        self._index = max(1, first_index)
        self._service_index: dict[str, int] = {}
        self._tombstones: dict[str, int] = {}
        self._floor = self._index
        self._changed_at: dict[str, float] = {}
        self._watches: dict[str, _Watch] = {}
        self._generation = 0
        self._next_expiry = math.inf
        self.on_remove: list[Callable[[Record], None]] = []

    # ---- reading -------------------------------------------------------------------------------

    @property
    def index(self) -> int:
        """The global index: moves on every change to any service."""
        return self._index

    def now(self) -> float:
        """The state's clock (the one leases are measured on)."""
        return self._clock()

    def index_of(self, service: str) -> int:
        """The index of one service (the floor for services the registry does not know)."""
        return self._service_index.get(service) or self._tombstones.get(service) or self._floor

    def get(self, service: str, instance_id: str) -> Record | None:
        """The live record of one instance, or None."""
        self.expire()
        return self._services.get(service, {}).get(instance_id)

    def instances(self, service: str, any_status: bool = False) -> tuple[list[Instance], int]:
        """The service's instances sorted by id (passing ones unless `any_status`) and its index."""
        self.expire()
        return self._snapshot(service, any_status), self.index_of(service)

    def services(self) -> tuple[dict[str, list[Instance]], int]:
        """Every service with all its instances, and the global index."""
        self.expire()
        return {name: self._snapshot(name, True) for name in sorted(self._services)}, self._index

    def counts(self) -> tuple[int, int]:
        """(number of services, number of instances) currently registered."""
        self.expire()
        return len(self._services), self._count

    def waiting(self, service: str | None = None) -> int:
        """How many blocking queries are waiting (on one service, or on any)."""
        if service is not None:
            watch = self._watches.get(service)
            return watch.waiters if watch else 0
        return sum(watch.waiters for watch in self._watches.values())

    def _snapshot(self, service: str, any_status: bool) -> list[Instance]:
        """The service's instances sorted by id, optionally only passing ones."""
        records = self._services.get(service, {})
        return [
            records[key].instance
            for key in sorted(records)
            if any_status or records[key].instance.status == PASSING
        ]

    # ---- changing ------------------------------------------------------------------------------

    def register(self, instance: Instance, ttl: float, check: CheckSpec | None = None) -> Registered:
        """Register or renew an instance; anything changed besides the lease expiry moves the index.

        A new instance starts passing (it registers when ready); a renewal keeps the status its
        check gave it. Raises ValueError for invalid input and LimitExceeded when full.
        """
        validate_instance(instance)
        validate_ttl(ttl)
        if check is not None:
            validate_check(check, instance.ports)
        self.expire()
        records = self._services.get(instance.service)
        old = records.get(instance.id) if records is not None else None
        if old is None:
            if self._count >= self.max_instances:
                raise LimitExceeded(f"the registry is full ({self.max_instances} instances)")
            if records is None and len(self._services) >= self.max_services:
                raise LimitExceeded(f"the registry is full ({self.max_services} services)")
        status = PASSING
        generation = 0
        if old is not None and old.check == check:
            generation = old.check_generation
            status = old.instance.status
        elif check is not None:
            self._generation += 1
            generation = self._generation
            status = old.instance.status if old is not None else PASSING
        stored = dataclasses.replace(
            instance, ports=dict(instance.ports), metadata=dict(instance.metadata), status=status
        )
        now = self._clock()
        record = Record(stored, float(ttl), now + ttl, check, generation)
        if records is None:
            records = self._services[instance.service] = {}
            self._tombstones.pop(instance.service, None)
        records[instance.id] = record
        self._next_expiry = min(self._next_expiry, record.expires_at)
        if old is None:
            self._count += 1
            self._bump(instance.service)
        elif (old.instance, old.ttl, old.check) != (stored, record.ttl, check):
            self._bump(instance.service)
        return Registered(record, old is None, self.index_of(instance.service))

    def deregister(self, service: str, instance_id: str) -> Record | None:
        """Remove an instance; returns its record, or None when it was not registered."""
        self.expire()
        record = self._services.get(service, {}).get(instance_id)
        if record is not None:
            self._remove(record)
        return record

    def set_status(self, service: str, instance_id: str, status: str, generation: int | None = None) -> bool:
        """Set an instance's health status (from a check); True when it changed, which moves the index.

        With `generation`, the update applies only while the instance still has that check.
        """
        if status not in STATUSES:
            raise ValueError(f"status must be one of {', '.join(STATUSES)}")
        record = self._services.get(service, {}).get(instance_id)
        if record is None or record.instance.status == status:
            return False
        if generation is not None and record.check_generation != generation:
            return False
        instance = dataclasses.replace(record.instance, status=status)
        self._services[service][instance_id] = dataclasses.replace(record, instance=instance)
        self._bump(service)
        return True

    def expire(self) -> list[Record]:
        """Remove every instance whose lease ran out; returns the removed records."""
        now = self._clock()
        if now < self._next_expiry:
            return []
        removed: list[Record] = []
        next_expiry = math.inf
        for records in self._services.values():
            for record in records.values():
                if record.expires_at <= now:
                    removed.append(record)
                else:
                    next_expiry = min(next_expiry, record.expires_at)
        self._next_expiry = next_expiry
        for record in removed:
            self._remove(record)
        return removed

    def _remove(self, record: Record) -> None:
        """Drop a record, move the index, remember the index of a service that emptied."""
        service = record.instance.service
        records = self._services[service]
        del records[record.instance.id]
        self._count -= 1
        self._bump(service)
        if not records:
            del self._services[service]
            self._tombstones[service] = self._service_index.pop(service)
            while len(self._tombstones) > self.max_services:
                oldest = next(iter(self._tombstones))
                self._floor = max(self._floor, self._tombstones.pop(oldest))
        for hook in list(self.on_remove):
            try:
                hook(record)
            except Exception:
                log.exception("registry removal hook failed")

    def changed_at(self, service: str) -> float | None:
        """Wall-clock time of the service's last change (lets watchers measure how late they learn of it)."""
        return self._changed_at.get(service)

    def _bump(self, service: str) -> None:
        """Move the global index, stamp it on the service and wake the service's watchers."""
        self._index += 1
        self._service_index[service] = self._index
        self._changed_at[service] = time.time()
        watch = self._watches.pop(service, None)
        if watch is not None:
            watch.event.set()

    # ---- waiting -------------------------------------------------------------------------------

    async def wait_for_change(
        self, service: str, index: int, timeout: float, any_status: bool = False
    ) -> tuple[list[Instance], int]:
        """Block while the service's index is still `index` (at most `timeout` s); then its instances.

        Returns at once when the index already differs; returns the unchanged set when the wait
        runs out. Leases are checked on every wake-up; a periodic `expire()` wakes watchers when
        a lease runs out while they wait.
        """
        self.expire()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, timeout)
        while self.index_of(service) == index:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            watch = self._watches.get(service)
            if watch is None:
                watch = self._watches[service] = _Watch()
            watch.waiters += 1
            try:
                async with asyncio.timeout(remaining):
                    await watch.event.wait()
            except TimeoutError:
                pass
            finally:
                watch.waiters -= 1
                if watch.waiters == 0 and self._watches.get(service) is watch:
                    del self._watches[service]
            self.expire()
        return self.instances(service, any_status)
