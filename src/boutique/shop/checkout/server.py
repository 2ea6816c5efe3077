"""gRPC face of the checkout: decode, call CheckoutService, encode; serve() wires the six clients."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import grpc

from boutique.mesh import ProcessInfo, ServiceBinding
from boutique.mesh.runtime import Mesh
from boutique.mesh.stopping import AFTER_CLOSING, process_stop
from boutique.shop.cart.client import CartClient
from boutique.shop.checkout.service import OWN_TIME, CheckoutService
from boutique.shop.checkout.store import OrderJournal, Step, default_path
from boutique.shop.checkout.unreachable import UnreachablePayment
from boutique.shop.currency.client import CurrencyClient
from boutique.shop.email.client import EmailClient
from boutique.shop.payment.client import PaymentClient
from boutique.shop.productcatalog.client import CatalogClient
from boutique.shop.proto import demo_pb2 as pb
from boutique.shop.rpc import binding, run_server
from boutique.shop.shipping.client import ShippingClient

log = logging.getLogger(__name__)

SERVICE = "checkout"
IDEMPOTENCY_KEY = "idempotency-key"
RECOVERY_EVERY = 2.0


class CheckoutServicer:
    """Implements hipstershop.CheckoutService."""

    def __init__(self, service: CheckoutService) -> None:
        self.service = service

    async def PlaceOrder(
        self, request: pb.PlaceOrderRequest, context: grpc.aio.ServicerContext
    ) -> pb.PlaceOrderResponse:
        card = request.credit_card if request.HasField("credit_card") else None
        key = dict(context.invocation_metadata() or ()).get(IDEMPOTENCY_KEY)
        order = await self.service.place_order(
            request.user_id,
            request.user_currency,
            request.address,
            request.email,
            card,
            order_key=key if isinstance(key, str) else None,
        )
        return pb.PlaceOrderResponse(order=order)

    async def GetOrder(
        self, request: pb.GetOrderRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetOrderResponse:
        status = await self.service.order_status(request.order_key, request.user_id)
        response = pb.GetOrderResponse(state=_STATES[status.step], message=status.message)
        if status.order is not None:
            response.order.CopyFrom(status.order)
        return response


_STATES = {
    None: pb.ORDER_STATE_UNSPECIFIED,
    Step.CLAIMED: pb.ORDER_STATE_PLACING,
    Step.CHARGED: pb.ORDER_STATE_PLACING,
    Step.SHIPPED: pb.ORDER_STATE_PLACING,
    Step.PLACED: pb.ORDER_STATE_PLACED,
    Step.FAILED: pb.ORDER_STATE_NOT_PLACED,
    Step.VOIDED: pb.ORDER_STATE_NOT_PLACED,
    Step.VOIDING: pb.ORDER_STATE_NOT_PLACED,
}


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

    def service(self, journal: OrderJournal | None = None) -> CheckoutService:
        """A checkout that calls these clients, journaling orders in `journal` (in memory by default)."""
        return CheckoutService(
            self.catalog, self.cart, self.currency, self.shipping, self.payment, self.email, journal
        )

    async def close(self) -> None:
        """Close every client's channels."""
        for client in (self.catalog, self.cart, self.currency, self.shipping, self.payment, self.email):
            await client.close()


def bindings(service: CheckoutService) -> list[ServiceBinding]:
    """The checkout's gRPC services, placing orders with `service`."""
    return [binding("CheckoutService", CheckoutServicer(service))]


async def recover_forever(service: CheckoutService, every: float = RECOVERY_EVERY) -> None:
    """Finish or undo orders left open by a checkout that died or stopped, at start and then periodically."""
    while True:
        try:
            await service.recover()
        except Exception:
            log.exception("order recovery failed")
        await asyncio.sleep(every)


async def serve() -> None:
    """Run the checkout until SIGTERM (orders journaled on disk, open ones recovered), then close clients."""
    info = ProcessInfo.from_env(SERVICE)
    journal = OrderJournal(default_path(), owner=info.instance_id)
    clients = CheckoutClients.from_env()
    service = clients.service(journal)
    unreachable = service.unreachable_payment = UnreachablePayment(
        Mesh.default(), service.payment_unreachable
    )
    recovery = asyncio.create_task(recover_forever(service))

    async def stop() -> None:
        recovery.cancel()
        unfinished = await service.drain(process_stop().allow(OWN_TIME * 2, keep=AFTER_CLOSING))
        if unfinished:
            log.warning("orders left to the next checkout's recovery", extra={"orders": unfinished})
        await clients.close()
        await unreachable.close()
        journal.close()

    await run_server(SERVICE, bindings(service), on_stop=stop, info=info)
