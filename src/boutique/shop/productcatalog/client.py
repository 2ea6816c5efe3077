"""Typed client of the catalog for other services; hides gRPC behind plain calls."""

from __future__ import annotations

from boutique.shop.productcatalog.service import load_products
from boutique.shop.proto import demo_pb2 as pb
from boutique.shop.proto import demo_pb2_grpc as pb_grpc
from boutique.shop.rpc import ShopClient


def shipped_product_ids() -> frozenset[str]:
    """The ids of the catalog shipped with the shop (what `productcatalog` serves), for start-up checks."""
    return frozenset(product.id for product in load_products())


class CatalogClient(ShopClient):
    """Calls hipstershop.ProductCatalogService; errors arrive as boutique.shop.errors types."""

    service = "productcatalog"
    address_variable = "PRODUCT_CATALOG_SERVICE_ADDR"
    stub_type = pb_grpc.ProductCatalogServiceStub
    idempotent = frozenset({"ListProducts", "GetProduct", "SearchProducts"})

    async def list_products(self) -> list[pb.Product]:
        return list((await self._call("ListProducts", pb.Empty())).products)

    async def get_product(self, product_id: str) -> pb.Product:
        return await self._call("GetProduct", pb.GetProductRequest(id=product_id))

    async def search(self, query: str) -> list[pb.Product]:
        return list((await self._call("SearchProducts", pb.SearchProductsRequest(query=query))).results)
