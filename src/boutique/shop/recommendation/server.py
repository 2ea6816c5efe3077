"""gRPC face of the recommendation service: decode, call RecommendationService, encode."""

from __future__ import annotations

import grpc

from boutique.mesh import ServiceBinding
from boutique.shop.productcatalog.client import CatalogClient
from boutique.shop.proto import demo_pb2 as pb
from boutique.shop.recommendation.service import ProductLister, RecommendationService
from boutique.shop.rpc import binding, run_server

SERVICE = "recommendation"


class RecommendationServicer:
    """Implements hipstershop.RecommendationService."""

    def __init__(self, service: RecommendationService) -> None:
        self.service = service

    async def ListRecommendations(
        self, request: pb.ListRecommendationsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListRecommendationsResponse:
        ids = await self.service.list_recommendations(request.user_id, list(request.product_ids))
        return pb.ListRecommendationsResponse(product_ids=ids)


def bindings(catalog: ProductLister) -> list[ServiceBinding]:
    """The recommendation service's gRPC services, recommending from `catalog`."""
    return [binding("RecommendationService", RecommendationServicer(RecommendationService(catalog)))]


async def serve() -> None:
    """Run the recommendation service until SIGTERM; the catalog comes from PRODUCT_CATALOG_SERVICE_ADDR."""
    catalog = CatalogClient.from_env()
    await run_server(SERVICE, bindings(catalog), on_stop=catalog.close)
