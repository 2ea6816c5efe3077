"""gRPC face of the catalog: decode, call CatalogService, encode."""

from __future__ import annotations

import grpc

from boutique.mesh import ServiceBinding, env_duration
from boutique.shop import money
from boutique.shop.productcatalog.service import CatalogService, Product, load_products
from boutique.shop.proto import demo_pb2 as pb
from boutique.shop.rpc import binding, run_server

SERVICE = "productcatalog"


def to_proto(product: Product) -> pb.Product:
    """Encode a domain product."""
    return pb.Product(
        id=product.id,
        name=product.name,
        description=product.description,
        picture=product.picture,
        price_usd=money.from_decimal(product.price_usd, "USD"),
        categories=list(product.categories),
    )


class CatalogServicer:
    """Implements hipstershop.ProductCatalogService."""

    def __init__(self, service: CatalogService) -> None:
        self.service = service

    async def ListProducts(
        self, request: pb.Empty, context: grpc.aio.ServicerContext
    ) -> pb.ListProductsResponse:
        return pb.ListProductsResponse(products=[to_proto(p) for p in await self.service.list_products()])

    async def GetProduct(
        self, request: pb.GetProductRequest, context: grpc.aio.ServicerContext
    ) -> pb.Product:
        return to_proto(await self.service.get_product(request.id))

    async def SearchProducts(
        self, request: pb.SearchProductsRequest, context: grpc.aio.ServicerContext
    ) -> pb.SearchProductsResponse:
        return pb.SearchProductsResponse(
            results=[to_proto(p) for p in await self.service.search(request.query)]
        )


def bindings() -> list[ServiceBinding]:
    """The catalog's gRPC services, configured from the environment (EXTRA_LATENCY)."""
    service = CatalogService(load_products(), extra_latency=env_duration("EXTRA_LATENCY"))
    return [binding("ProductCatalogService", CatalogServicer(service))]


async def serve() -> None:
    """Run the catalog until SIGTERM."""
    await run_server(SERVICE, bindings())
