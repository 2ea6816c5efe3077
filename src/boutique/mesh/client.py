"""Client side for static addresses: one channel per endpoint, picked round-robin."""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import grpc

Stub = TypeVar("Stub")


@dataclass(frozen=True)
class StaticEndpoints:
    """A fixed list of host:port endpoints, as the `*_SERVICE_ADDR` variables give them."""

    addresses: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> StaticEndpoints:
        """Parse 'host:port' or a comma list of them; raise ValueError naming the bad entry."""
        addresses = tuple(part.strip() for part in text.split(",") if part.strip())
        if not addresses:
            raise ValueError("no address given")
        for address in addresses:
            host, sep, port = address.rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"not a host:port address: {address!r}")
        return cls(addresses)

    @classmethod
    def from_env(cls, variable: str) -> StaticEndpoints:
        """Read the endpoints from an environment variable; a clear error when it is unset."""
        value = os.environ.get(variable, "")
        if not value.strip():
            raise RuntimeError(f"{variable} is not set: give the host:port of that service")
        try:
            return cls.parse(value)
        except ValueError as exc:
            raise RuntimeError(f"{variable}: {exc}") from exc


class ChannelPool(Generic[Stub]):
    """One grpc.aio channel and stub per endpoint; `stub()` returns the next one round-robin."""

    def __init__(self, endpoints: StaticEndpoints, stub_factory: Callable[[grpc.aio.Channel], Stub]) -> None:
        self.endpoints = endpoints
        self._channels = [grpc.aio.insecure_channel(address) for address in endpoints.addresses]
        self._stubs: Sequence[Stub] = [stub_factory(channel) for channel in self._channels]
        self._next = itertools.cycle(range(len(self._stubs)))

    def stub(self) -> Stub:
        """The stub for the next endpoint."""
        return self._stubs[next(self._next)]

    async def close(self) -> None:
        """Close every channel."""
        for channel in self._channels:
            await channel.close()


def call_metadata(pairs: dict[str, str] | None = None) -> tuple[tuple[str, str], ...]:
    """Metadata tuple for an outgoing call."""
    return tuple((pairs or {}).items())
