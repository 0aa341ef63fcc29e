"""Talking points for quote strategies: cited won-call excerpts, or the quote's own facts."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest

from copilot.quotes import quote_strategies
from copilot.settings import load_settings
from rag.retrieve import SearchHit
from serve.service import CopilotService
from serve.talking_points import (
    MAX_CHARS,
    NO_CALLS,
    REP_WORDS,
    TalkingPointWriter,
    first_line,
    unsupported_figures,
)
from tests.conftest import SAMPLE
from tests.copilot.test_quotes import CURVE, SETTINGS, make_context, product, stock


def gtx_context():
    return make_context(
        [
            product("GTX Pro", 4821, unit_cost=3000, series="GTX"),
            product("GTX Basic", 550, unit_cost=300, series="GTX"),
        ],
        stocks=[stock("GTX Pro", 10, incoming=20, eta_days=5), stock("GTX Basic", 500)],
    )


def test_with_no_calls_the_points_restate_the_quote_and_say_so(service: CopilotService) -> None:
    strategies = quote_strategies(
        gtx_context(),
        [("GTX Pro", 12)],
        0.5,
        CURVE,
        SETTINGS,
        talking_points=TalkingPointWriter(service),
    )
    volume = strategies[1]
    assert [p.text for p in volume.talking_points] == [
        "Volume and 24-month term: 4,435.32 USD per unit (8% off list), 79,835.76 USD in all",
        "18 x GTX Pro (asked: 12) at 8.0% off list",
        "the same unit prices on repeat orders over a 24-month commitment",
    ]
    for strategy in strategies:
        assert len(strategy.talking_points) == 3
        assert all(p.citations == [] and p.note == NO_CALLS for p in strategy.talking_points)
    assert service._index is None and service._generator is None  # nothing was loaded


def test_first_line_keeps_the_text_in_any_language() -> None:
    assert first_line("\n\n1. Lock today's price for two years.\n2. More") == (
        "Lock today's price for two years."
    )
    assert first_line("一、锁定两年价格\n二、免费培训") == "锁定两年价格"
    assert first_line("- <<Onboarding is included>>") == "Onboarding is included"
    assert first_line("1.5 times the volume at 8 % off") == "1.5 times the volume at 8 % off"
    long = first_line("x" * 500)
    assert len(long) == MAX_CHARS and long.endswith("…")
    assert first_line("   \n  ") == ""


# --- the model held to the offer's figures and to the time budget (a fake model) -----------

OWN_REPLY = "For 18 units I can do 8% off and hold the price for 24 months."
OTHER_REPLY = "签两年合同，单价锁定，再送培训。"


def won_hit(call_id: str, question: str, reply: str) -> SearchHit:
    return SearchHit(
        call_id=call_id,
        start=12.0,
        end=31.5,
        speaker="rep",
        text=f"Customer: {question}\nRep: {reply}",
        score=1.0,
        chunk_id=f"{call_id}-3",
        outcome="won",
        reply_text=reply,
    )


@pytest.fixture
def fake_calls(monkeypatch):
    """Two won calls found for every strategy: the account's own, then another account's."""
    own = won_hit("call-own", "Is 8% the best you can do?", OWN_REPLY)
    other = won_hit("call-other", "价格太高了。", OTHER_REPLY)

    def retrieve(index, query, k, polarity=None, account_id=None, with_reply=False):
        assert polarity == 1 and with_reply
        return [own] if account_id == "Acme" else [other, own]

    monkeypatch.setattr("rag.retrieve.retrieve", retrieve)


class FakeModel:
    """Writes the given lines in turn, taking ``seconds`` for each; records the prompts."""

    def __init__(self, *lines: str, seconds: float = 0.0):
        self.lines, self.seconds, self.prompts = lines, seconds, []

    def chat(self, messages):
        time.sleep(self.seconds)
        self.prompts.append(messages[-1]["content"])
        return self.lines[(len(self.prompts) - 1) % len(self.lines)]


def fake_service(model: FakeModel):
    store = SimpleNamespace(counts=lambda: {"calls": 2})
    return SimpleNamespace(store=store, index=None, generator=model)


def volume_strategy():
    return quote_strategies(gtx_context(), [("GTX Pro", 12)], 0.5, CURVE, SETTINGS)[1]


def test_figures_must_be_in_the_offer_or_the_excerpt_in_any_script() -> None:
    offer = (
        "4,435.32 USD per unit (8% off list), 79,835.76 USD in all\n"
        "- 18 x GTX Pro (asked: 12) at 8.0% off list\n- over a 24-month commitment"
    )
    # what the bundled model wrote in a real quote, and the like
    assert unsupported_figures("a 3.12% discount on every unit", [offer]) == ["3.12%"]
    assert unsupported_figures("1.2% off the list price of 8.0%", [offer]) == ["1.2%"]
    assert unsupported_figures("优惠10%，单价4,435.32美元", [offer]) == ["10%"]
    assert unsupported_figures("only 4,400 a unit", [offer]) == ["4,400"]
    assert unsupported_figures("24% off", [offer]) == ["24%"]  # a % needs a % in the offer
    # within the rounding written, in any script's digits and separators
    assert unsupported_figures("８％ off, ４，４３５.３２ USD per unit", [offer]) == []
    assert unsupported_figures("单价约４４３５美元，共18台，优惠8%", [offer]) == []
    assert unsupported_figures("٨٪ de descuento, 4.435,32 USD, 79.836 en total", [offer]) == []
    assert unsupported_figures("lock the price for two years", [offer]) == []
    # the excerpt counts as well as the offer
    assert unsupported_figures("as 30 stores found", [offer]) == ["30"]
    assert unsupported_figures("as 30 stores found", [offer, "we equipped 30 stores"]) == []


def test_a_point_with_a_made_up_figure_falls_back_to_the_reps_words(fake_calls) -> None:
    model = FakeModel("A 3.12% discount makes this easy.", "优惠８％，单价锁定２４个月。")
    [points] = TalkingPointWriter(fake_service(model))([volume_strategy()], gtx_context())

    assert [p.citations[0].call_id for p in points] == ["call-own", "call-other"]
    invented, kept = points
    assert invented.text == OWN_REPLY  # the rep's reply in the cited excerpt
    assert invented.note == (
        "the rep's words in the won call: the model wrote 3.12%, in neither the offer nor "
        "the excerpt"
    )
    excerpt = f"Customer: Is 8% the best you can do?\nRep: {OWN_REPLY}"
    assert invented.citations[0].text == excerpt
    # 8% and 24 are in the offer the model was given
    assert kept.text == "优惠８％，单价锁定２４个月。" and kept.note is None
    assert "(8% off list)" in model.prompts[1] and OTHER_REPLY in model.prompts[1]


def test_once_the_time_budget_is_spent_the_points_are_the_reps_words(fake_calls, caplog) -> None:
    model = FakeModel("Lock today's price in.", seconds=0.6)
    writer = TalkingPointWriter(fake_service(model), time_budget_s=0.5)
    strategies = quote_strategies(gtx_context(), [("GTX Pro", 12)], 0.5, CURVE, SETTINGS)

    started = time.monotonic()
    points = writer(strategies, gtx_context())
    assert time.monotonic() - started < 0.6 + 0.5  # one generation, the rest not started

    assert len(model.prompts) == 1 and [len(p) for p in points] == [2, 2, 2]
    first, *rest = [point for each in points for point in each]
    assert first.text == "Lock today's price in." and first.note is None
    out_of_time = (
        "the rep's words in the won call: the time budget for talking points (0.5 s a quote) "
        "ran out"
    )
    assert [(p.text, p.note) for p in rest] == [
        (OTHER_REPLY, out_of_time),
        (OWN_REPLY, out_of_time),
        (OTHER_REPLY, out_of_time),
        (OWN_REPLY, out_of_time),
        (OTHER_REPLY, out_of_time),
    ]
    assert all(p.citations for p in rest)
    assert [r.getMessage() for r in caplog.records if "time budget" in r.getMessage()] == [
        "talking points: the 0.5 s time budget of the quote ran out; 5 of 6 points are the "
        "reps' words in the cited calls"
    ]

    # the budget is per quote: the next quote generates again
    writer(strategies[:1], gtx_context())
    assert len(model.prompts) == 2


# --- with the real models over a small ingested sample --------------------------------------


@pytest.fixture(scope="module")
def sample_service(tmp_path_factory) -> CopilotService:
    """The bundled CSV calls (no account) and one won transcript of the account Acme."""
    root = tmp_path_factory.mktemp("talking-points")
    service = CopilotService(load_settings(data_dir=root / "data"))
    report = service.ingest([SAMPLE / "csv-calls"])
    assert not report.failed, report.failed
    report = service.ingest([SAMPLE / "call-text-01.txt"], outcome="won", account_id="Acme")
    assert report.stored == ["call-text-01"], report
    return service


def assert_cites_stored_won_calls(service: CopilotService, point) -> None:
    assert point.citations, point
    for citation in point.citations:
        call = service.store.get_call(citation.call_id)  # NotFoundError if not stored
        assert service.settings.outcomes.polarity(call.outcome) == 1, call.outcome
        assert 0 <= citation.start < citation.end <= call.duration_s + 1e-6
        assert citation.text.strip()


@pytest.mark.slow
def test_points_cite_won_calls_the_accounts_own_first(sample_service: CopilotService) -> None:
    strategies = quote_strategies(
        gtx_context(),
        [("GTX Pro", 12)],
        0.5,
        CURVE,
        SETTINGS,
        talking_points=TalkingPointWriter(sample_service),
    )
    for strategy in strategies:
        points = strategy.talking_points
        assert len(points) == 2, strategy.name
        assert points[0].citations[0].call_id == "call-text-01"  # Acme's own won call
        assert len({p.citations[0].call_id for p in points}) == 2  # one excerpt per call
        for point in points:
            assert_cites_stored_won_calls(sample_service, point)
            assert point.text.strip() and len(point.text) <= MAX_CHARS


@pytest.mark.slow
def test_a_failing_model_falls_back_to_the_won_calls_words(
    sample_service: CopilotService, monkeypatch
) -> None:
    class Broken:
        def chat(self, messages):
            raise RuntimeError("out of memory")

    monkeypatch.setattr(sample_service, "_generator", Broken())
    strategy = quote_strategies(gtx_context(), [("GTX Pro", 2)], 0.5, CURVE, SETTINGS)[0]
    [points] = TalkingPointWriter(sample_service)([strategy], gtx_context())
    assert len(points) == 2
    for point in points:
        assert_cites_stored_won_calls(sample_service, point)
        assert point.note == REP_WORDS
        # the point is the rep's reply in the cited excerpt
        assert point.text[:40] in point.citations[0].text
