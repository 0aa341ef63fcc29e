"""Retrieval limited to the accounts a caller may see: the filter holds on both sides of
the hybrid search and is applied before ranking, so the other team's calls never crowd
the visible ones out of the top ``k``."""

from __future__ import annotations

from pathlib import Path

import pytest

from copilot.settings import load_settings
from rag.chunk import chunk_call
from rag.index import ChunkIndex
from rag.retrieve import MODES, ChunkFilter, references, search
from tests.rag.test_retrieve import HashEmbedder, _call

PRICE = "the price is too high for our budget"

# The East team's calls match the question far better than West's one call does.
EAST = [
    _call(
        f"east-{n}",
        [
            ("rep", "Thanks for your time today."),
            ("customer", "The price is too high for our budget, honestly too high."),
            ("rep", f"East secret {n}: we matched the price with a bundle."),
        ],
        outcome="won",
        account_id="acct-east",
    )
    for n in range(6)
]
WEST = _call(
    "west-1",
    [
        ("rep", "Good morning."),
        ("customer", "Our budget is tight this quarter."),
        ("rep", "We can spread the payments over the year."),
    ],
    outcome="won",
    account_id="acct-west",
)
NO_ACCOUNT = _call(
    "orphan-1",
    [
        ("rep", "Hello."),
        ("customer", "The price is too high for our budget."),
        ("rep", "Orphan reply about the price."),
    ],
    outcome="won",
)


@pytest.fixture()
def index(tmp_path: Path) -> ChunkIndex:
    settings = load_settings(data_dir=tmp_path / "data")
    idx = ChunkIndex(settings, embedder=HashEmbedder())
    calls = [*EAST, WEST, NO_ACCOUNT]
    idx.replace_calls({c.call_id: chunk_call(c, settings.index, settings.outcomes) for c in calls})
    return idx


@pytest.mark.parametrize("mode", MODES)
def test_an_account_allow_list_holds_on_every_side(index: ChunkIndex, mode) -> None:
    west = ChunkFilter(account_ids=("acct-west",))
    # k=2 with six better-matching East calls: a post-filtered top-k would come back empty
    hits = search(index, PRICE, 2, west, mode=mode)
    assert hits and {h.call_id for h in hits} == {"west-1"}, (mode, hits)

    everyone = {h.call_id for h in search(index, PRICE, 20, mode=mode)}
    assert {"east-0", "orphan-1"} <= everyone


def test_references_for_a_team_never_include_other_or_account_less_calls(
    index: ChunkIndex,
) -> None:
    cited = references(index, PRICE, 4, account_ids=("acct-west",))
    assert [c.call_id for c, _ in cited] == ["west-1"]
    assert "East secret" not in " ".join(c.text + reply for c, reply in cited)

    unlimited = {c.call_id for c, _ in references(index, PRICE, 4)}
    assert unlimited & {e.call_id for e in EAST}


def test_an_empty_allow_list_matches_nothing(index: ChunkIndex) -> None:
    nobody = ChunkFilter(account_ids=())
    assert nobody.matches_nothing
    assert search(index, PRICE, 5, nobody) == []
    assert references(index, PRICE, 5, account_ids=()) == []
    with pytest.raises(ValueError, match="account_ids is empty"):
        nobody.where()
