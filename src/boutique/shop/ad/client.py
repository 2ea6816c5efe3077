"""Typed client of the ad service for other services; hides gRPC behind plain calls."""

from __future__ import annotations

from boutique.shop.proto import demo_pb2 as pb
from boutique.shop.proto import demo_pb2_grpc as pb_grpc
from boutique.shop.rpc import ShopClient


class AdClient(ShopClient):
    """Calls hipstershop.AdService; errors arrive as boutique.shop.errors types."""

    service = "ad"
    address_variable = "AD_SERVICE_ADDR"
    stub_type = pb_grpc.AdServiceStub

    async def get_ads(self, context_keys: list[str]) -> list[pb.Ad]:
        """Ads for the categories in `context_keys` (two random ads when none match)."""
        return list((await self._call("GetAds", pb.AdRequest(context_keys=context_keys))).ads)
