"""gRPC face of payment: decode, call PaymentService, encode."""

from __future__ import annotations

import grpc

from boutique.mesh import ServiceBinding
from boutique.shop.payment.service import Card, PaymentService
from boutique.shop.payment.store import ChargeLedger, default_path
from boutique.shop.proto import demo_pb2 as pb
from boutique.shop.rpc import binding, run_server

SERVICE = "payment"
IDEMPOTENCY_KEY = "idempotency-key"


def to_card(info: pb.CreditCardInfo) -> Card:
    """Decode the card of a request."""
    return Card(
        number=info.credit_card_number,
        cvv=info.credit_card_cvv,
        expiration_year=info.credit_card_expiration_year,
        expiration_month=info.credit_card_expiration_month,
    )


class PaymentServicer:
    """Implements hipstershop.PaymentService."""

    def __init__(self, service: PaymentService) -> None:
        self.service = service

    async def Charge(self, request: pb.ChargeRequest, context: grpc.aio.ServicerContext) -> pb.ChargeResponse:
        key = dict(context.invocation_metadata() or ()).get(IDEMPOTENCY_KEY)
        transaction_id = await self.service.charge(request.amount, to_card(request.credit_card), key)
        return pb.ChargeResponse(transaction_id=transaction_id)

    async def Refund(self, request: pb.RefundRequest, context: grpc.aio.ServicerContext) -> pb.RefundResponse:
        refunded, transaction_id = await self.service.refund(request.idempotency_key)
        return pb.RefundResponse(refunded=refunded, transaction_id=transaction_id)


def bindings(service: PaymentService | None = None) -> list[ServiceBinding]:
    """Payment's gRPC services; tests pass a service with a pinned clock (and an in-memory ledger)."""
    return [binding("PaymentService", PaymentServicer(service or PaymentService()))]


async def serve() -> None:
    """Run payment until SIGTERM, its ledger on disk (PAYMENT_LEDGER, or under BOUTIQUE_DATA_DIR)."""
    ledger = ChargeLedger(default_path())

    async def close() -> None:
        ledger.close()

    await run_server(SERVICE, bindings(PaymentService(ledger=ledger)), on_stop=close)
