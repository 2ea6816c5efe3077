"""Typed client of the recommendation service for other services; hides gRPC behind plain calls."""

from __future__ import annotations

from boutique.shop.proto import demo_pb2 as pb
from boutique.shop.proto import demo_pb2_grpc as pb_grpc
from boutique.shop.rpc import OptionalShopClient

# The curated "featured products" shown when recommendations are unavailable.
FEATURED = ("1YMWWN1N4O", "L9ECAV7KIM", "0PUK6V6EV0", "OLJCESPC7Z", "6E92ZMYYFZ", "2ZYFJ3GM2N")


class RecommendationClient(OptionalShopClient):
    """Calls hipstershop.RecommendationService; errors arrive as boutique.shop.errors types."""

    service = "recommendation"
    address_variable = "RECOMMENDATION_SERVICE_ADDR"
    stub_type = pb_grpc.RecommendationServiceStub
    idempotent = frozenset({"ListRecommendations"})

    async def list_recommendations(self, user_id: str, product_ids: list[str]) -> list[str]:
        """Ids of up to five products to suggest to `user_id`, none of `product_ids` (featured ones if down)."""
        request = pb.ListRecommendationsRequest(user_id=user_id, product_ids=product_ids)

        def featured(exc: BaseException) -> pb.ListRecommendationsResponse:
            return pb.ListRecommendationsResponse(
                product_ids=[p for p in FEATURED if p not in product_ids][:5]
            )

        return list((await self._call("ListRecommendations", request, fallback=featured)).product_ids)
