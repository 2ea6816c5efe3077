"""The typed clients of every service the frontend calls, built together and closed together."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, fields

from boutique.shop.ad.client import AdClient
from boutique.shop.cart.client import CartClient
from boutique.shop.checkout.client import CheckoutClient
from boutique.shop.currency.client import CurrencyClient
from boutique.shop.productcatalog.client import CatalogClient
from boutique.shop.recommendation.client import RecommendationClient
from boutique.shop.rpc import ShopClient
from boutique.shop.shipping.client import ShippingClient


@dataclass(frozen=True)
class FrontendClients:
    """One client per dependency of the frontend."""

    catalog: CatalogClient
    currency: CurrencyClient
    cart: CartClient
    recommendation: RecommendationClient
    shipping: ShippingClient
    checkout: CheckoutClient
    ad: AdClient

    @classmethod
    def from_env(cls) -> FrontendClients:
        """Build every client from its `*_SERVICE_ADDR` variable; a clear error names a missing one."""
        return cls(
            catalog=CatalogClient.from_env(),
            currency=CurrencyClient.from_env(),
            cart=CartClient.from_env(),
            recommendation=RecommendationClient.from_env(),
            shipping=ShippingClient.from_env(),
            checkout=CheckoutClient.from_env(),
            ad=AdClient.from_env(),
        )

    def all(self) -> list[ShopClient]:
        """Every client, in field order."""
        return [getattr(self, field.name) for field in fields(self)]

    async def close(self) -> None:
        """Close every client's channels."""
        await asyncio.gather(*(client.close() for client in self.all()))
