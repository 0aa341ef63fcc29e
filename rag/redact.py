"""Personal data out of text before it is indexed or trained on.

Patterns, not names (script-neutral: digits next to Chinese characters still count): phone numbers, e-mail addresses, payment card numbers
(Luhn-checked, so order numbers and prices survive) and long ID-like digit runs.
Each match becomes a tag such as ``[PHONE]``, the same shape the insurance
corpus already uses, so downstream code treats both alike.
"""

from __future__ import annotations

import re

_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_CARD = re.compile(r"(?<!\d)(?:\d[ -]?){13,19}(?!\d)")
_PHONE = re.compile(
    r"(?<![A-Za-z0-9])(?:\+?\d{1,3}[ .-]?)?(?:\(\d{2,4}\)[ .-]?)?\d{3,4}[ .-]?\d{3,4}(?:[ .-]?\d{2,4})?(?!\d)"
)
_ID = re.compile(r"(?<![A-Za-z0-9])[A-Z]{0,2}\d{9,18}[0-9Xx]?(?![A-Za-z0-9])")


def _luhn(digits: str) -> bool:
    total, parity = 0, len(digits) % 2
    for i, ch in enumerate(digits):
        d = int(ch)
        if i % 2 == parity:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _card(match: re.Match[str]) -> str:
    digits = re.sub(r"\D", "", match.group(0))
    return "[CARD]" if 13 <= len(digits) <= 19 and _luhn(digits) else match.group(0)


def redact(text: str) -> str:
    """``text`` with e-mails, card numbers, ID numbers and phone numbers replaced by tags."""
    text = _EMAIL.sub("[EMAIL]", text)
    text = _CARD.sub(_card, text)
    text = _ID.sub("[ID_NUMBER]", text)
    return _PHONE.sub(
        lambda m: "[PHONE]" if sum(c.isdigit() for c in m.group(0)) >= 7 else m.group(0), text
    )
