"""The email service's domain logic: validate, render the confirmation, deliver it to the outbox."""

from __future__ import annotations

import asyncio
import logging
import os
import re
from collections import deque
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING

from boutique.mesh import deadline
from boutique.shop import money
from boutique.shop.email.leak import ConfirmationLeak
from boutique.shop.email_address import mask_email, validate_email
from boutique.shop.errors import InvalidArgument
from boutique.shop.proto import demo_pb2 as pb

if TYPE_CHECKING:
    import jinja2

log = logging.getLogger(__name__)

MAX_ORDER_ID_LENGTH = 128
OUTBOX_SIZE = 100
TEMPLATE = "confirmation.html"
_ORDER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def validate_order_id(order_id: str) -> None:
    """Raise InvalidArgument unless the order id is present and safe to use as a file name."""
    if not order_id:
        raise InvalidArgument("order has no order_id")
    if len(order_id) > MAX_ORDER_ID_LENGTH:
        raise InvalidArgument(f"order_id longer than {MAX_ORDER_ID_LENGTH} characters")
    if not _ORDER_ID.match(order_id):
        raise InvalidArgument("order_id may hold only letters, digits, '.', '_' and '-'")


def order_total(order: pb.OrderResult) -> pb.Money:
    """Shipping plus every item's per-unit cost times its quantity, in the order's currency."""
    currency = order.shipping_cost.currency_code or next(
        (item.cost.currency_code for item in order.items if item.cost.currency_code), "USD"
    )
    amounts = [money.multiply(item.cost, item.item.quantity) for item in order.items]
    if order.HasField("shipping_cost"):
        amounts.append(order.shipping_cost)
    return money.total(amounts, currency) if amounts else money.from_decimal(Decimal(0), currency)


def validate_order(order: pb.OrderResult) -> None:
    """Raise InvalidArgument for an order the template cannot render truthfully."""
    validate_order_id(order.order_id)
    for item in order.items:
        money.validate(item.cost)
        if item.item.quantity < 0:
            raise InvalidArgument(f"item {item.item.product_id!r} has a negative quantity")
    money.validate(order.shipping_cost)


@dataclass(frozen=True)
class Mail:
    """One rendered mail as it was sent."""

    to: str
    subject: str
    html: str


class EmailService:
    """Renders confirmations with Jinja2 and keeps the last `keep` mails; also files them in `outbox_dir`."""

    def __init__(
        self, outbox_dir: Path | None = None, keep: int = OUTBOX_SIZE, leak: ConfirmationLeak | None = None
    ) -> None:
        self.outbox_dir = outbox_dir
        self.sent: deque[Mail] = deque(maxlen=keep)
        self.leak = leak or ConfirmationLeak()
        self._templates: jinja2.Environment | None = None

    @classmethod
    def from_env(cls) -> EmailService:
        """Configured by EMAIL_OUTBOX_DIR (a directory for `<order_id>.html` files; unset: memory only)."""
        directory = os.environ.get("EMAIL_OUTBOX_DIR", "").strip()
        return cls(Path(directory) if directory else None)

    def templates(self) -> jinja2.Environment:
        """The Jinja2 templates, loaded with the first mail rather than at start (Jinja2 is ~60 ms of imports)."""
        if self._templates is None:
            import jinja2

            self._templates = jinja2.Environment(
                loader=jinja2.PackageLoader(__package__ or "boutique.shop.email", "templates"),
                autoescape=True,
                undefined=jinja2.StrictUndefined,
            )
            self._templates.filters["money"] = money.display
        return self._templates

    def render(self, order: pb.OrderResult) -> str:
        """The confirmation's HTML for an order."""
        template = self.templates().get_template(TEMPLATE)
        return template.render(
            order=order,
            address=order.shipping_address,
            items=list(order.items),
            total=order_total(order),
        )

    async def send_order_confirmation(self, email: str, order: pb.OrderResult) -> Mail:
        """Validate, render and deliver the confirmation of `order` to `email`."""
        validate_email(email)
        validate_order(order)
        mail = Mail(to=email, subject=f"Your order {order.order_id} is confirmed", html=self.render(order))
        if self._already_sent(order.order_id):  # a retried request: one order, one mail
            log.info("order confirmation already sent", extra={"order_id": order.order_id})
            return mail
        deadline.check("send the confirmation")
        if self.outbox_dir is not None:
            await asyncio.to_thread(self._write, order.order_id, mail.html)
        self.sent.append(mail)
        self.leak.confirmation_sent(mail.html)  # emailMemoryLeak: copies kept while the flag is on
        log.info(
            "order confirmation sent",
            extra={"order_id": order.order_id, "to": mask_email(email), "items": len(order.items)},
        )
        return mail

    def _already_sent(self, order_id: str) -> bool:
        """Whether this order's confirmation went out already (in the outbox, or in memory without one)."""
        if self.outbox_dir is not None:
            return (self.outbox_dir / f"{order_id}.html").exists()
        return any(m.subject == f"Your order {order_id} is confirmed" for m in self.sent)

    def _write(self, order_id: str, html: str) -> None:
        """Write the mail as `<order_id>.html`, atomically so readers never see half a file."""
        assert self.outbox_dir is not None
        self.outbox_dir.mkdir(parents=True, exist_ok=True)
        target = self.outbox_dir / f"{order_id}.html"
        partial = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        partial.write_text(html, encoding="utf-8")
        partial.replace(target)
