"""Static endpoint lists, as the `*_SERVICE_ADDR` variables give them."""

from __future__ import annotations

from dataclasses import dataclass


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
