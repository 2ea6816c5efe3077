"""Typed client of the currency service for other services; hides gRPC behind plain calls."""

from __future__ import annotations

from boutique.shop.proto import demo_pb2 as pb
from boutique.shop.proto import demo_pb2_grpc as pb_grpc
from boutique.shop.rpc import ShopClient


class CurrencyClient(ShopClient):
    """Calls hipstershop.CurrencyService; errors arrive as boutique.shop.errors types."""

    service = "currency"
    address_variable = "CURRENCY_SERVICE_ADDR"
    stub_type = pb_grpc.CurrencyServiceStub
    idempotent = frozenset({"GetSupportedCurrencies", "Convert"})

    async def supported_currencies(self) -> list[str]:
        return list((await self._call("GetSupportedCurrencies", pb.Empty())).currency_codes)

    async def convert(self, money: pb.Money, to_code: str) -> pb.Money:
        request = pb.CurrencyConversionRequest(to_code=to_code)
        getattr(request, "from").CopyFrom(money)
        return await self._call("Convert", request)
