"""Typed client of the ad service for other services; hides gRPC behind plain calls."""

from __future__ import annotations

from boutique.shop.proto import demo_pb2 as pb
from boutique.shop.proto import demo_pb2_grpc as pb_grpc
from boutique.shop.rpc import OptionalShopClient

# Shown when the ad service is unavailable.
HOUSE_AD = pb.Ad(redirect_url="/", text="Boutique: small things, well made. See the whole collection.")


class AdClient(OptionalShopClient):
    """Calls hipstershop.AdService; errors arrive as boutique.shop.errors types."""

    service = "ad"
    address_variable = "AD_SERVICE_ADDR"
    stub_type = pb_grpc.AdServiceStub
    idempotent = frozenset({"GetAds"})

    async def get_ads(self, context_keys: list[str]) -> list[pb.Ad]:
        """Ads for the categories in `context_keys` (two random ads when none match; the house ad if down)."""

        def house_ad(exc: BaseException) -> pb.AdResponse:
            return pb.AdResponse(ads=[HOUSE_AD])

        return list(
            (await self._call("GetAds", pb.AdRequest(context_keys=context_keys), fallback=house_ad)).ads
        )
