"""The payment domain logic: card checks (Luhn, brand, length, expiry, CVV) and charges.

The card number never leaves this module except as its brand and last four digits, and
error messages never quote it, so neither logs nor callers' error pages can leak it.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

from boutique.cards import luhn_valid
from boutique.mesh import deadline
from boutique.mesh.flags import flags
from boutique.shop import money
from boutique.shop.errors import FailedPrecondition, InvalidArgument, Reason, Unavailable
from boutique.shop.payment.store import ChargeLedger
from boutique.shop.proto import demo_pb2 as pb

log = logging.getLogger(__name__)

VISA = "VISA"
MASTERCARD = "Mastercard"
UNKNOWN = "unknown card type"
ACCEPTED_LENGTHS = {VISA: (13, 16, 19), MASTERCARD: (16,)}
MAX_NUMBER_LENGTH = 19
MAX_CVV = 9999
MAX_KEY_LENGTH = 128
_SEPARATORS = re.compile(r"[ -]")
_CURRENCY_CODE = re.compile(r"[A-Z]{3}")
PAYMENT_FAILURE = "paymentFailure"  # flag: the fraction (0..1) of charges that fail (nothing is charged)


@dataclass(frozen=True)
class Card:
    """A credit card as the shopper typed it; the number and CVV are kept out of repr."""

    number: str = field(repr=False)
    cvv: int = field(repr=False)
    expiration_year: int
    expiration_month: int


def utc_today() -> date:
    """Today's date in UTC, the clock card expiry is judged by."""
    return datetime.now(UTC).date()


def _prefix_in(digits: str, length: int, low: int, high: int) -> bool:
    """True when the first `length` digits, as a number, lie in low..high."""
    return len(digits) >= length and low <= int(digits[:length]) <= high


def card_type(digits: str) -> str:
    """The card brand the number's prefix names (issuer identification ranges), or UNKNOWN."""
    if digits.startswith("4"):
        return VISA
    if _prefix_in(digits, 2, 51, 55) or _prefix_in(digits, 4, 2221, 2720):
        return MASTERCARD
    if _prefix_in(digits, 2, 34, 34) or _prefix_in(digits, 2, 37, 37):
        return "American Express"
    if (
        digits.startswith(("6011", "65"))
        or _prefix_in(digits, 3, 644, 649)
        or _prefix_in(digits, 6, 622126, 622925)
    ):
        return "Discover"
    if _prefix_in(digits, 4, 3528, 3589):
        return "JCB"
    if _prefix_in(digits, 3, 300, 305) or digits.startswith(("3095", "36", "38", "39")):
        return "Diners Club"
    return UNKNOWN


def _card_problem(reason: Reason, message: str) -> InvalidArgument:
    """A card the shopper must fix; the message (which never quotes the number) may be shown to them."""
    return InvalidArgument(message, reason=reason, public_message=message)


def card_digits(number: str) -> str:
    """The number without spaces and dashes; InvalidArgument unless it is then 1..19 digits."""
    digits = _SEPARATORS.sub("", number)
    if not digits:
        raise _card_problem(Reason.CARD_NUMBER_INVALID, "credit card number is empty")
    if not digits.isascii() or not digits.isdigit():
        raise _card_problem(
            Reason.CARD_NUMBER_INVALID, "credit card number may hold only digits, spaces and dashes"
        )
    if len(digits) > MAX_NUMBER_LENGTH:
        raise _card_problem(
            Reason.CARD_NUMBER_INVALID, f"credit card number longer than {MAX_NUMBER_LENGTH} digits"
        )
    return digits


def check_card(card: Card, today: date) -> tuple[str, str]:
    """Validate the card; returns its brand and digits, or raises InvalidArgument saying what to fix."""
    digits = card_digits(card.number)
    if not luhn_valid(digits):
        raise _card_problem(
            Reason.CARD_NUMBER_INVALID, "credit card number is not valid (Luhn check failed): check for typos"
        )
    brand = card_type(digits)
    if brand == UNKNOWN:
        raise _card_problem(
            Reason.CARD_TYPE_NOT_ACCEPTED, "unknown card type: only VISA and Mastercard are accepted"
        )
    if brand not in ACCEPTED_LENGTHS:
        raise _card_problem(
            Reason.CARD_TYPE_NOT_ACCEPTED, f"{brand} cards are not accepted: only VISA and Mastercard"
        )
    lengths = ACCEPTED_LENGTHS[brand]
    if len(digits) not in lengths:
        allowed = " or ".join(str(n) for n in lengths)
        raise _card_problem(
            Reason.CARD_NUMBER_INVALID, f"{brand} card numbers have {allowed} digits, not {len(digits)}"
        )
    if not 1 <= card.expiration_month <= 12:
        raise _card_problem(
            Reason.CARD_EXPIRATION_INVALID, f"expiration month {card.expiration_month} must be 1 to 12"
        )
    if not 1000 <= card.expiration_year <= 9999:
        raise _card_problem(
            Reason.CARD_EXPIRATION_INVALID,
            f"expiration year {card.expiration_year} must have four digits, like {today.year + 1}",
        )
    if card.expiration_year * 12 + card.expiration_month < today.year * 12 + today.month:
        raise _card_problem(
            Reason.CARD_EXPIRED, f"card expired {card.expiration_month:02d}/{card.expiration_year}"
        )
    if not 0 <= card.cvv <= MAX_CVV:
        raise _card_problem(Reason.CARD_CVV_INVALID, f"CVV must be 0 to {MAX_CVV}")
    return brand, digits


