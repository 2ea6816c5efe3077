"""Scrub payment card numbers, CVVs and full email addresses out of log lines and OTLP log records.

The shop masks what it logs where it logs it (`mask_email`, a card's last four digits); what slips
through (an exception's message quoting a request, say) is caught twice more: in each JSON line's
message, exception and extra fields (`scrub_field`, never its ids or time), and in OTLP log records on
the way out, in the exporter's thread (never on the request path): a Luhn-valid run of 13 to 19 digits (spaces or dashes
between them allowed) keeps its last four digits, an email address keeps its first character and its
domain (`j***@example.com`, the form the shop's own lines use), a number after "cvv", "cvc" or
"security code" becomes `***`, and so does any value of an attribute whose key names a CVV.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from boutique.cards import luhn_valid

if TYPE_CHECKING:  # only the types: the JSON formatter of every process imports this module
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

_CARD = re.compile(r"(?<!\d)\d(?:[ -]?\d){12,18}(?!\d)")
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@([A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+)")
_CVV_TEXT = re.compile(r"(cvv2?|cvc2?|security[ _-]?code)([^0-9A-Za-z]{0,4})\d{3,4}(?!\d)", re.IGNORECASE)
_CVV_KEY = re.compile(r"cvv|cvc|security[ _-]?code", re.IGNORECASE)
MASK = "***"


def _mask_card(match: re.Match[str]) -> str:
    digits = re.sub(r"\D", "", match.group())
    if not 13 <= len(digits) <= 19 or not luhn_valid(digits):
        return match.group()
    return "*" * (len(digits) - 4) + digits[-4:]


def _mask_email(match: re.Match[str]) -> str:
    return f"{match.group()[:1]}{MASK}@{match.group(1)}"


def scrub_text(text: str) -> str:
    """The text with card numbers, email addresses and CVVs masked (unchanged, and cheap, when it has none)."""
    if any(char.isdigit() for char in text):
        text = _CARD.sub(_mask_card, text)
        text = _CVV_TEXT.sub(lambda m: f"{m.group(1)}{m.group(2)}{MASK}", text)
    if "@" in text:
        text = _EMAIL.sub(_mask_email, text)
    return text


def scrub_field(key: str, value: Any) -> Any:
    """A log line's field with secrets masked: strings scrubbed, any value of a key naming a CVV masked whole."""
    if _CVV_KEY.search(key):
        return MASK
    return scrub_text(value) if isinstance(value, str) else value


def _scrub_value(value: AnyValue, secret: bool = False) -> None:
    """Mask the strings inside one AnyValue in place; `secret` masks every scalar in it whole."""
    which = value.WhichOneof("value")
    if which == "string_value":
        if secret:
            value.string_value = MASK
        else:
            masked = scrub_text(value.string_value)
            if masked != value.string_value:
                value.string_value = masked
    elif which in ("int_value", "double_value") and secret:
        value.string_value = MASK
    elif which == "array_value":
        for item in value.array_value.values:
            _scrub_value(item, secret)
    elif which == "kvlist_value":
        scrub_pairs(value.kvlist_value.values, secret)


def scrub_pairs(pairs: Iterable[KeyValue], secret: bool = False) -> None:
    """Mask attribute values in place; a key naming a CVV masks its value whole."""
    for pair in pairs:
        _scrub_value(pair.value, secret or bool(_CVV_KEY.search(pair.key)))


def scrub_logs_request(request: ExportLogsServiceRequest) -> None:
    """Mask every log record's body and attributes in an export request, in place."""
    for resource_logs in request.resource_logs:
        for scope_logs in resource_logs.scope_logs:
            for record in scope_logs.log_records:
                _scrub_value(record.body)
                scrub_pairs(record.attributes)
