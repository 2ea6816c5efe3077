"""Every scenario `boutique scenario` ships: a fault, the traffic that shows it, where to look, what must show."""

from __future__ import annotations

from boutique.run.scenarios import checks as c
from boutique.run.scenarios.actions import kill_replica, stop_service
from boutique.run.scenarios.model import FlagSetting, Look, Scenario, Search, Traffic

FLAG = c.FLAG_KEY

SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        name="recommendations-down",
        title="A failing dependency with a fallback",
        breaks=(
            "Every call to the recommendation service fails with UNAVAILABLE (the mesh aborts it). "
            "Recommendations are optional: product and cart pages still render, without them. The "
            "frontend's breaker for recommendation opens, so it stops calling a service that cannot answer."
        ),
        flags=(FlagSetting("meshCallFault", "abortUnavailable", when={"callee": "recommendation"}),),
        traffic=Traffic(shoppers=4, mix="browse"),
        look=Look(
            (Search("frontend", {FLAG: "meshCallFault"}, errors=True),),
            service_page="recommendation",
            mesh=True,
            notes=(
                "the trace: the frontend's call to recommendation is red, the page around it is not",
                "Mesh: frontend -> recommendation is OPEN, short-circuited calls climbing",
                "the recommendation service's request rate drops: its callers stopped calling",
            ),
        ),
        checks=(
            c.pages_served("product", 0.95),
            c.flagged_spans("frontend", "meshCallFault", errors=True),
            c.breaker_opened("frontend", "recommendation"),
        ),
    ),
    Scenario(
        name="payment-failure",
        title="A failing dependency without a fallback",
        breaks=(
            "Half of the charges fail in the payment service. The mesh retries a failed charge (it is "
            "idempotent, keyed by the order), so fewer orders fail than charges; but there is no other way "
            "to take money, so an order whose every attempt failed fails, and the shopper is told so."
        ),
        flags=(FlagSetting("paymentFailure", "50%"),),
        traffic=Traffic(shoppers=4, mix="checkout", pause=0.1),
        look=Look(
            (Search("payment", {FLAG: "paymentFailure"}, errors=True),),
            service_page="payment",
            notes=(
                "the trace: checkout -> payment Charge ends in error; checkout answers the frontend with it",
                "payment's RED chart: the error rate jumps to about half at the flag's marker",
            ),
        ),
        checks=(
            c.orders_shown("failed"),
            c.flagged_spans("payment", "paymentFailure", errors=True),
            c.error_rate("payment"),
        ),
    ),
    Scenario(
        name="slow-catalog",
        title="A slow dependency",
        breaks=(
            "Every call to the product catalog waits 500 ms in the mesh before it is sent. Nothing "
            "fails, but every page that lists products is half a second slower or more."
        ),
        flags=(FlagSetting("meshCallFault", "delay500ms", when={"callee": "productcatalog"}),),
        traffic=Traffic(shoppers=4, mix="browse"),
        look=Look(
            (Search("frontend", {FLAG: "meshCallFault"}, min_duration="500ms"),),
            service_page="frontend",
            mesh=True,
            notes=(
                "the trace: a gap of 500 ms before each productcatalog call",
                "frontend's RED chart: p50/p95 latency jump by half a second; the error rate stays flat",
            ),
        ),
        checks=(
            c.slow_traces("frontend", "500ms", {FLAG: "meshCallFault"}),
            c.latency_at_least("frontend", 500.0),
        ),
    ),
    Scenario(
        name="catalog-lock",
        title="Lock contention",
        breaks=(
            "The product catalog holds one lock around a slow database query (50 ms). Requests queue "
            "behind each other: the more shoppers, the longer each waits, though each query is short."
        ),
        flags=(FlagSetting("productCatalogDbLock", "50ms"),),
        traffic=Traffic(shoppers=8, mix="browse", pause=0.0),
        look=Look(
            (
                Search("productcatalog", {FLAG: "productCatalogDbLock"}, min_duration="100ms"),
                Search("productcatalog", {FLAG: "productCatalogDbLock"}),
            ),
            service_page="productcatalog",
            profile=("productcatalog", "tasks"),
            notes=(
                "the span: how many requests it waited behind, and how long it waited for the lock",
                "productcatalog's RED chart: latency climbs far above 50 ms as requests pile up",
                "productcatalog's tasks profile, where every asyncio task waited (cpu and wall show "
                "nothing: the calls only wait): beside gRPC's own tasks waiting for calls, every call "
                "(_handle_rpc) is in DatabaseLock.query (boutique/shop/productcatalog/faults.py), nearly "
                "all of it in Lock.acquire (the queue), a sliver in sleep (the query itself)",
            ),
        ),
        checks=(
            c.flagged_spans("productcatalog", "productCatalogDbLock"),
            # measured 15-29 % (two replicas, 8 shoppers, 10 s): gRPC's idle tasks take much of the rest
            c.profile_hot("productcatalog", "DatabaseLock.query", "tasks", 0.08),
            c.span_attribute(
                "productcatalog",
                "app.lock.waited_behind",
                lambda value: isinstance(value, (int, float)) and value > 0,
                "above 0 (requests queued for the lock)",
                {FLAG: "productCatalogDbLock"},
            ),
        ),
    ),
    Scenario(
        name="email-leak",
        title="A memory leak",
        breaks=(
            "The email service keeps a thousand copies of every confirmation it sends. Its memory "
            "climbs with every order; turning the flag off frees it."
        ),
        flags=(FlagSetting("emailMemoryLeak", "1000x"),),
        traffic=Traffic(shoppers=4, mix="checkout", pause=0.1),
        look=Look(
            (Search("email", {FLAG: "emailMemoryLeak"}),),
            service_page="email",
            mesh=True,
            notes=(
                "Mesh: the memory of the email instance climbs with every order",
                "the span: app.email.leaked_bytes, what it has kept so far",
            ),
        ),
        checks=(
            c.flagged_spans("email", "emailMemoryLeak"),
            c.memory_grew("email", 10.0),
        ),
    ),
    Scenario(
        name="ad-cpu",
        title="A CPU hog",
        breaks=(
            "The ad service burns CPU: a busy thread in the background and a burst on every call. Every "
            "call it serves waits for the interpreter, so ads slow down; the pages wait for them."
        ),
        flags=(FlagSetting("adHighCpu", "on"),),
        traffic=Traffic(shoppers=4, mix="browse"),
        look=Look(
            (Search("ad", {FLAG: "adHighCpu"}),),
            service_page="ad",
            profile=("ad", "cpu"),
            notes=(
                "the span: app.cpu.burn_ms, the CPU each call burnt",
                "ad's RED chart: latency up, requests and errors steady",
                "ad's cpu profile: burn (boutique/shop/ad/faults.py) takes most of it, from the burner "
                "thread and from each call (its span's profile shows the call's share)",
            ),
        ),
        checks=(
            c.flagged_spans("ad", "adHighCpu"),
            c.profile_hot("ad", "burn", "cpu", 0.5),
            c.span_attribute(
                "ad",
                "app.cpu.burn_ms",
                lambda value: isinstance(value, (int, float)) and value > 0,
                "above 0",
                {FLAG: "adHighCpu"},
            ),
        ),
    ),
    Scenario(
        name="replica-crash",
        title="A replica crashes under load",
        breaks=(
            "One product catalog instance is killed (SIGKILL) while shoppers browse. With two replicas "
            "the other one takes the calls at once; the supervisor restarts the killed one, which "
            "registers and takes its share again. With one replica, pages fail until it is back."
        ),
        actions=(kill_replica("productcatalog", at=0.3),),
        traffic=Traffic(shoppers=4, mix="browse"),
        look=Look(
            (
                Search("frontend", {"mesh.dependency": "productcatalog", "mesh.attempt": 2}),
                Search("frontend", {"mesh.dependency": "productcatalog"}, errors=True),
                Search("productcatalog"),
            ),
            service_page="productcatalog",
            mesh=True,
            notes=(
                "Mesh: the killed instance disappears from frontend -> productcatalog and comes back",
                "the trace: a catalog call in flight at the kill, retried on the other instance (mesh.attempt 2)",
            ),
        ),
        checks=(
            c.with_replicas(c.pages_served("product", 0.95)),
            c.restarted("productcatalog"),
            c.replaced_in_mesh("productcatalog"),
            c.other_replica_served("productcatalog"),
        ),
        replicas={"productcatalog": 2},
    ),
    Scenario(
        name="flood",
        title="A flood of shoppers",
        breaks=(
            "A hundred and fifty shoppers load the home page as fast as they can, far more than the "
            "frontend serves at once. Its concurrency limiter sees the latency climb, cuts its limit and "
            "sheds the excess at once (503, Retry-After, x-boutique-shed) instead of letting every request "
            "queue until it times out; the requests it admits stay fast."
        ),
        traffic=Traffic(shoppers=150, mix="flood", pause=0.0),
        look=Look(
            (Search("frontend", {"http.route": "/"}), Search("frontend")),
            service_page="frontend",
            notes=(
                "frontend's RED chart: the requests it admitted and their latency (a shed one leaves no span)",
                "the frontend's limiter (limit, in flight, shed) is on /mesh/status of its metrics port",
            ),
        ),
        checks=(
            c.shed_pages(),
            c.served_spans("frontend"),
        ),
    ),
    Scenario(
        name="currency-partition",
        title="A partitioned dependency that comes back",
        breaks=(
            "The currency service stops answering (SIGSTOP: calls neither succeed nor fail, they time "
            "out). Prices fall back to USD, the frontend's breaker opens; when currency runs again the "
            "breaker probes it and closes, and prices convert again."
        ),
        actions=(stop_service("currency"),),
        traffic=Traffic(shoppers=4, mix="browse"),
        look=Look(
            (
                Search("frontend", {"mesh.dependency": "currency", "mesh.breaker.state": "OPEN"}),
                Search("frontend", {"mesh.dependency": "currency"}, errors=True),
            ),
            service_page="currency",
            mesh=True,
            notes=(
                "the trace: the frontend's call to currency ends at its deadline; the page is in USD",
                "Mesh: frontend -> currency goes OPEN, HALF_OPEN, then CLOSED once currency answers",
            ),
        ),
        checks=(
            c.pages_served("home", 0.9),
            c.breaker_opened("frontend", "currency"),
        ),
        recovery=60.0,
        recovered=c.breaker_closed_again("frontend", "currency"),
    ),
)

BY_NAME = {scenario.name: scenario for scenario in SCENARIOS}
