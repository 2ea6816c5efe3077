"""Typed client of the cart for other services; hides gRPC behind plain calls."""

from __future__ import annotations

import uuid

from boutique.shop.proto import demo_pb2 as pb
from boutique.shop.proto import demo_pb2_grpc as pb_grpc
from boutique.shop.rpc import ShopClient


class CartClient(ShopClient):
    """Calls hipstershop.CartService; errors arrive as boutique.shop.errors types."""

    service = "cart"
    address_variable = "CART_SERVICE_ADDR"
    stub_type = pb_grpc.CartServiceStub
    idempotent = frozenset({"GetCart", "EmptyCart"})

    async def add_item(self, user_id: str, product_id: str, quantity: int, add_id: str | None = None) -> None:
        """Add to the cart once: the call carries an idempotency key (`add_id`, fresh when None), so the
        mesh may retry it on another replica and the cart still adds only once."""
        item = pb.CartItem(product_id=product_id, quantity=quantity)
        metadata = (("idempotency-key", add_id or uuid.uuid4().hex),)
        request = pb.AddItemRequest(user_id=user_id, item=item)
        await self._call("AddItem", request, metadata=metadata, idempotent=True)

    async def get_cart(self, user_id: str) -> list[pb.CartItem]:
        return list((await self._call("GetCart", pb.GetCartRequest(user_id=user_id))).items)

    async def empty_cart(self, user_id: str) -> None:
        await self._call("EmptyCart", pb.EmptyCartRequest(user_id=user_id))