def check_amount(amount: pb.Money) -> None:
    """InvalidArgument unless the amount is a valid, non-negative Money with a 3-letter code."""
    money.validate(amount)
    if not _CURRENCY_CODE.fullmatch(amount.currency_code):
        raise InvalidArgument(f"amount currency code {amount.currency_code!r} is not three capital letters")
    if amount.units < 0 or amount.nanos < 0:
        raise InvalidArgument("amount must not be negative")


def check_idempotency_key(key: str) -> None:
    """InvalidArgument unless the key is 1..128 printable ASCII characters."""
    if not 0 < len(key) <= MAX_KEY_LENGTH or not key.isascii() or not key.isprintable():
        raise InvalidArgument(f"idempotency key must be 1 to {MAX_KEY_LENGTH} printable ASCII characters")


class PaymentService:
    """Charges valid VISA and Mastercard cards; `today` gives the date card expiry is judged by.

    Every charge is recorded in the ledger before it is answered. A charge made with an idempotency
    key returns the same transaction id when asked again instead of charging twice (a different amount
    or card under it is refused), and `refund` voids it. `after_record` runs right after a charge is
    recorded (tests inject failures there). `draw` picks which charges the paymentFailure flag fails
    (a number in [0, 1) per charge; tests pin it).
    """

    def __init__(
        self,
        today: Callable[[], date] = utc_today,
        ledger: ChargeLedger | None = None,
        after_record: Callable[[], None] | None = None,
        draw: Callable[[], float] = random.random,
    ) -> None:
        self.today = today
        self.ledger = ledger or ChargeLedger()
        self.after_record = after_record
        self.draw = draw

    async def charge(self, amount: pb.Money, card: Card, idempotency_key: str | None = None) -> str:
        """Validate amount and card, then charge once per idempotency key and return the transaction id."""
        try:
            check_amount(amount)
            brand, digits = check_card(card, self.today())
            if idempotency_key is not None:
                check_idempotency_key(idempotency_key)
        except InvalidArgument as exc:
            log.info("charge declined", extra={"reason": exc.reason, "error": str(exc)})
            raise
        self._fail_if_flagged()
        fingerprint = f"{amount.currency_code}:{amount.units}:{amount.nanos}:{brand}:{digits[-4:]}"
        transaction_id = str(uuid.uuid4())
        key = idempotency_key if idempotency_key is not None else f"unkeyed:{transaction_id}"
        previous = await asyncio.to_thread(self.ledger.get, key) if idempotency_key is not None else None
        if previous is None:
            deadline.check("charge the card")  # the caller still waits: charging now is not charging blind
            previous = await asyncio.to_thread(self.ledger.record, key, fingerprint, transaction_id)
            if previous.transaction_id == transaction_id:
                if self.after_record is not None:
                    self.after_record()
                log.info(
                    "charge accepted",
                    extra={
                        "card_type": brand,
                        "card_last_four": digits[-4:],
                        "amount": str(money.to_decimal(amount)),
                        "currency": amount.currency_code,
                        "transaction_id": transaction_id,
                    },
                )
                return transaction_id
        if not previous.charged:
            raise FailedPrecondition("the charge under this idempotency key was voided; start a new order")
        if previous.fingerprint != fingerprint:
            raise InvalidArgument("idempotency key was already used for a different charge")
        log.info("charge repeated", extra={"transaction_id": previous.transaction_id})
        return previous.transaction_id

    def _fail_if_flagged(self) -> None:
        """Fail this charge, before anything is recorded, when the paymentFailure flag draws it.

        The charge fails with an error of the payment service, not a decline (the card is fine): the
        shop's UNAVAILABLE, which a caller may try again later, and nothing was charged.
        """
        fraction = flags().number(PAYMENT_FAILURE)
        if fraction > 0 and self.draw() < fraction:
            log.warning("charge failed on purpose", extra={"flag": PAYMENT_FAILURE, "fraction": fraction})
            raise Unavailable(
                f"Charge failed on purpose: the {PAYMENT_FAILURE} flag fails {fraction:.0%} of charges; "
                "nothing was charged",
                reason=Reason.FAULT_INJECTED,
                public_message="The payment could not be processed. Nothing was charged; try again later.",
                metadata={"flag": PAYMENT_FAILURE},
            )

    async def refund(self, idempotency_key: str) -> tuple[bool, str]:
        """Void the charge made under the key; (whether one was made, its transaction id).

        With no charge under the key yet, the key is marked void, so a charge still in flight under it
        is refused when it arrives: after a refund, nothing stands under that key, ever.
        """
        check_idempotency_key(idempotency_key)
        previous = await asyncio.to_thread(self.ledger.void, idempotency_key)
        refunded = previous is not None and previous.transaction_id != ""
        transaction_id = previous.transaction_id if previous is not None else ""
        log.info(
            "charge voided" if refunded else "key voided before any charge",
            extra={"transaction_id": transaction_id},
        )
        return refunded, transaction_id
