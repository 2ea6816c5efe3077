"""The load generator steered live by flags: `loadGeneratorTraffic` pauses every shopper and resumes them,
`loadGeneratorVUs` sets how many shoppers run (0, "asStarted": the number it was started with).

Free of Locust imports: the locustfile reads the flags about once a second and hands `ShopperControl`
a function that changes the running user count (Locust's runner can change it while it runs).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("boutique.shop.loadgen")

TRAFFIC = "loadGeneratorTraffic"  # 1: on (shipped), 0: off
USERS = "loadGeneratorVUs"  # 0: as started (shipped), else that many shoppers
POLL_SECONDS = 1.0


@dataclass(frozen=True)
class Steering:
    """What the flags say: whether shoppers shop, and how many (0: as many as at the start)."""

    traffic: bool = True
    users: int = 0

    def shoppers(self, started: int) -> int:
        """How many shoppers should run: none while traffic is off, else the flag's number or `started`."""
        if not self.traffic:
            return 0
        return self.users if self.users > 0 else started


def steering(traffic: float, users: float) -> Steering:
    """The flags' values as a Steering (a traffic value of 0 is off; users below 1 mean as started)."""
    return Steering(traffic=traffic != 0, users=max(0, int(users)))


class ShopperControl:
    """Changes the number of running shoppers when the flags ask for another one, and logs each change."""

    def __init__(self, started: int, resize: Callable[[int], None]) -> None:
        self.started = started
        self.running = started
        self._resize = resize

    def apply(self, wanted: Steering) -> str | None:
        """Resize to what `wanted` asks for; the log line of the change (None when nothing changed)."""
        target = wanted.shoppers(self.started)
        if target == self.running:
            return None
        previous = self.running
        if target == 0:
            message = f"load generator: traffic off ({TRAFFIC}): {previous} shoppers stopped"
        elif previous == 0:
            message = f"load generator: traffic on again: {target} shoppers"
        else:
            cause = f"{USERS}={wanted.users}" if wanted.users else f"{USERS}=asStarted"
            message = f"load generator: {previous} → {target} shoppers ({cause})"
        self._resize(target)  # a failed resize leaves `running` as it was: the next poll tries again
        self.running = target
        log.info(message)
        return message
