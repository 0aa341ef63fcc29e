"""Talking points for quote strategies: cited won-call excerpts, or the quote's own facts."""

from __future__ import annotations

import pytest

from copilot.quotes import quote_strategies
from copilot.settings import load_settings
from serve.service import CopilotService
from serve.talking_points import MAX_CHARS, NO_CALLS, TalkingPointWriter, first_line
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
    points = TalkingPointWriter(sample_service)(strategy, gtx_context())
    assert len(points) == 2
    for point in points:
        assert_cites_stored_won_calls(sample_service, point)
        assert point.note == "the rep's words in the won call"
        # the point is the rep's reply in the cited excerpt
        assert point.text[:40] in point.citations[0].text
