"""gRPC face of the cart: decode, call CartService, encode; closes the store on stop.

Health stays SERVING while Redis is unreachable. Every replica shares the one Redis, so taking them
out of rotation (what NOT_SERVING asks of health checkers and load balancers) finds callers no better
replica; it only swaps the precise "cart store (redis …) unavailable" answer for no answer, and would
flap through every sub-second Redis restart. Each call reports the outage itself (UNAVAILABLE, naming
Redis), and the log says when Redis stops and starts answering.

What does make the cart unready is the failedReadinessProbe flag: while it is on, health says
NOT_SERVING and discovery stops sending callers here (see GrpcServer's readiness probe).
"""

from __future__ import annotations

import logging

import grpc

from boutique.mesh import GrpcServer, ProcessInfo, ServiceBinding
from boutique.mesh.flags import flags
from boutique.mesh.runtime import Mesh
from boutique.mesh.tracing import sdk_installed
from boutique.shop.cart.service import CartService
from boutique.shop.cart.store import CartStore, RedisCartStore, store_from_env
from boutique.shop.proto import demo_pb2 as pb
from boutique.shop.rpc import binding

SERVICE = "cart"
IDEMPOTENCY_KEY = "idempotency-key"  # metadata naming one AddItem, so a retry of it does not add twice
FAILED_READINESS_PROBE = "failedReadinessProbe"  # flag: the cart says it is not ready

log = logging.getLogger(__name__)


class CartServicer:
    """Implements hipstershop.CartService."""

    def __init__(self, service: CartService) -> None:
        self.service = service

    async def AddItem(self, request: pb.AddItemRequest, context: grpc.aio.ServicerContext) -> pb.Empty:
        add_id = dict(context.invocation_metadata() or ()).get(IDEMPOTENCY_KEY)
        item = request.item
        await self.service.add_item(request.user_id, item.product_id, item.quantity, add_id)
        return pb.Empty()

    async def GetCart(self, request: pb.GetCartRequest, context: grpc.aio.ServicerContext) -> pb.Cart:
        lines = await self.service.get_cart(request.user_id)
        return pb.Cart(
            user_id=request.user_id,
            items=[pb.CartItem(product_id=line.product_id, quantity=line.quantity) for line in lines],
        )

    async def EmptyCart(self, request: pb.EmptyCartRequest, context: grpc.aio.ServicerContext) -> pb.Empty:
        await self.service.empty_cart(request.user_id)
        return pb.Empty()


def bindings(store: CartStore | None = None) -> list[ServiceBinding]:
    """The cart's gRPC services on `store`, by default the one REDIS_ADDR selects."""
    return [binding("CartService", CartServicer(CartService(store or store_from_env())))]


def ready() -> bool:
    """The cart's readiness probe: ready unless the failedReadinessProbe flag is on."""
    return not flags().boolean(FAILED_READINESS_PROBE)


async def serve() -> None:
    """Run the cart until SIGTERM, then close the store."""
    store = store_from_env()
    if isinstance(store, RedisCartStore):
        if sdk_installed():  # a CLIENT span per Redis command, inside the RPC that sent it
            from opentelemetry.instrumentation.redis import RedisInstrumentor

            RedisInstrumentor().instrument()  # patches redis-py's classes: the store's client is covered
        log.info(
            "cart store: redis",
            extra={"redis_address": store.address, "max_connections": store.link.max_connections},
        )
    else:
        log.info("cart store: memory (carts are lost on restart; set REDIS_ADDR to keep them)")
    server = GrpcServer(
        ProcessInfo.from_env(SERVICE), bindings(store), mesh=Mesh.default(), register=True, readiness=ready
    )
    await server.run(store.close)
