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

    async def charge(
        self, amount: pb.Money, card: pb.CreditCardInfo, idempotency_key: str | None = None
    ) -> str:
        """Charge the card; with an idempotency key the call may be retried without charging twice."""
        request = pb.ChargeRequest(amount=amount, credit_card=card)
        if idempotency_key is None:
            return (await self._call("Charge", request)).transaction_id
        metadata = (("idempotency-key", idempotency_key),)
        return (await self._call("Charge", request, metadata=metadata, idempotent=True)).transaction_id

    async def refund(self, idempotency_key: str) -> tuple[bool, str]:
        """Void the charge made under the key (or forbid one); retried safely, since voiding is idempotent."""
        response = await self._call(
            "Refund", pb.RefundRequest(idempotency_key=idempotency_key), idempotent=True
        )
        return response.refunded, response.transaction_id
