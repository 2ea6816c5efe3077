"""Typed client of shipping for other services; hides gRPC behind plain calls."""

from __future__ import annotations

from boutique.shop.proto import demo_pb2 as pb
from boutique.shop.proto import demo_pb2_grpc as pb_grpc
from boutique.shop.rpc import ShopClient


class ShippingClient(ShopClient):
    """Calls hipstershop.ShippingService; errors arrive as boutique.shop.errors types."""

    service = "shipping"
    address_variable = "SHIPPING_SERVICE_ADDR"
    stub_type = pb_grpc.ShippingServiceStub
    idempotent = frozenset({"GetQuote"})

    async def get_quote(self, address: pb.Address, items: list[pb.CartItem]) -> pb.Money:
        request = pb.GetQuoteRequest(address=address, items=items)
        return (await self._call("GetQuote", request)).cost_usd

    async def ship_order(self, address: pb.Address, items: list[pb.CartItem]) -> str:
        request = pb.ShipOrderRequest(address=address, items=items)
        return (await self._call("ShipOrder", request)).tracking_id
