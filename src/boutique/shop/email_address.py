"""Email addresses as every shop service treats them: the shape accepted, and the masked form logs show.

Pure helpers shared by checkout (which validates the address before placing an order) and the email
service (which sends to it), so neither imports the other's domain code.
"""

from __future__ import annotations

from boutique.shop.errors import InvalidArgument

MAX_EMAIL_LENGTH = 254


def validate_email(email: str) -> None:
    """Raise InvalidArgument unless the address is `local@domain.tld`-shaped and at most 254 characters."""
    if not email:
        raise InvalidArgument("email is empty")
    if len(email) > MAX_EMAIL_LENGTH:
        raise InvalidArgument(f"email longer than {MAX_EMAIL_LENGTH} characters")
    if email.count("@") != 1:
        raise InvalidArgument("email must contain exactly one '@'")
    local, domain = email.split("@")
    if not local:
        raise InvalidArgument("email has nothing before the '@'")
    labels = domain.split(".")
    if len(labels) < 2 or not all(labels):
        raise InvalidArgument("email domain must contain a dot between non-empty parts, e.g. example.com")
    if any(ch.isspace() for ch in email):
        raise InvalidArgument("email must not contain spaces")


def mask_email(email: str) -> str:
    """The address with the local part hidden after its first character ('j***@example.com'), for logs."""
    local, sep, domain = email.rpartition("@")
    if not sep:
        return "***"
    return f"{local[:1]}***@{domain}"
