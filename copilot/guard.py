"""The output guard: a reply that breaks the pricing rules or echoes planted text never reaches a rep.

    guard = ReplyGuard(max_discount=0.3, untrusted=[excerpt, ...], allowed=[won_reply, ...])
    verdict = guard.check(reply)          # Verdict(ok=False, reason="discount_above_limit", ...)
    final, verdict = guard.safe_reply(reply, question=text, kind="chat")

Prompt fencing (copilot/prompts.py) makes the boundary clear, but a small model
still copies what it reads. So the reply itself is checked, with two rules that
need no language model and no per-language phrase list:

1. **Discounts above ``quotes.max_discount``.** Any percentage in the reply over the
   limit (``90%``, ``90 ％``, ``百分之九十``, ``90 percent``) or a Chinese "N折" price
   (一折 = pay 10 % = 90 % off) deeper than it. A percentage is not always a
   discount ("98% uptime"), so a figure that appears in the manager's own
   knowledge notes (``trusted``) is allowed; any other is treated as an offer.
   Replacing a harmless reply costs the rep a generic answer; letting a 90 %
   discount through costs the margin. We accept the first.
2. **Echoed data.** The reply repeats a span of ``ECHO_UNITS`` words (CJK characters
   count one each) verbatim from the untrusted data (the serving layer passes what
   customers said in the cited calls, and the account facts) that is not part of a
   reply from a won call (``allowed``, which the copilot is meant to reuse). A rep's
   reply has no reason to recite long stretches of what the customer or the CRM
   said; doing so is how a planted instruction surfaces. Text planted where a rep
   spoke is left to rule 1: reusing reps' words is the copilot's job.

A flagged reply is replaced by a fixed safe reply in the question's script (Chinese
or English), never by a reply from a won call: whoever uploads a call marked "won"
writes those replies, so picking one would let them choose what a rep is told.
NOTE: other languages get the English fallback until SAFE_REPLIES has their text.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

logger = logging.getLogger(__name__)

ECHO_UNITS = 6  # words (or CJK characters) copied in a row from untrusted data

# Customer-facing (objection handling) and rep-facing (chat) fallbacks, by script.
SAFE_REPLIES = {
    "objection": {
        "en": "I can't promise that on this call, but I'll check what we can do on price "
        "and come back to you today with a concrete offer.",
        "zh": "这个我现在没法答应您，但我会马上确认价格上能做些什么，今天给您一个具体的方案。",
    },
    "chat": {
        "en": "I can't suggest that: the draft broke the pricing rules or repeated quoted call "
        "or account text. Check this account's quote strategies, or ask your manager.",
        "zh": "这条建议不能给出：草稿超出了定价规则，或照搬了通话或客户资料里的原文。"
        "请先查看该客户的报价策略，或请示经理。",
    },
}

_CJK_DIGITS = {"零": 0, "〇": 0, "一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5}
_CJK_DIGITS |= {"六": 6, "七": 7, "八": 8, "九": 9}
_CJK_NUMBER = "[零〇一二两三四五六七八九十百点]+"
_NUMBER = r"\d+(?:[.,]\d+)?"
# "90%", "90 ％", "90 percent", "90 per cent", "百分之九十", "百分之90".
_PERCENT = re.compile(
    rf"(?P<num>{_NUMBER})\s*(?:%|％|per\s?cent\b)|百分之\s*(?P<zh>{_NUMBER}|{_CJK_NUMBER})",
    re.IGNORECASE,
)
# Chinese discount notation: "9折" / "九折" = pay 90 %, "7.5折" / "七五折" = pay 75 %.
_ZHE = re.compile(r"(?P<num>\d+(?:\.\d+)?|[一二三四五六七八九][一二三四五六七八九]?)\s*折(?!扣)")
_UNIT = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]|[^\W_]+", re.UNICODE)


@dataclass(frozen=True)
class Verdict:
    ok: bool
    reason: str | None = None  # "discount_above_limit" | "echoes_quoted_data"
    detail: str | None = None  # the offending text, for the log


OK = Verdict(ok=True)


def _cjk_number(text: str) -> float | None:
    """A Chinese numeral up to the hundreds ("九十", "一百", "七十五", "二点五"), or None."""
    whole, _, frac = text.partition("点")
    value = 0
    current = 0
    for char in whole:
        if char in _CJK_DIGITS:
            current = _CJK_DIGITS[char]
        elif char == "十":
            value += (current or 1) * 10
            current = 0
        elif char == "百":
            value += (current or 1) * 100
            current = 0
        else:
            return None
    value += current
    if frac:
        digits = [_CJK_DIGITS.get(c) for c in frac]
        if None in digits:
            return None
        value += float("0." + "".join(str(d) for d in digits))
    return float(value)


def _number(text: str) -> float | None:
    if re.fullmatch(_NUMBER, text):
        return float(text.replace(",", "."))
    return _cjk_number(text)


def percentages(text: str) -> list[tuple[float, str]]:
    """Every percentage in ``text`` as (share 0-1, the matched text)."""
    found = []
    for match in _PERCENT.finditer(text):
        value = _number(match["num"] or match["zh"])
        if value is not None:
            found.append((value / 100, match[0]))
    return found


def discounts(text: str) -> list[tuple[float, str]]:
    """Discounts ``text`` states or may state, as (share off 0-1, the matched text).

    Percentages count as given (we cannot tell "90% off" from "90% of" without knowing
    the language); "N折" prices count as 1 - N/10.
    """
    found = percentages(text)
    for match in _ZHE.finditer(text):
        raw = match["num"]
        if raw[0].isdigit():
            paid = float(raw)
        else:
            digits = [_CJK_DIGITS[c] for c in raw]
            paid = digits[0] + (digits[1] / 10 if len(digits) > 1 else 0)
        if 0 < paid < 10:
            found.append((1 - paid / 10, match[0]))
    return found


def _units(text: str) -> list[str]:
    """Words and single CJK characters, case-folded and NFKC-normalised (punctuation dropped)."""
    return _UNIT.findall(unicodedata.normalize("NFKC", text).casefold())


def _grams(units: list[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(units[i : i + n]) for i in range(len(units) - n + 1)}


def script_of(text: str) -> str:
    """The fallbacks' script for ``text``: "zh" when it has CJK characters, else "en"."""
    return "zh" if re.search(r"[\u3400-\u9fff]", text or "") else "en"


