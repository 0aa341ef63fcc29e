"""The objection taxonomy and the detector: a bilingual lexicon plus an embedding classifier.

The lexicon catches the plain phrasings fast and explains itself; the embedding
classifier catches the same objection phrased in other words, in any language the
configured embedder covers. The cues and prototypes below are English and Chinese
because those are the first users' languages; add others here, not in code paths.

Precision and recall per type on a labelled set from the real calls and dialogues
are measured by tests/bench/bench_objections.py (see data/labels/objections/). The
lexicon does most of the work there: the prototypes add recall and decide between
types when several cues fire. NOTE: a head learned from labelled turns did no better
on that set (logistic regression over MiniLM, in the same bench); revisit once a team
has a few hundred corrected labels of its own.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from copilot.settings import ObjectionSettings

logger = logging.getLogger(__name__)

TYPES = (
    "price",
    "budget",
    "competitor",
    "timing",
    "authority",
    "need",
    "trust_risk",
    "contract_terms",
    "other",
)

# Cues, matched case-insensitively after Unicode normalisation. A cue whose edge is a
# letter of a spaced script must sit on a word boundary ("later" is not in
# "translater"); Chinese and other scripts without spaces match as plain substrings.
# A cue may fire for text that is no objection ("budget" in "I always make room in my
# budget"); the embedding decides between types, and the measured precision says
# how often a cue misleads (tests/bench/bench_objections.py).
LEXICON: dict[str, tuple[str, ...]] = {
    "price": (
        "too expensive",
        "more expensive",
        "too much money",
        "too high",
        "you're high",
        "a lot of money for",
        "cheaper",
        "lower price",
        "price is higher",
        "price is too",
        "costs too much",
        "pricey",
        "better rate",
        "better price",
        "paying less",
        "pay less",
        "can't touch that",
        "can't beat",
        "come close to what i pay",
        "don't pay much",
        "don't pay very much",
        "not worth the",
        "太贵",
        "价格太高",
        "便宜一点",
        "降价",
        "能不能便宜",
        "贵了",
        "不值这个价",
    ),
    "budget": (
        "can't afford",
        "cannot afford",
        "can afford",
        "no budget",
        "out of budget",
        "over budget",
        "over our budget",
        "than we budgeted",
        "tight budget",
        "fixed income",
        "tight on money",
        "money is tight",
        "money is that tight",
        "finances are",
        "short on cash",
        "don't have money",
        "don't have the money",
        "don't have any money",
        "don't have much money",
        "don't have a lot of money",
        "need the money",
        "i'm poor",
        "poor person",
        "money is not here",
        "can't even pay",
        "financially",
        "没有预算",
        "预算不够",
        "超预算",
        "负担不起",
        "没钱",
        "资金紧张",
        "手头紧",
    ),
    "competitor": (
        "already have insurance",
        "already have a policy",
        "already have the",
        "already with",
        "already signed",
        "signed on with",
        "happy with my current",
        "happy with the one",
        "been with them",
        "another company",
        "other company",
        "through another",
        "other quote",
        "another quote",
        "other quotes",
        "got a quote from",
        "offer from",
        "competitor",
        "i'd rather go with",
        "other charities",
        "locally",
        "local to my area",
        "我们已经有",
        "已经在用",
        "竞争对手",
        "别家",
        "其他公司",
        "另一家",
        "其他供应商",
    ),
    "timing": (
        "call me back",
        "call back later",
        "not right now",
        "not now",
        "not today",
        "not at this time",
        "not at the present time",
        "not a good time",
        "another time",
        "busy right now",
        "maybe later",
        "next month",
        "next year",
        "in a few weeks",
        "i'm driving",
        "at work right now",
        "on the clock",
        "got to go",
        "gotta go",
        "have to go",
        "don't have time",
        "don't have that much time",
        "no time",
        "a lot of time",
        "when my policy expires",
        "policy expires",
        "time off",
        "现在不方便",
        "以后再说",
        "下个月",
        "明年再",
        "晚点再",
        "没时间",
        "改天",
        "在开会",
    ),
    "authority": (
        "talk to my wife",
        "talk to my husband",
        "ask my wife",
        "ask my husband",
        "after i talk to",
        "talk to our",
        "check with our",
        "my boss",
        "not my decision",
        "need to check with",
        "discuss it with",
        "run it by",
        "need to approve",
        "sign off on",
        "我做不了主",
        "问一下老板",
        "跟领导商量",
        "和我老婆商量",
        "需要请示",
        "领导批准",
    ),
    "need": (
        "not interested",
        "don't need",
        "do not need",
        "no need",
        "don't want",
        "do not want",
        "do not wish",
        "not willing",
        "not looking",
        "not shopping",
        "i'm fine with what",
        "we're good",
        "no thanks",
        "no thank you",
        "thanks anyway",
        "thank you, but no",
        "don't worry about it",
        "already have that",
        "already got all that",
        "don't own a",
        "unable to help",
        "can't do that",
        "cannot do that",
        "not going to",
        "i will not",
        "won't be able to",
        "not able to",
        "sorry, no",
        "不需要",
        "不感兴趣",
        "没兴趣",
        "用不上",
        "不用了",
        "不想要",
    ),
    "trust_risk": (
        "scam",
        "don't trust",
        "do not trust",
        "not comfortable",
        "don't know if i'm comfortable",
        "don't give out",
        "personal information",
        "get my information",
        "how did you get my number",
        "is this legit",
        "spam",
        "risky",
        "skeptical",
        "sceptical",
        "scandal",
        "reputation",
        "no guarantee",
        "how do i know",
        "how do we know",
        "how confident",
        "what if it doesn't",
        "what if we don't",
        "data security",
        "squander",
        "lying",
        "i question",
        "question the",
        "doubt",
        "biased",
        "no facts",
        "never seen any",
        "what i had heard",
        "not sure about",
        "骗子",
        "不信任",
        "不放心",
        "怎么有我电话",
        "风险",
        "靠谱吗",
        "信不过",
        "数据安全",
    ),
    "contract_terms": (
        "cancellation",
        "cancel fee",
        "early termination",
        "locked in",
        "contract",
        "commitment",
        "penalty",
        "terms and conditions",
        "fine print",
        "auto renew",
        "pay monthly",
        "do monthly",
        "payment terms",
        "合同",
        "违约金",
        "条款",
        "解约",
        "付款方式",
        "按月付",
    ),
}

# Prototype sentences for the embedding classifier, in both languages. They are
# written for this project, phrased the way buyers push back in any trade (not only
# insurance), so that the classifier carries over to a team's own calls.
PROTOTYPES: dict[str, tuple[str, ...]] = {
    "price": (
        "That is way too expensive for me.",
        "I'm paying less than that right now.",
        "Your rate is higher than what I have.",
        "You can't beat what I pay now.",
        "That's more than it's worth.",
        "Can you do it for less?",
        "这个价格太贵了。",
        "你们比别人贵多了。",
    ),
    "budget": (
        "I just can't afford that right now.",
        "We don't have the budget for this.",
        "Money is really tight for us at the moment.",
        "I don't have any spare money.",
        "I need every dollar I have.",
        "我们今年没有这笔预算。",
        "最近手头比较紧。",
    ),
    "competitor": (
        "I already have insurance with another company.",
        "Another provider gave me a better quote.",
        "I'm happy with my current provider.",
        "I've been with them for years.",
        "I'd rather stay with the one I use now.",
        "I prefer to buy from a local company I know.",
        "我们已经在用别家的产品了。",
        "我们一直跟现在的供应商合作。",
    ),
    "timing": (
        "Can you call me back later? I'm busy right now.",
        "This isn't a good time, maybe next month.",
        "I have to go, I don't have time for this now.",
        "Not today, maybe some other time.",
        "Let's revisit this when my current plan runs out.",
        "现在不方便，下个月再联系吧。",
        "我现在没时间，改天再说。",
    ),
    "authority": (
        "I need to talk to my wife before deciding.",
        "It's not my decision, I have to ask my boss.",
        "Let me run it by my partner first.",
        "这个我做不了主，要问一下领导。",
    ),
    "need": (
        "I'm not interested.",
        "I don't need this, thanks.",
        "We don't really need anything like that.",
        "No thank you, I'll pass.",
        "I'm not willing to do that.",
        "I don't want to sign up for anything.",
        "我们不需要，谢谢。",
        "不用了，我不感兴趣。",
    ),
    "trust_risk": (
        "I don't give out personal information over the phone.",
        "How do I know this isn't a scam?",
        "I'm not comfortable sharing that.",
        "I'm skeptical that this actually works.",
        "I've heard bad things about that company.",
        "What if it doesn't deliver what you promise?",
        "I doubt the money goes where you say it does.",
        "我不太放心，你们靠谱吗？",
        "我听说你们公司口碑不好。",
    ),
    "contract_terms": (
        "Is there a cancellation fee if I switch?",
        "I don't want to be locked into a contract.",
        "Can we pay monthly instead of a year up front?",
        "合同里的违约金是多少？",
    ),
}

# Ordinary customer utterances: the classifier must be clearly closer to an
# objection than to these before it calls something an objection.
NOT_OBJECTION: tuple[str, ...] = (
    "Yes, that's correct.",
    "Okay, sounds good.",
    "My date of birth is in March.",
    "I drive a Honda Civic.",
    "Sure, go ahead.",
    "I live in the city.",
    "Can you repeat that?",
    "What does that cover?",
    "I pay about a hundred dollars a month.",
    "I have full coverage on both cars.",
    "That sounds like a great idea, I'd like to help.",
    "How do I sign up?",
    "Thanks for explaining that.",
    "I'm doing well, how are you?",
    "好的，没问题。",
    "是的，对。",
    "我每个月付三百块。",
    "听起来不错，怎么办理？",
)


@dataclass(frozen=True)
class Detection:
    type: str
    score: float
    method: str  # "lexicon", "embedding" or "both"


def normalise(text: str) -> str:
    """Case-fold and NFKC-normalise, and straighten quotes, so cues match across scripts."""
    text = unicodedata.normalize("NFKC", text).casefold()
    return text.replace("\u2019", "'").replace("\u2018", "'")


_TAG = re.compile(r"\[[A-Z_]+\]")


def _bounded(ch: str) -> bool:
    """Whether a cue edge needs a word boundary: letters and digits of spaced scripts do,
    wide (CJK) characters do not, since those scripts write no spaces between words."""
    return ch.isalnum() and unicodedata.east_asian_width(ch) not in ("W", "F")


def _cue_pattern(cue: str) -> str:
    head = r"(?<!\w)" if _bounded(cue[0]) else ""
    tail = r"(?!\w)" if _bounded(cue[-1]) else ""
    return head + re.escape(cue) + tail


_CUES = {
    t: re.compile("|".join(_cue_pattern(normalise(c)) for c in cues)) for t, cues in LEXICON.items()
}


def lexicon_types(text: str) -> list[str]:
    """The objection types whose lexicon cues occur in ``text``."""
    plain = normalise(_TAG.sub(" ", text))
    return [t for t, pattern in _CUES.items() if pattern.search(plain)]


Embed = Callable[[Sequence[str]], np.ndarray]


class ObjectionDetector:
    """Classifies customer utterances into the taxonomy, or into no objection."""

    def __init__(self, settings: ObjectionSettings, embed: Embed | None = None):
        self.settings = settings
        self.embed = embed
        self._proto_types: list[str] = []
        self._proto_owner: np.ndarray | None = None
        self._proto_vectors: np.ndarray | None = None
        self._neutral_vectors: np.ndarray | None = None

    def _prototypes(self) -> tuple[np.ndarray, np.ndarray]:
        if self._proto_vectors is None:
            texts = [(t, s) for t, sents in PROTOTYPES.items() for s in sents]
            self._proto_types = list(PROTOTYPES)
            # which prototype rows belong to each type, for a per-type max in one pass
            self._proto_owner = np.array([self._proto_types.index(t) for t, _ in texts])
            self._proto_vectors = _unit(self.embed([s for _, s in texts]))
            self._neutral_vectors = _unit(self.embed(list(NOT_OBJECTION)))
        return self._proto_vectors, self._neutral_vectors

    def detect(self, texts: Sequence[str]) -> list[Detection | None]:
        """One detection (or None) per utterance."""
        results: list[Detection | None] = []
        lexical = [lexicon_types(t) for t in texts]
        similarities = self._similarities(texts) if self.embed is not None and texts else None

        for i, text in enumerate(texts):
            if len(text.strip()) < self.settings.min_chars and not lexical[i]:
                results.append(None)
                continue
            results.append(
                self._decide(lexical[i], None if similarities is None else similarities[i])
            )
        return results

    def _similarities(self, texts: Sequence[str]) -> list[tuple[dict[str, float], float]]:
        protos, neutral = self._prototypes()
        vectors = _unit(self.embed([_TAG.sub(" ", t) for t in texts]))
        proto_sim = vectors @ protos.T
        by_type = np.stack(
            [
                proto_sim[:, self._proto_owner == k].max(axis=1)
                for k in range(len(self._proto_types))
            ],
            axis=1,
        )
        neutral_best = (vectors @ neutral.T).max(axis=1)
        return [
            (dict(zip(self._proto_types, row.tolist(), strict=True)), float(n))
            for row, n in zip(by_type, neutral_best, strict=True)
        ]

    def _decide(
        self, lexical: list[str], sims: tuple[dict[str, float], float] | None
    ) -> Detection | None:
        if sims is None:
            return Detection(lexical[0], 1.0, "lexicon") if lexical else None

        by_type, neutral = sims
        best_type = max(by_type, key=by_type.get)
        best = by_type[best_type]
        embedded = (
            best >= self.settings.min_similarity and best - neutral >= self.settings.min_margin
        )

        if lexical:
            # Several cues fired: the embedding decides between them.
            chosen = max(lexical, key=lambda t: by_type.get(t, 0.0))
            agrees = embedded and best_type == chosen
            return Detection(
                chosen, max(by_type.get(chosen, 0.0), 0.5), "both" if agrees else "lexicon"
            )
        if embedded:
            return Detection(best_type, best, "embedding")
        return None


def _unit(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.clip(norms, 1e-9, None)
