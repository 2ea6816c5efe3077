"""gRPC face of the currency service: decode, call CurrencyService, encode."""

from __future__ import annotations

import grpc

from boutique.mesh import ServiceBinding
from boutique.shop.currency.service import CurrencyService, load_rates
from boutique.shop.proto import demo_pb2 as pb
from boutique.shop.rpc import binding, run_server

SERVICE = "currency"


class CurrencyServicer:
    """Implements hipstershop.CurrencyService."""

    def __init__(self, service: CurrencyService) -> None:
        self.service = service

    async def GetSupportedCurrencies(
        self, request: pb.Empty, context: grpc.aio.ServicerContext
    ) -> pb.GetSupportedCurrenciesResponse:
        return pb.GetSupportedCurrenciesResponse(currency_codes=await self.service.supported_currencies())

    async def Convert(
        self, request: pb.CurrencyConversionRequest, context: grpc.aio.ServicerContext
    ) -> pb.Money:
        # `from` is a Python keyword, so the field is read by name.
        return await self.service.convert(getattr(request, "from"), request.to_code)


def bindings() -> list[ServiceBinding]:
    """The currency service's gRPC services, with the rate table shipped in the package."""
    return [binding("CurrencyService", CurrencyServicer(CurrencyService(load_rates())))]


async def serve() -> None:
    """Run the currency service until SIGTERM."""
    await run_server(SERVICE, bindings())
