"""Payment card number checks shared by the shop (validating a charge) and the log scrubbers.

Free of imports: the shop, the mesh and the observatory all use it.
"""

from __future__ import annotations


def luhn_valid(digits: str) -> bool:
    """Whether a digit string passes the Luhn (mod 10) checksum payment card numbers carry."""
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char)
        if index % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0
