"""gRPC face of the email service: decode, call EmailService, encode."""

from __future__ import annotations

import grpc

from boutique.mesh import ServiceBinding
from boutique.shop.email.service import EmailService
from boutique.shop.proto import demo_pb2 as pb
from boutique.shop.rpc import binding, run_server

SERVICE = "email"


class EmailServicer:
    """Implements hipstershop.EmailService."""

    def __init__(self, service: EmailService) -> None:
        self.service = service

    async def SendOrderConfirmation(
        self, request: pb.SendOrderConfirmationRequest, context: grpc.aio.ServicerContext
    ) -> pb.Empty:
        await self.service.send_order_confirmation(request.email, request.order)
        return pb.Empty()


def bindings(service: EmailService | None = None) -> list[ServiceBinding]:
    """The email service's gRPC services; configured from the environment unless a service is given."""
    return [binding("EmailService", EmailServicer(service or EmailService.from_env()))]


async def serve() -> None:
    """Run the email service until SIGTERM."""
    await run_server(SERVICE, bindings())
