"""A payment address that does not answer, where checkout sends charges while paymentUnreachable is on.

The address is a loopback port this process binds and never listens on: a connection to it is refused
at once (the gRPC call fails UNAVAILABLE), and no other program can take the port while it is held. The
client to it is a mesh dependency of its own, `payment-unreachable`, with the breaker every dependency
has, listed in this process's mesh: the Mesh page shows its calls failing and its breaker opening.
Errors still name payment (`PaymentClient.service`), so the shopper is told payment is unavailable.
Once the flag is off again the client is closed and the dependency leaves the mesh (a `FlagWatch`), so
the Mesh page does not go on showing an open breaker nobody calls.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable

from boutique.mesh.discovery import StaticResolver
from boutique.mesh.grpc_client import GrpcDependency
from boutique.mesh.runtime import Mesh
from boutique.shop.flag_watch import FlagWatch
from boutique.shop.payment.client import PaymentClient

log = logging.getLogger(__name__)

DEPENDENCY = "payment-unreachable"


def silent_address(host: str = "127.0.0.1") -> tuple[socket.socket, str]:
    """A bound, never listening TCP socket and its host:port (connections to it are refused)."""
    held = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    held.bind((host, 0))
    return held, f"{host}:{held.getsockname()[1]}"


class UnreachablePayment:
    """Makes, on first use, the payment client pinned to a silent address, and keeps it in `mesh`."""

    def __init__(self, mesh: Mesh, is_on: Callable[[], bool], every: float | None = None) -> None:
        self.mesh = mesh
        self.address = ""
        self._held: socket.socket | None = None
        self._client: PaymentClient | None = None
        self._closing: set[asyncio.Task[None]] = set()
        self.watch = FlagWatch("paymentUnreachable", is_on, self._release, *([every] if every else []))

    def __call__(self) -> PaymentClient:
        """The client (the same one on every call)."""
        if self._client is None:
            self._held, self.address = silent_address()
            resolver = StaticResolver([self.address])
            dependency = GrpcDependency(
                DEPENDENCY, resolver, PaymentClient.stub_type, PaymentClient.policy(), self.mesh.caller
            )
            self.mesh.dependencies[DEPENDENCY] = dependency  # listed in /mesh/status, closed with the mesh
            self._client = PaymentClient(dependency)
            log.warning(
                "charges go to a payment address that does not answer", extra={"address": self.address}
            )
        self.watch.arm()
        return self._client

    def _release(self) -> None:
        """The flag is off: close the client in the background (the watch calls this on the loop)."""
        task = asyncio.get_running_loop().create_task(self.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        """Close the client and release the port."""
        client, self._client = self._client, None
        held, self._held = self._held, None
        if client is not None:
            self.mesh.dependencies.pop(DEPENDENCY, None)  # before the await: a new client may come meanwhile
            await client.close()
        if held is not None:
            held.close()
