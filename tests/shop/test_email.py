"""Email over real gRPC: the rendered confirmation, address validation, masked logs and the outbox files."""

from __future__ import annotations

import logging
from pathlib import Path

import grpc
import pytest

from boutique.shop.email.client import EmailClient
from boutique.shop.email.server import bindings
from boutique.shop.email.service import EmailService, mask_email
from boutique.shop.errors import InvalidArgument
from boutique.shop.proto import demo_pb2 as pb
from tests.support import serving

EMAIL = "jane.doe@example.com"


def sample_order(order_id: str = "4f1c2d0e-order") -> pb.OrderResult:
    """An order of two lines in EUR with shipping."""
    return pb.OrderResult(
        order_id=order_id,
        shipping_tracking_id="AB-123456-CD",
        shipping_cost=pb.Money(currency_code="EUR", units=7, nanos=650_000_000),
        shipping_address=pb.Address(
            street_address="1 Quay Street", city="Galway", state="", country="Ireland", zip_code=91000
        ),
        items=[
            pb.OrderItem(
                item=pb.CartItem(product_id="66VCHSJNUP", quantity=2),
                cost=pb.Money(currency_code="EUR", units=16, nanos=150_000_000),
            ),
            pb.OrderItem(
                item=pb.CartItem(product_id="9SIQT8TOJO", quantity=1),
                cost=pb.Money(currency_code="EUR", units=4, nanos=670_000_000),
            ),
        ],
    )


@pytest.fixture
def service(tmp_path: Path) -> EmailService:
    return EmailService(outbox_dir=tmp_path / "outbox")


@pytest.fixture
async def email(service: EmailService):
    async with serving("email", bindings(service)) as endpoints:
        client = EmailClient(endpoints)
        yield client
        await client.close()


async def test_confirmation_renders_ids_address_and_amounts(
    email: EmailClient, service: EmailService
) -> None:
    await email.send_order_confirmation(EMAIL, sample_order())
    assert len(service.sent) == 1
    mail = service.sent[-1]
    assert mail.to == EMAIL
    assert "4f1c2d0e-order" in mail.subject
    for text in ("4f1c2d0e-order", "AB-123456-CD", "1 Quay Street", "Galway", "Ireland", "91000"):
        assert text in mail.html
    assert "66VCHSJNUP" in mail.html and "9SIQT8TOJO" in mail.html
    assert "€16.15" in mail.html and "€4.67" in mail.html
    assert "€7.65" in mail.html  # shipping
    assert "€44.62" in mail.html  # 2 x 16.15 + 4.67 + 7.65


async def test_template_escapes_html(email: EmailClient, service: EmailService) -> None:
    order = sample_order()
    order.shipping_address.street_address = "<script>alert(1)</script>"
    await email.send_order_confirmation(EMAIL, order)
    html = service.sent[-1].html
    assert "<script>" not in html
    assert "&lt;script&gt;" in html


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "no-at-sign.example.com",
        "two@@example.com",
        "a@b@example.com",
        "@example.com",
        "jane@localhost",
        "jane@example.",
        "jane doe@example.com",
        "j" * 250 + "@example.com",
    ],
)
async def test_bad_email_is_invalid_argument(email: EmailClient, service: EmailService, bad: str) -> None:
    with pytest.raises(InvalidArgument, match="email"):
        await email.send_order_confirmation(bad, sample_order())
    assert not service.sent


async def test_order_without_id_is_invalid_argument(email: EmailClient, service: EmailService) -> None:
    with pytest.raises(InvalidArgument, match="order_id"):
        await email.send_order_confirmation(EMAIL, sample_order(order_id=""))
    with pytest.raises(InvalidArgument, match="order_id"):
        await email.send_order_confirmation(EMAIL, sample_order(order_id="../../etc/passwd"))
    assert not service.sent


async def test_log_line_masks_the_address(
    email: EmailClient, service: EmailService, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="boutique.shop.email"):
        await email.send_order_confirmation(EMAIL, sample_order())
    records = [r for r in caplog.records if r.name.startswith("boutique.shop.email")]
    assert len(records) == 1
    record = records[0]
    everything = record.getMessage() + " " + " ".join(str(v) for v in vars(record).values())
    assert "4f1c2d0e-order" in everything
    assert mask_email(EMAIL) in everything
    assert EMAIL not in everything
    assert "jane.doe" not in everything


def test_mask_email() -> None:
    assert mask_email("jane.doe@example.com") == "j***@example.com"
    assert mask_email("x@example.org") == "x***@example.org"


async def test_outbox_file_is_written(email: EmailClient, service: EmailService) -> None:
    await email.send_order_confirmation(EMAIL, sample_order())
    assert service.outbox_dir is not None
    written = (service.outbox_dir / "4f1c2d0e-order.html").read_text(encoding="utf-8")
    assert written == service.sent[-1].html
    assert sorted(p.name for p in service.outbox_dir.iterdir()) == ["4f1c2d0e-order.html"]


async def test_outbox_dir_comes_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMAIL_OUTBOX_DIR", str(tmp_path / "from-env"))
    async with serving("email", bindings()) as endpoints:
        client = EmailClient(endpoints)
        await client.send_order_confirmation(EMAIL, sample_order("order-from-env"))
        await client.close()
    assert "order-from-env" in (tmp_path / "from-env" / "order-from-env.html").read_text(encoding="utf-8")


async def test_memory_outbox_keeps_the_last_hundred() -> None:
    service = EmailService()
    for n in range(105):
        await service.send_order_confirmation(EMAIL, sample_order(f"order-{n}"))
    assert len(service.sent) == 100
    assert "order-5 " in service.sent[0].subject
    assert "order-104 " in service.sent[-1].subject


async def test_malformed_protobuf_is_invalid_argument_and_server_survives(
    email: EmailClient, service: EmailService
) -> None:
    address = email.endpoints.addresses[0]
    async with grpc.aio.insecure_channel(address) as channel:
        raw = channel.unary_unary("/hipstershop.EmailService/SendOrderConfirmation")
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await raw(b"\x0a\xff\xff\xff\xff\xff", timeout=2)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    await email.send_order_confirmation(EMAIL, sample_order())
    assert len(service.sent) == 1
