"""gRPC face of shipping: decode, call ShippingService, encode."""

from __future__ import annotations

from collections.abc import Iterable

import grpc

from boutique.mesh import ServiceBinding
from boutique.shop.proto import demo_pb2 as pb
from boutique.shop.rpc import binding, run_server
from boutique.shop.shipping.service import Item, ShippingService

SERVICE = "shipping"


def to_items(items: Iterable[pb.CartItem]) -> list[Item]:
    """Decode the cart items of a request."""
    return [Item(item.product_id, item.quantity) for item in items]


class ShippingServicer:
    """Implements hipstershop.ShippingService."""

    def __init__(self, service: ShippingService) -> None:
        self.service = service

    async def GetQuote(
        self, request: pb.GetQuoteRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetQuoteResponse:
        cost = await self.service.get_quote(request.address, to_items(request.items))
        return pb.GetQuoteResponse(cost_usd=cost)

    async def ShipOrder(
        self, request: pb.ShipOrderRequest, context: grpc.aio.ServicerContext
    ) -> pb.ShipOrderResponse:
        tracking_id = await self.service.ship_order(request.address, to_items(request.items))
        return pb.ShipOrderResponse(tracking_id=tracking_id)


def bindings() -> list[ServiceBinding]:
    """Shipping's gRPC services."""
    return [binding("ShippingService", ShippingServicer(ShippingService()))]


async def serve() -> None:
    """Run shipping until SIGTERM."""
    await run_server(SERVICE, bindings())