class ReplyGuard:
    """Checks replies against the discount limit and against echoes of untrusted data."""

    def __init__(
        self,
        max_discount: float,
        untrusted: Iterable[str] = (),
        allowed: Iterable[str] = (),
        trusted: Iterable[str] = (),
    ):
        self.max_discount = max_discount
        allowed_grams: set[tuple[str, ...]] = set()
        for text in allowed:
            allowed_grams |= _grams(_units(text), ECHO_UNITS)
        self._echo: set[tuple[str, ...]] = set()
        for text in untrusted:
            self._echo |= _grams(_units(text), ECHO_UNITS) - allowed_grams
        # Figures the manager's notes state (e.g. "99.9% uptime") are facts, not offers.
        self._trusted_figures = {round(v, 6) for t in trusted for v, _ in discounts(t)}

    def check(self, reply: str) -> Verdict:
        for share, text in discounts(reply):
            if share > self.max_discount + 1e-9 and round(share, 6) not in self._trusted_figures:
                return Verdict(False, "discount_above_limit", text)
        if self._echo:
            for gram in _grams(_units(reply), ECHO_UNITS):
                if gram in self._echo:
                    return Verdict(False, "echoes_quoted_data", " ".join(gram))
        return OK

    def safe_reply(self, reply: str, question: str, kind: str = "objection") -> tuple[str, Verdict]:
        """``reply`` if it passes, else the fixed safe reply; with the verdict on ``reply``."""
        verdict = self.check(reply)
        if verdict.ok:
            return reply, verdict
        logger.warning(
            "guard replaced a reply (%s: %r)", verdict.reason, (verdict.detail or "")[:80]
        )
        return fallback(question, kind), verdict


def fallback(question: str, kind: str = "objection") -> str:
    """The fixed safe reply for ``kind`` ("objection" or "chat") in the question's script."""
    return SAFE_REPLIES[kind][script_of(question)]
