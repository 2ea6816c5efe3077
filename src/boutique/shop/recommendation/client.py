"""Typed client of the recommendation service for other services; hides gRPC behind plain calls."""

from __future__ import annotations

from boutique.shop.proto import demo_pb2 as pb
from boutique.shop.proto import demo_pb2_grpc as pb_grpc
from boutique.shop.rpc import ShopClient


class RecommendationClient(ShopClient):
    """Calls hipstershop.RecommendationService; errors arrive as boutique.shop.errors types."""

    service = "recommendation"
    address_variable = "RECOMMENDATION_SERVICE_ADDR"
    stub_type = pb_grpc.RecommendationServiceStub

    async def list_recommendations(self, user_id: str, product_ids: list[str]) -> list[str]:
        """Ids of up to five products to suggest to `user_id`, none of `product_ids`."""
        request = pb.ListRecommendationsRequest(user_id=user_id, product_ids=product_ids)
        return list((await self._call("ListRecommendations", request)).product_ids)
