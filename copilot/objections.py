"""The objection taxonomy and the detector: a bilingual lexicon plus an embedding classifier.

The lexicon catches the plain phrasings fast and explains itself; the embedding
classifier catches the same objection phrased in other words, in any language the
configured embedder covers. The cues and prototypes below are English and Chinese
because those are the first users' languages; add others here, not in code paths.
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

# Substring cues, matched case-insensitively after Unicode normalisation. Chinese
# has no word boundaries, so cues are plain substrings in every language.
LEXICON: dict[str, tuple[str, ...]] = {
    "price": (
        "too expensive",
        "too much money",
        "too high",
        "cheaper",
        "lower price",
        "price is",
        "costs too much",
        "pricey",
        "better rate",
        "better price",
        "paying less",
        "太贵",
        "价格太高",
        "便宜一点",
        "降价",
        "能不能便宜",
    ),
    "budget": (
        "can't afford",
        "cannot afford",
        "no budget",
        "out of budget",
        "fixed income",
        "tight on money",
        "money is tight",
        "budget",
        "没有预算",
        "预算不够",
        "预算",
        "负担不起",
    ),
    "competitor": (
        "already have insurance",
        "already have a policy",
        "already with",
        "happy with my current",
        "another company",
        "other company",
        "other quote",
        "got a quote from",
        "competitor",
        "我们已经有",
        "竞争对手",
        "别家",
        "其他公司",
        "另一家",
    ),
    "timing": (
        "call me back",
        "call back later",
        "not right now",
        "not a good time",
        "busy right now",
        "maybe later",
        "next month",
        "next year",
        "in a few weeks",
        "i'm driving",
        "at work right now",
        "现在不方便",
        "以后再说",
        "下个月",
        "明年再",
        "晚点再",
    ),
    "authority": (
        "talk to my wife",
        "talk to my husband",
        "ask my wife",
        "ask my husband",
        "my boss",
        "not my decision",
        "need to check with",
        "discuss it with",
        "run it by",
        "我做不了主",
        "问一下老板",
        "跟领导商量",
        "和我老婆商量",
        "需要请示",
    ),
    "need": (
        "not interested",
        "don't need",
        "do not need",
        "no need",
        "don't want",
        "not looking",
        "i'm fine",
        "we're good",
        "no thanks",
        "no thank you",
        "不需要",
        "不感兴趣",
        "没兴趣",
        "用不上",
    ),
    "trust_risk": (
        "scam",
        "don't trust",
        "not comfortable giving",
        "don't give out",
        "personal information",
        "how did you get my number",
        "is this legit",
        "spam",
        "risky",
        "not sure about",
        "骗子",
        "不信任",
        "不放心",
        "怎么有我电话",
        "风险",
    ),
    "contract_terms": (
        "cancellation fee",
        "cancel fee",
        "locked in",
        "contract",
        "commitment",
        "penalty",
        "terms and conditions",
        "fine print",
        "auto renew",
        "合同",
        "违约金",
        "条款",
        "解约",
    ),
}

# Prototype sentences for the embedding classifier: a few per type, in both languages.
PROTOTYPES: dict[str, tuple[str, ...]] = {
    "price": (
        "That is way too expensive for me.",
        "I'm paying less than that right now.",
        "Your rate is higher than what I have.",
        "这个价格太贵了。",
    ),
    "budget": (
        "I just can't afford that right now.",
        "We don't have the budget for this.",
        "我们今年没有这笔预算。",
    ),
    "competitor": (
        "I already have insurance with another company.",
        "Another provider gave me a better quote.",
        "I'm happy with my current provider.",
        "我们已经在用别家的产品了。",
    ),
    "timing": (
        "Can you call me back later? I'm busy right now.",
        "This isn't a good time, maybe next month.",
        "现在不方便，下个月再联系吧。",
    ),
    "authority": (
        "I need to talk to my wife before deciding.",
        "It's not my decision, I have to ask my boss.",
        "这个我做不了主，要问一下领导。",
    ),
    "need": (
        "I'm not interested.",
        "I don't need this, thanks.",
        "We don't really need anything like that.",
        "我们不需要，谢谢。",
    ),
    "trust_risk": (
        "I don't give out personal information over the phone.",
        "How do I know this isn't a scam?",
        "I'm not comfortable sharing that.",
        "我不太放心，你们靠谱吗？",
    ),
    "contract_terms": (
        "Is there a cancellation fee if I switch?",
        "I don't want to be locked into a contract.",
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
    "好的，没问题。",
    "是的，对。",
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


def lexicon_types(text: str) -> list[str]:
    """The objection types whose lexicon cues occur in ``text``."""
    plain = normalise(_TAG.sub(" ", text))
    return [t for t, cues in LEXICON.items() if any(cue in plain for cue in cues)]


Embed = Callable[[Sequence[str]], np.ndarray]


class ObjectionDetector:
    """Classifies customer utterances into the taxonomy, or into no objection."""

    def __init__(self, settings: ObjectionSettings, embed: Embed | None = None):
        self.settings = settings
        self.embed = embed
        self._proto_types: list[str] = []
        self._proto_vectors: np.ndarray | None = None
        self._neutral_vectors: np.ndarray | None = None

    def _prototypes(self) -> tuple[np.ndarray, np.ndarray]:
        if self._proto_vectors is None:
            texts = [(t, s) for t, sents in PROTOTYPES.items() for s in sents]
            self._proto_types = [t for t, _ in texts]
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
        neutral_best = (vectors @ neutral.T).max(axis=1)
        out = []
        for row, neutral_sim in zip(proto_sim, neutral_best, strict=True):
            best: dict[str, float] = {}
            for t, s in zip(self._proto_types, row, strict=True):
                best[t] = max(best.get(t, -1.0), float(s))
            out.append((best, float(neutral_sim)))
        return out

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
