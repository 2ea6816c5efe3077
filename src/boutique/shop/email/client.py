"""Typed client of the email service for other services; hides gRPC behind plain calls."""

from __future__ import annotations

from boutique.shop.proto import demo_pb2 as pb
from boutique.shop.proto import demo_pb2_grpc as pb_grpc
from boutique.shop.rpc import ShopClient


class EmailClient(ShopClient):
    """Calls hipstershop.EmailService; errors arrive as boutique.shop.errors types."""

    service = "email"
    address_variable = "EMAIL_SERVICE_ADDR"
    stub_type = pb_grpc.EmailServiceStub
    # The email service sends one mail per order id, so a retried confirmation is never a second mail.
    idempotent = frozenset({"SendOrderConfirmation"})

    async def send_order_confirmation(self, email: str, order: pb.OrderResult) -> None:
        """Ask the email service to mail the confirmation of `order` to `email`."""
        await self._call("SendOrderConfirmation", pb.SendOrderConfirmationRequest(email=email, order=order))
