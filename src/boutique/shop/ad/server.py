"""gRPC face of the ad service: decode, call AdService, encode."""

from __future__ import annotations

import grpc

from boutique.mesh import ServiceBinding
from boutique.shop.ad.service import Ad, AdService
from boutique.shop.proto import demo_pb2 as pb
from boutique.shop.rpc import binding, run_server

SERVICE = "ad"


def to_proto(ad: Ad) -> pb.Ad:
    """Encode a domain ad."""
    return pb.Ad(redirect_url=ad.redirect_url, text=ad.text)


class AdServicer:
    """Implements hipstershop.AdService."""

    def __init__(self, service: AdService) -> None:
        self.service = service

    async def GetAds(self, request: pb.AdRequest, context: grpc.aio.ServicerContext) -> pb.AdResponse:
        ads = await self.service.get_ads(list(request.context_keys))
        return pb.AdResponse(ads=[to_proto(ad) for ad in ads])


def bindings(service: AdService | None = None) -> list[ServiceBinding]:
    """The ad service's gRPC services (the built-in inventory unless a service is given)."""
    return [binding("AdService", AdServicer(service or AdService()))]


async def serve() -> None:
    """Run the ad service until SIGTERM."""
    await run_server(SERVICE, bindings())
