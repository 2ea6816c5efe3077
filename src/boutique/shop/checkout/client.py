"""Typed client of the checkout for other services; hides gRPC behind plain calls."""

from __future__ import annotations

from boutique.shop.proto import demo_pb2 as pb
from boutique.shop.proto import demo_pb2_grpc as pb_grpc
from boutique.shop.rpc import ShopClient

PLACE_ORDER_TIMEOUT = 15.0


class CheckoutClient(ShopClient):
    """Calls hipstershop.CheckoutService; errors arrive as boutique.shop.errors types."""

    service = "checkout"
    address_variable = "CHECKOUT_SERVICE_ADDR"
    stub_type = pb_grpc.CheckoutServiceStub

    async def place_order(
        self,
        user_id: str,
        user_currency: str,
        address: pb.Address,
        email: str,
        card: pb.CreditCardInfo,
        order_key: str | None = None,
    ) -> pb.OrderResult:
        """Place an order for the user's cart; the deadline is longer since checkout calls six services.

        With an order key, placing is idempotent (the same key returns the same order), so a call that
        failed on the way is retried on another instance.
        """
        request = pb.PlaceOrderRequest(
            user_id=user_id, user_currency=user_currency, address=address, email=email, credit_card=card
        )
        metadata = (("idempotency-key", order_key),) if order_key else ()
        response = await self._call(
            "PlaceOrder",
            request,
            timeout=max(self.timeout, PLACE_ORDER_TIMEOUT),
            metadata=metadata,
            idempotent=bool(order_key),
        )
        return response.order

    async def get_order(self, order_key: str, user_id: str) -> pb.GetOrderResponse:
        """What became of the order placed under the key (for this shopper)."""
        request = pb.GetOrderRequest(order_key=order_key, user_id=user_id)
        return await self._call("GetOrder", request, idempotent=True)
