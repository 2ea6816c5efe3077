"""A payment address that does not answer, where checkout sends charges while paymentUnreachable is on.

The address is a loopback port this process binds and never listens on: a connection to it is refused
at once (the gRPC call fails UNAVAILABLE), and no other program can take the port while it is held. The
client to it is a mesh dependency of its own, `payment-unreachable`, with the breaker every dependency
has, listed in this process's mesh: the Mesh page shows its calls failing and its breaker opening.
Errors still name payment (`PaymentClient.service`), so the shopper is told payment is unavailable.
"""

from __future__ import annotations

import logging
import socket

from boutique.mesh.discovery import StaticResolver
from boutique.mesh.grpc_client import GrpcDependency
from boutique.mesh.runtime import Mesh
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

    def __init__(self, mesh: Mesh) -> None:
        self.mesh = mesh
        self.address = ""
        self._held: socket.socket | None = None
        self._client: PaymentClient | None = None

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
        return self._client

    async def close(self) -> None:
        """Close the client and release the port."""
        client, self._client = self._client, None
        if client is not None:
            await client.close()
            self.mesh.dependencies.pop(DEPENDENCY, None)
        if self._held is not None:
            self._held.close()
            self._held = None
