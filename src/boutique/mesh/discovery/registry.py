"""Discovery through the embedded registry: blocking-query watches and a kept-alive registration."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from boutique.mesh import metrics
from boutique.mesh.discovery.base import Publish, Registrar, Resolver, RetryPolicy, Trouble
from boutique.mesh.instance import Instance
from boutique.mesh.registry.client import DEFAULT_URL, KeepAlive, RegistryClient, RegistryError

log = logging.getLogger(__name__)


class RegistryResolver(Resolver):
    """Follows a service with index-based long polls (`wait` seconds each) on the registry's HTTP API.

    While the registry is unreachable the last known set stays. For `recovery_grace` seconds after
    it answers again, instances it no longer lists are kept too: a restarted registry has forgotten
    everything until each instance's next renewal registers it again, and that gap is not a reason
    to route nowhere. Instances that do not come back are dropped when the grace ends.
    """

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        token: str | None = None,
        wait: float = 30.0,
        retry: RetryPolicy | None = None,
        recovery_grace: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.client = RegistryClient(base_url, token)
        self.wait = wait
        self.retry = retry or RetryPolicy()
        self.recovery_grace = recovery_grace
        self.clock = clock

    def watch(self, service: str) -> AsyncIterator[list[Instance]]:
        """Yield the passing instances of `service` now and after every change."""
        return self._follow(lambda publish: self._poll(service, publish))

    async def _poll(self, service: str, publish: Publish) -> None:
        """Long-poll the registry with the last index; on errors keep the set and back off."""
        index = 0
        trouble = Trouble(log, "registry watch failed; keeping the last known instances", dependency=service)
        known: list[Instance] | None = None
        grace_until = 0.0
        while True:
            wait = self.wait
            if grace_until:
                wait = max(0.0, min(wait, grace_until - self.clock()))
            previous = index
            try:
                instances, index = await self.client.instances(
                    service, index=index, wait=wait if index else None
                )
            except RegistryError as exc:
                trouble.failed(exc.reason)
                if known is not None:
                    grace_until = self.clock() + self.recovery_grace
                await asyncio.sleep(self.retry.delay(trouble.failures - 1))
                continue
            if previous and index != previous and self.client.last_changed_at is not None:
                metrics.WATCH_LAG.labels(service).observe(max(0.0, time.time() - self.client.last_changed_at))
            trouble.recovered("registry watch recovered")
            if grace_until and known is not None and self.clock() < grace_until:
                listed = {instance.id for instance in instances}
                publish([*instances, *(i for i in known if i.id not in listed)])
                continue
            grace_until = 0.0
            known = instances
            publish(instances)

    async def close(self) -> None:
        """End every watch and close the connections."""
        await super().close()
        await self.client.close()


class RegistryRegistrar(Registrar):
    """Holds this instance registered in the embedded registry (renewed every ttl/3, re-registered when lost)."""

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        token: str | None = None,
        check: dict[str, Any] | None = None,
        first_wait: float = 2.0,
    ) -> None:
        self.client = RegistryClient(base_url, token)
        self.check = check
        self.first_wait = first_wait
        self.keepalive: KeepAlive | None = None

    async def register(self, instance: Instance, ttl: float) -> None:
        """Start the keep-alive and wait briefly for the first registration (it keeps trying after)."""
        if self.keepalive is not None:
            await self.deregister()
        self.keepalive = self.client.keep_registered(instance, ttl, self.check)
        if not await self.keepalive.wait_registered(self.first_wait):
            log.warning(
                "not registered yet; retrying in the background",
                extra={"instance_id": instance.id, "registry": self.client.base_url},
            )

    async def deregister(self) -> None:
        """Stop renewing and remove the instance (errors are logged by the keep-alive)."""
        keepalive, self.keepalive = self.keepalive, None
        if keepalive is not None:
            await keepalive.stop(deregister=True)

    async def close(self) -> None:
        """Deregister and close the connections."""
        await self.deregister()
        await self.client.close()
