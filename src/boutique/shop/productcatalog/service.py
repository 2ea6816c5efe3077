"""The catalog's domain logic: list, look up and search products (plain types, no transport)."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from decimal import Decimal
from importlib import resources

from boutique.shop.errors import InvalidArgument, NotFound, Reason
from boutique.shop.productcatalog.faults import DatabaseLock, check_product

MAX_QUERY_LENGTH = 256


@dataclass(frozen=True)
class Product:
    """A product on sale, priced in USD."""

    id: str
    name: str
    description: str
    picture: str
    price_usd: Decimal
    categories: tuple[str, ...]


def load_products() -> list[Product]:
    """Read the catalog shipped as `products.json` beside this module."""
    text = resources.files(__package__).joinpath("products.json").read_text(encoding="utf-8")
    return [
        Product(
            id=item["id"],
            name=item["name"],
            description=item["description"],
            picture=item["picture"],
            price_usd=Decimal(item["price_usd"]),
            categories=tuple(item["categories"]),
        )
        for item in json.loads(text)["products"]
    ]


class CatalogService:
    """Serves the catalog; `extra_latency` seconds are added to every call for demos."""

    def __init__(self, products: list[Product], extra_latency: float = 0.0) -> None:
        self.products = list(products)
        self._by_id = {p.id: p for p in self.products}
        self.extra_latency = extra_latency
        self.database = DatabaseLock()  # productCatalogDbLock: every call queues for one slow query

    async def _delay(self) -> None:
        if self.extra_latency > 0:
            await asyncio.sleep(self.extra_latency)

    async def list_products(self) -> list[Product]:
        """Every product, in catalog order."""
        await self._delay()
        await self.database.query("ListProducts")
        return list(self.products)

    async def get_product(self, product_id: str) -> Product:
        """The product with this id; NotFound otherwise."""
        await self._delay()
        if not product_id:
            raise InvalidArgument("product id is empty")
        await self.database.query("GetProduct")
        try:
            product = self._by_id[product_id]
        except KeyError:
            raise NotFound(
                f"no product with id {product_id!r}",
                reason=Reason.UNKNOWN_PRODUCT,
                public_message="that product is not in the catalog",
            ) from None
        check_product(product_id)  # productCatalogFailure
        return product

    async def search(self, query: str) -> list[Product]:
        """Products whose name or description contains the query, ignoring case."""
        await self._delay()
        if len(query) > MAX_QUERY_LENGTH:
            raise InvalidArgument(f"query longer than {MAX_QUERY_LENGTH} characters")
        await self.database.query("SearchProducts")
        needle = query.casefold()
        return [p for p in self.products if needle in p.name.casefold() or needle in p.description.casefold()]
