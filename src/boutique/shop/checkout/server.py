"""gRPC face of the checkout: decode, call CheckoutService, encode; serve() wires the six clients."""

from __future__ import annotations

from dataclasses import dataclass

import grpc

from boutique.mesh import ServiceBinding
from boutique.shop.cart.client import CartClient
from boutique.shop.checkout.service import CheckoutService
from boutique.shop.currency.client import CurrencyClient
from boutique.shop.email.client import EmailClient
from boutique.shop.payment.client import PaymentClient
from boutique.shop.productcatalog.client import CatalogClient
from boutique.shop.proto import demo_pb2 as pb
from boutique.shop.rpc import binding, run_server
from boutique.shop.shipping.client import ShippingClient

SERVICE = "checkout"


class CheckoutServicer:
    """Implements hipstershop.CheckoutService."""

    def __init__(self, service: CheckoutService) -> None:
        self.service = service

    async def PlaceOrder(
        self, request: pb.PlaceOrderRequest, context: grpc.aio.ServicerContext
    ) -> pb.PlaceOrderResponse:
        card = request.credit_card if request.HasField("credit_card") else None
        order = await self.service.place_order(
            request.user_id, request.user_currency, request.address, request.email, card
        )
        return pb.PlaceOrderResponse(order=order)


@dataclass(frozen=True)
class CheckoutClients:
    """The clients of the six services a checkout calls."""

    catalog: CatalogClient
    cart: CartClient
    currency: CurrencyClient
    shipping: ShippingClient
    payment: PaymentClient
    email: EmailClient

    @classmethod
    def from_env(cls) -> CheckoutClients:
        """Every client, resolved by service name (or pinned by its *_SERVICE_ADDR variable)."""
        return cls(
            CatalogClient.from_env(),
            CartClient.from_env(),
            CurrencyClient.from_env(),
            ShippingClient.from_env(),
            PaymentClient.from_env(),
            EmailClient.from_env(),
        )

    def service(self) -> CheckoutService:
        """A checkout that calls these clients."""
        return CheckoutService(
            self.catalog, self.cart, self.currency, self.shipping, self.payment, self.email
        )

    async def close(self) -> None:
        """Close every client's channels."""
        for client in (self.catalog, self.cart, self.currency, self.shipping, self.payment, self.email):
            await client.close()


def bindings(service: CheckoutService) -> list[ServiceBinding]:
    """The checkout's gRPC services, placing orders with `service`."""
    return [binding("CheckoutService", CheckoutServicer(service))]


async def serve() -> None:
    """Run the checkout until SIGTERM, then close the clients of its dependencies."""
    clients = CheckoutClients.from_env()
    await run_server(SERVICE, bindings(clients.service()), on_stop=clients.close)
