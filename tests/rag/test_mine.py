"""Objection mining: each customer objection paired with the rep's reply and the call's outcome,
and the `copilot objections --json` document that carries them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from copilot.objections import ObjectionDetector
from copilot.schemas import CallRecord, Turn
from copilot.settings import ObjectionSettings, OutcomeSettings
from rag.mine import mine_calls, reply_after
from tests.conftest import SAMPLE


def _call(call_id: str, outcome: str | None, *lines: tuple[str, str]) -> CallRecord:
    turns = [Turn(speaker, 2.0 * i, 2.0 * i + 2, text) for i, (speaker, text) in enumerate(lines)]
    return CallRecord(call_id, turns, "test", "transcript", f"hash-{call_id}", outcome=outcome)


WON = _call(
    "won-1",
    "won",
    ("rep", "Hi, this is Sam calling about your fleet cover."),
    ("customer", "Honestly, that's too expensive for us."),
    ("rep", "I hear you."),
    ("rep", "Let me show you what the deductible saves you."),
    ("rep", "A third rep turn that is not part of the reply."),
    ("customer", "Okay, go on then."),
    ("rep", "Thanks."),
    ("customer", "I need to talk to my wife first."),  # the call ends: nobody answered
)
LOST = _call(
    "lost-1",
    "lost",
    ("customer", "Can you call me back next month?"),
    ("rep", "Of course, I'll ring you on the first."),
)


def test_reply_is_the_rep_turns_up_to_the_next_customer_turn() -> None:
    assert reply_after(WON, 1) == (
        "I hear you. Let me show you what the deductible saves you.",
        8.0,
    )  # at most two rep turns, ending where the second one ends
    assert reply_after(WON, 5) == ("Thanks.", 14.0)
    assert reply_after(WON, 7) == ("", 16.0)


def test_mining_pairs_each_answered_objection_with_reply_and_outcome() -> None:
    detector = ObjectionDetector(ObjectionSettings())  # lexicon alone: no model in a quick test
    found = mine_calls([WON, LOST], detector, OutcomeSettings())

    assert [(o.call_id, o.turn_index, o.type) for o in found] == [
        ("won-1", 1, "price"),
        ("lost-1", 0, "timing"),
    ]  # "Okay, go on then." is no objection; the unanswered authority one gives no pair
    price, timing = found
    assert price.customer_text == "Honestly, that's too expensive for us."
    assert price.reply_text.startswith("I hear you.")
    assert (price.start, price.end) == (2.0, 8.0)
    assert (price.outcome, price.polarity) == ("won", 1)
    assert (timing.outcome, timing.polarity) == ("lost", -1)
    assert price.method == "lexicon" and price.score == 1.0


@pytest.mark.slow
def test_objections_json_lists_every_objection_with_call_words_reply_and_outcome(
    tmp_path: Path,
) -> None:
    env = {**os.environ, "COPILOT_DATA_DIR": str(tmp_path / "data")}

    def copilot(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "serve.cli", *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )

    ingested = copilot("ingest", str(SAMPLE / "call-text-01.txt"), "--outcome", "won")
    assert ingested.returncode == 0, ingested.stderr
    result = copilot("objections", "--json")
    assert result.returncode == 0, result.stderr

    document = json.loads(result.stdout)
    rows = document["objections"]
    assert [(o["turn_index"], o["type"]) for o in rows] == [
        (1, "price"),
        (3, "competitor"),
        (5, "authority"),
    ]
    assert document["counts"] == {"price": 1, "competitor": 1, "authority": 1}
    for o in rows:
        assert o["call_id"] == "call-text-01" and o["outcome"] == "won"
        assert o["customer_text"] and o["reply_text"]
    assert rows[0]["customer_text"].endswith("more expensive than our current plan.")
    assert rows[2]["reply_text"].startswith("Of course.")
