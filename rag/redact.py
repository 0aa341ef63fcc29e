"""Personal data out of text before it is indexed or trained on.

Patterns, script-neutral (digits next to Chinese characters still count):
e-mail addresses (written, or spoken as ``name at host dot com``), payment
card numbers (Luhn-checked, so order numbers and prices survive), ID numbers
(US social security numbers, Chinese 18-digit resident IDs, licence-style
letter+digit codes and other long digit runs) and phone numbers. Names are not
guessed: the ones configured in ``redaction.names`` are replaced where they
occur as whole words (anywhere, for names written in Chinese characters, which
have no word boundaries). Each match becomes a tag such as ``[PHONE]``, the
bracketed shape the insurance corpus already uses, so downstream code treats
both alike.

Known gaps, measured in ``tests/bench/bench_redact.py``: numbers read out as
words ("five five five ...") and names that are not configured stay as they are.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace
from functools import lru_cache

from copilot.schemas import Turn

_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
# Speech-to-text often writes an address the way it is said.
_SPOKEN_EMAIL = re.compile(
    r"(?<![\w.])(?:[\w+-]+(?:\s+dot\s+|\.))*[\w+-]+\s+at\s+[\w-]+(?:\s*(?:\.|\bdot\b)\s*[\w-]+)*?"
    r"\s*(?:\.|\bdot\b)\s*(?:com|net|org|edu|gov|io|co|us|uk|cn|info|biz)\b",
    re.IGNORECASE,
)
_CARD = re.compile(r"(?<!\d)(?:\d[ -]?){12,18}\d(?!\d)")
_SSN = re.compile(r"(?<![\d-])\d{3}[- ]\d{2}[- ]\d{4}(?![\d-])")
# Chinese resident ID: 6-digit region, birth date, 3-digit sequence, check digit (0-9 or X).
_CN_ID = re.compile(
    r"(?<![0-9A-Za-z])\d{6}(?:19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\d{3}[\dXx]"
    r"(?![0-9A-Za-z])"
)
# Licence and passport style codes (A1234567) and bare runs of 9+ digits; shorter
# runs are amounts, years and counts far more often than identifiers.
# Licence numbers written in dashed groups after a letter (Florida style: W426-545-30-761-0).
_DASHED_ID = re.compile(r"(?<![A-Za-z0-9])[A-Z]{1,2}\d{2,4}(?:-\d{1,4}){2,4}(?![A-Za-z0-9-])")
_ID = re.compile(r"(?<![A-Za-z0-9])(?:[A-Z]{1,2}\d{6,17}|\d{9,18})[0-9Xx]?(?![A-Za-z0-9])")
_PHONE = re.compile(
    r"(?<![A-Za-z0-9])(?:\+?\d{1,3}[ .-]?)?(?:\(\d{2,4}\)[ .-]?)?\d{3,4}[ .-]?\d{3,4}"
    r"(?:[ .-]?\d{2,4})?(?!\d)"
)
_CJK = re.compile(r"[\u3400-\u9fff]")


@dataclass(frozen=True)
class Redaction:
    """One span of personal data found in a text; offsets index the original text."""

    kind: str
    start: int
    end: int
    value: str

    @property
    def tag(self) -> str:
        return f"[{self.kind}]"


def _luhn(digits: str) -> bool:
    total, parity = 0, len(digits) % 2
    for i, ch in enumerate(digits):
        d = int(ch)
        if i % 2 == parity:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _is_card(value: str) -> bool:
    digits = re.sub(r"\D", "", value)
    return 13 <= len(digits) <= 19 and _luhn(digits)


_YEAR_RUN = re.compile(r"^(?:(?:19|20)\d{2}[ .-]?){2,3}$")
_ISO_DATE = re.compile(r"^(?:19|20)\d{2}-\d{2}-\d{2}$")


def _is_phone(value: str) -> bool:
    # "from 2019 2020" and ISO dates have phone-like digit counts; years survive.
    if _YEAR_RUN.match(value.strip()) or _ISO_DATE.match(value.strip()):
        return False
    return sum(c.isdigit() for c in value) >= 7


@lru_cache(maxsize=32)
def _name_pattern(names: tuple[str, ...]) -> re.Pattern[str] | None:
    cleaned = sorted({n.strip() for n in names if n.strip()}, key=len, reverse=True)
    if not cleaned:
        return None
    # Latin-script names as whole words (a trailing possessive 's goes with them);
    # names in Chinese characters anywhere, since the script has no spaces.
    latin = [re.escape(n) for n in cleaned if not _CJK.search(n)]
    cjk = [re.escape(n) for n in cleaned if _CJK.search(n)]
    parts = []
    if latin:
        parts.append(r"(?<!\w)(?:" + "|".join(latin) + r")(?:'s)?(?!\w)")
    if cjk:
        parts.append("(?:" + "|".join(cjk) + ")")
    return re.compile("|".join(parts))


# Most specific first: a card or an ID must not be half-eaten by the phone pattern.
_DETECTORS: tuple[tuple[str, re.Pattern[str], object], ...] = (
    ("EMAIL", _EMAIL, None),
    ("EMAIL", _SPOKEN_EMAIL, None),
    ("CARD", _CARD, _is_card),
    ("ID_NUMBER", _SSN, None),
    ("ID_NUMBER", _CN_ID, None),
    ("ID_NUMBER", _DASHED_ID, None),
    ("ID_NUMBER", _ID, None),
    ("PHONE", _PHONE, _is_phone),
)


def find_personal_data(text: str, names: Iterable[str] = ()) -> list[Redaction]:
    """Spans of personal data in ``text``, in order, none overlapping."""
    found: list[Redaction] = []
    taken = [False] * len(text)
    detectors = list(_DETECTORS)
    pattern = _name_pattern(tuple(names))
    if pattern is not None:
        detectors.append(("NAME", pattern, None))
    # Each detector sees the text with earlier finds blanked out, so a span next to one
    # already taken is still found on its own.
    masked = text
    for kind, regex, accept in detectors:
        for match in regex.finditer(masked):
            start, end = match.span()
            if any(taken[start:end]) or (accept is not None and not accept(match.group(0))):
                continue
            found.append(Redaction(kind, start, end, match.group(0)))
            taken[start:end] = [True] * (end - start)
        masked = "".join("\x00" if t else ch for ch, t in zip(text, taken, strict=True))
    return sorted(found, key=lambda r: r.start)


def redact(text: str, names: Iterable[str] = ()) -> str:
    """``text`` with e-mails, card, ID and phone numbers, and the configured ``names``, replaced by tags."""
    out, last = [], 0
    for span in find_personal_data(text, names):
        out.append(text[last : span.start])
        out.append(span.tag)
        last = span.end
    out.append(text[last:])
    return "".join(out)


def redact_turns(turns: Iterable[Turn], names: Iterable[str] = ()) -> list[Turn]:
    """Each turn with its text redacted; speaker and times unchanged."""
    names = tuple(names)
    return [replace(t, text=redact(t.text, names)) for t in turns]


def raw_turn_dicts(turns: Iterable[Turn]) -> list[dict[str, object]]:
    """Unredacted turns as JSON-ready dicts, for ``CallRecord.extra["raw_turns"]`` when
    ``redaction.keep_raw`` is set (the store keeps them; nothing indexes them)."""
    return [asdict(t) for t in turns]
