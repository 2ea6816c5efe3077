"""The ad service's domain logic: ads by product category, two random ones when nothing matches."""

from __future__ import annotations

import random
from dataclasses import dataclass

from boutique.shop.ad.faults import AdFaults
from boutique.shop.errors import InvalidArgument

MAX_CONTEXT_KEYS = 50
MAX_CONTEXT_KEY_LENGTH = 64
RANDOM_ADS = 2


@dataclass(frozen=True)
class Ad:
    """One text ad linking to a product page."""

    redirect_url: str
    text: str


def _product_ad(product_id: str, text: str) -> Ad:
    """An ad that leads to the product's page."""
    return Ad(redirect_url=f"/product/{product_id}", text=text)


def default_ads() -> dict[str, tuple[Ad, ...]]:
    """The ad inventory keyed by category; a product in two categories shares one ad."""
    tank_top = _product_ad("66VCHSJNUP", "Harbour Tank Top — washed cotton for long summer days.")
    watch = _product_ad("1YMWWN1N4O", "Meridian Watch: a sapphire-faced automatic that outlasts trends.")
    sunglasses = _product_ad("OLJCESPC7Z", "Horizon Sunglasses — polarised lenses, featherweight frames.")
    loafers = _product_ad("L9ECAV7KIM", "Linden Loafers: hand-stitched suede that softens as you walk.")
    hairdryer = _product_ad("2ZYFJ3GM2N", "Breeze Hairdryer — salon heat that folds flat for travel.")
    candle_holder = _product_ad("0PUK6V6EV0", "Ember Candle Holder: a warm ring of light for long evenings.")
    bamboo_jar = _product_ad(
        "9SIQT8TOJO", "Grove Bamboo Jar — an airtight bamboo lid keeps coffee and oats fresh."
    )
    mug = _product_ad("6E92ZMYYFZ", "Morning Mug: 350 ml of stoneware for a slow first coffee.")
    return {
        "clothing": (tank_top,),
        "accessories": (watch, sunglasses),
        "footwear": (loafers,),
        "hair": (hairdryer,),
        "beauty": (hairdryer,),
        "decor": (candle_holder,),
        "home": (candle_holder,),
        "kitchen": (bamboo_jar, mug),
    }


def validate_context_keys(context_keys: list[str]) -> None:
    """Raise InvalidArgument for too many or too long context keys."""
    if len(context_keys) > MAX_CONTEXT_KEYS:
        raise InvalidArgument(f"more than {MAX_CONTEXT_KEYS} context_keys ({len(context_keys)})")
    for key in context_keys:
        if len(key) > MAX_CONTEXT_KEY_LENGTH:
            raise InvalidArgument(f"a context key is longer than {MAX_CONTEXT_KEY_LENGTH} characters")


class AdService:
    """Picks ads for the context keys (categories, matched ignoring case and surrounding spaces)."""

    def __init__(
        self,
        ads: dict[str, tuple[Ad, ...]] | None = None,
        rng: random.Random | None = None,
        faults: AdFaults | None = None,
    ) -> None:
        inventory = default_ads() if ads is None else ads
        self.by_category = {
            category.strip().casefold(): tuple(items) for category, items in inventory.items()
        }
        self.all_ads = list(dict.fromkeys(ad for items in self.by_category.values() for ad in items))
        self.rng = rng or random.Random()
        self.faults = faults or AdFaults()

    async def get_ads(self, context_keys: list[str]) -> list[Ad]:
        """The ads of every matched category without repeats; two random distinct ads if none matched."""
        validate_context_keys(context_keys)
        self.faults.apply()  # what the ad flags ask for: CPU burnt, a collection's pause, or a failure
        matched = [ad for key in context_keys for ad in self.by_category.get(key.strip().casefold(), ())]
        if matched:
            return list(dict.fromkeys(matched))
        return self.rng.sample(self.all_ads, min(RANDOM_ADS, len(self.all_ads)))
