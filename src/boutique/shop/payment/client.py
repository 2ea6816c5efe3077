"""Typed client of payment for other services; hides gRPC behind plain calls."""

from __future__ import annotations

from boutique.shop.proto import demo_pb2 as pb
from boutique.shop.proto import demo_pb2_grpc as pb_grpc
from boutique.shop.rpc import ShopClient


class PaymentClient(ShopClient):
    """Calls hipstershop.PaymentService; errors arrive as boutique.shop.errors types."""

    service = "payment"
    address_variable = "PAYMENT_SERVICE_ADDR"
    stub_type = pb_grpc.PaymentServiceStub

    async def charge(self, amount: pb.Money, card: pb.CreditCardInfo) -> str:
        request = pb.ChargeRequest(amount=amount, credit_card=card)
        return (await self._call("Charge", request)).transaction_id
