"""The shop as containers: the image's promises, a traced checkout through the pods, and a backend
container killed with SIGKILL while the shop keeps serving."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import time

import httpx
import pytest

from tests.containers.shop import ContainerShop, eventually
from tests.faults.orders import CHECKOUT_SERVICES, ORDER_ID, checkout_form
from tests.faults.traffic import PRODUCTS

pytestmark = pytest.mark.timeout(900)  # the first test builds the image and starts thirteen pods


def podman(*args: str) -> subprocess.CompletedProcess[str]:
    """Run podman, capturing its output."""
    return subprocess.run(["podman", *args], capture_output=True, text=True, timeout=120)


def test_the_image_runs_as_a_non_root_user_on_a_read_only_root_without_pip(
    image: str, run_prefix: str
) -> None:
    config = podman("image", "inspect", "--format", "{{.Config.User}} {{json .Config.Entrypoint}}", image)
    assert config.stdout.split() == ["10001:10001", '["boutique"]']
    size = int(podman("image", "inspect", "--format", "{{.Size}}", image).stdout)
    print(f"\n{image}: {size / 1e6:.0f} MB")
    probe = (
        "import os, shutil, importlib.util as u; "
        "print(os.getuid(), u.find_spec('pip') is None, shutil.which('gcc') is None, shutil.which('pip') is None)"
    )
    checked = podman(
        "run",
        "--rm",
        "--name",
        f"{run_prefix}probe",
        "--read-only",
        "--entrypoint",
        "python",
        image,
        "-c",
        probe,
    )
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.split() == ["10001", "True", "True", "True"]


def test_a_checkout_through_the_frontend_pod_is_traced_in_the_observatory_pod(shop: ContainerShop) -> None:
    trace_id = secrets.token_hex(16)
    with httpx.Client(base_url=shop.frontend, timeout=30) as browser:
        added = browser.post(
            "/cart", data={"product_id": PRODUCTS[0], "quantity": "1"}, follow_redirects=True
        )
        assert added.status_code == 200
        form = checkout_form(browser.get("/cart").text)
        assert "order_key" in form and "email" in form, form
        placed = browser.post(
            "/cart/checkout", data=form, headers={"traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"}
        )
    assert placed.status_code == 200, placed.text[-500:]
    order = ORDER_ID.search(placed.text)
    assert order is not None, placed.text[-500:]

    def trace_with_every_service() -> set[str] | None:
        try:
            found = shop.api(f"/api/traces/{trace_id}")["data"][0]
        except httpx.HTTPStatusError:
            return None  # not stored yet
        services = {process["serviceName"] for process in found["processes"].values()}
        return services if services >= CHECKOUT_SERVICES else None

    # As the manifests ask: every Boutique container on a read-only root filesystem, as user 10001.
    for unit in shop.plan.units:
        if unit.workload != "redis-cart":
            settings = shop.inspect(unit.container(), "{{.HostConfig.ReadonlyRootfs}} {{.Config.User}}")
            assert settings.split()[0] == "true" and settings.split()[1].startswith("10001"), (unit, settings)
    services = eventually(trace_with_every_service, f"trace {trace_id} with {sorted(CHECKOUT_SERVICES)}", 120)
    print(f"\norder {order.group(1)}: trace {trace_id} has spans of {sorted(services)}")


def test_a_backend_killed_with_sigkill_restarts_and_the_shop_keeps_serving(shop: ContainerShop) -> None:
    cart = shop.container("cartservice")
    restarts = int(shop.inspect(cart, "{{.RestartCount}}") or 0)
    with httpx.Client(base_url=shop.frontend, timeout=30) as browser:
        added = browser.post(
            "/cart", data={"product_id": PRODUCTS[1], "quantity": "2"}, follow_redirects=True
        )
        assert added.status_code == 200
        # SIGKILL to the container's process from outside, as a crash: `podman kill` would count as a
        # stop by the user, which restart policies leave stopped.
        pid = int(shop.inspect(cart, "{{.State.Pid}}"))
        assert pid > 0
        os.kill(pid, signal.SIGKILL)

        def restarted() -> bool:
            return int(shop.inspect(cart, "{{.RestartCount}}") or 0) > restarts

        # Pages while the cart is gone and comes back: each one answered (a transport error fails the
        # test), until the container has restarted and the home page is whole again.
        answers: list[int] = []
        deadline = time.monotonic() + 90
        while not (restarted() and answers[-2:] == [200, 200]):
            assert time.monotonic() < deadline, (
                f"not back within 90 s: restarted {restarted()}, pages {answers}"
            )
            answers.append(browser.get("/").status_code)
            answers.append(browser.get(f"/product/{PRODUCTS[2]}").status_code)
        assert shop.inspect(cart, "{{.State.Running}}") == "true"
        eventually(
            lambda: shop.health()["cartservice:7070"] == "SERVING" or None, "the cart SERVING again", 60
        )
        # The frontend's breaker for the cart closes again after its next probe; the cart lives in
        # redis-cart, so what was in it before the kill is there after the restart.
        page = eventually(
            lambda: page if (page := browser.get("/cart")).status_code == 200 else None, "the cart page", 60
        )
        assert PRODUCTS[1] in page.text, page.text[-500:]
        placed = browser.post("/cart/checkout", data=checkout_form(page.text))
    assert placed.status_code == 200 and ORDER_ID.search(placed.text), placed.text[-500:]
    counts = {status: answers.count(status) for status in sorted(set(answers))}
    print(
        f"\n{len(answers)} pages while {cart} was killed and restarted: {counts}; "
        f"restarts {restarts} -> {shop.inspect(cart, '{{.RestartCount}}')}"
    )


def test_every_boutique_container_logs_json_lines(shop: ContainerShop) -> None:
    # After the other tests: each container has logged its start, its requests and a restart.
    for unit in shop.plan.units:
        if unit.workload == "redis-cart":
            continue
        # `podman logs` gives the container's stdout and stderr apart: the log is JSON lines on stdout.
        logged = subprocess.run(
            ["podman", "logs", unit.container()], capture_output=True, text=True, timeout=60
        )
        assert not logged.stderr.strip(), f"{unit.workload} wrote to stderr: {logged.stderr[-300:]}"
        lines = [line for line in logged.stdout.splitlines() if line.strip()]
        assert lines, f"{unit.workload} logged nothing"
        for line in lines:
            try:
                entry = json.loads(line)
            except ValueError:
                raise AssertionError(
                    f"{unit.workload} logged a line that is not JSON: {line[:300]}"
                ) from None
            assert {"timestamp", "level", "service", "event"} <= set(entry), (unit.workload, entry)
        print(f"\n{unit.workload}: {len(lines)} JSON lines")
