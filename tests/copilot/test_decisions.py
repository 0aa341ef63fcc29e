"""The decision log: suggestions, the rep's answers, deal results and the query over them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from copilot.decisions import DECISION_COLUMNS, DecisionLog
from copilot.errors import InputError, NotFoundError

T0 = datetime(2025, 3, 3, 9, 0, tzinfo=UTC)
CN_INPUT = "你们的价格比竞争对手贵了百分之二十。"
CN_PROPOSED = "理解您的顾虑。我们的报价包含三年维保和上门培训，总拥有成本更低。"


@pytest.fixture
def log(tmp_path: Path) -> DecisionLog:
    return DecisionLog(tmp_path / "copilot.db")


def suggest(log: DecisionLog, at: datetime = T0, **overrides) -> str:
    fields = {
        "kind": "objection",
        "rep_id": "rep-wang",
        "team": "华东",
        "account_id": "华信医疗",
        "model": "dpo-v2",
        "input_text": CN_INPUT,
        "proposed": CN_PROPOSED,
        "citations": ["call-12", "call-40"],
    }
    fields.update(overrides)
    return log.record_suggestion(**fields, at=at)


def test_a_suggestion_round_trips_with_chinese_text(log) -> None:
    sid = suggest(log, experiment_id="exp-1", variant="dpo", prompt_version="default@3")
    s = log.get(sid)
    assert (s.kind, s.rep_id, s.team, s.account_id, s.model) == (
        "objection",
        "rep-wang",
        "华东",
        "华信医疗",
        "dpo-v2",
    )
    assert (s.input_text, s.proposed, s.citations) == (
        CN_INPUT,
        CN_PROPOSED,
        ["call-12", "call-40"],
    )
    assert (s.experiment_id, s.variant, s.prompt_version) == ("exp-1", "dpo", "default@3")
    assert s.created_at == "2025-03-03T09:00:00.000000Z"

    [row] = log.query()
    assert row.suggestion_id == sid and row.action is None and row.deal_result is None
    assert tuple(row.to_dict()) == DECISION_COLUMNS


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"kind": "email"}, "kind 'email' is unknown; use one of chat, objection"),
        ({"rep_id": " "}, "rep_id is empty"),
        ({"model": ""}, "model is empty"),
        ({"proposed": "  "}, "proposed is empty"),
        ({"citations": "call-1"}, "citations must be a list of call ids"),
        ({"citations": [1, 2]}, "citations must be a list of call ids"),
        ({"experiment_id": "exp-1"}, "needs both experiment_id and variant"),
        ({"variant": "b"}, "needs both experiment_id and variant"),
    ],
)
def test_bad_suggestions_are_refused(log, overrides, message) -> None:
    with pytest.raises(InputError, match=message):
        suggest(log, **overrides)
    assert log.query() == []


def test_feedback_rules_per_action(log) -> None:
    sid = suggest(log)
    with pytest.raises(InputError, match="'edited' answer needs 'text'"):
        log.record_feedback(sid, "edited", "rep-wang")
    with pytest.raises(InputError, match="'rejected' answer needs 'reason'"):
        log.record_feedback(sid, "rejected", "rep-wang", reason="  ")
    with pytest.raises(InputError, match="goes with action 'edited', not 'accepted'"):
        log.record_feedback(sid, "accepted", "rep-wang", text="sent this")
    with pytest.raises(InputError, match="action 'liked' is unknown"):
        log.record_feedback(sid, "liked", "rep-wang")
    with pytest.raises(NotFoundError, match="no suggestion 'missing'"):
        log.record_feedback("missing", "accepted", "rep-wang")
    assert log.feedback_history(sid) == []


def test_a_second_answer_replaces_the_first_and_the_history_is_kept(log) -> None:
    sid = suggest(log)
    log.record_feedback(sid, "accepted", "rep-wang", at=T0 + timedelta(minutes=1))
    log.record_feedback(
        sid, "edited", "rep-wang", text="改成：含三年维保", at=T0 + timedelta(minutes=2)
    )

    [row] = log.query()
    assert (row.action, row.edited_text, row.feedback_time) == (
        "edited",
        "改成：含三年维保",
        "2025-03-03T09:02:00.000000Z",
    )
    assert row.converted
    assert [(f.action, f.text) for f in log.feedback_history(sid)] == [
        ("accepted", None),
        ("edited", "改成：含三年维保"),
    ]
    log.record_feedback(sid, "rejected", "rep-wang", reason="客户已经签了别家")
    [row] = log.query()
    assert (row.action, row.reason, row.edited_text, row.converted) == (
        "rejected",
        "客户已经签了别家",
        None,
        False,
    )


def test_deal_results_go_to_the_suggestions_before_them_and_after_the_previous_one(log) -> None:
    early = suggest(log, at=T0)
    middle = suggest(log, at=T0 + timedelta(days=1))
    late = suggest(log, at=T0 + timedelta(days=10))
    elsewhere = suggest(log, at=T0, account_id="Acme")

    first = log.record_deal_result("华信医疗", "lost", deal_id="D-1", at=T0 + timedelta(days=2))
    assert (first.result, first.deal_id, first.attributed) == ("lost", "D-1", 2)
    second = log.record_deal_result("华信医疗", "won", deal_id="D-2", at=T0 + timedelta(days=20))
    assert second.attributed == 1

    results = {r.suggestion_id: (r.deal_result, r.deal_id) for r in log.query()}
    assert results == {
        early: ("lost", "D-1"),
        middle: ("lost", "D-1"),
        late: ("won", "D-2"),
        elsewhere: (None, None),
    }

    # The same deal id again replaces its result; another account's deal id is a mistake.
    again = log.record_deal_result("华信医疗", "won", deal_id="D-1", at=T0 + timedelta(days=2))
    assert again.result_id == first.result_id and again.result == "won"
    assert log.query(account="华信医疗", limit=None)[-1].deal_result == "won"
    with pytest.raises(InputError, match="deal 'D-1' was reported on account '华信医疗'"):
        log.record_deal_result("Acme", "lost", deal_id="D-1")


def test_deal_results_are_checked(log) -> None:
    with pytest.raises(InputError, match="result 'tie' is unknown; use one of won, lost"):
        log.record_deal_result("Acme", "tie")
    with pytest.raises(InputError, match="is in the future"):
        log.record_deal_result("Acme", "won", at=datetime.now(UTC) + timedelta(days=2))
    with pytest.raises(InputError, match="account_id is empty"):
        log.record_deal_result(" ", "won")
    with pytest.raises(InputError, match="not a date-time"):
        log.record_deal_result("Acme", "won", at="next tuesday")
    # The years context events keep to (copilot/context.py), as text or as a datetime.
    for at in ("1800-01-01T00:00:00Z", datetime(1899, 12, 31, tzinfo=UTC)):
        with pytest.raises(InputError, match=r"^at: year 18\d\d is outside 1900-2200; check the"):
            log.record_deal_result("Acme", "won", at=at)
    assert log.record_deal_result("Acme", "lost", at="1900-01-01T00:00:00Z").at.startswith("1900")
    # A naive time is read as UTC, like the account importers do.
    naive = log.record_deal_result("Acme", "won", at=datetime(2025, 1, 2, 3, 4))
    assert naive.at == "2025-01-02T03:04:00.000000Z"


def test_query_filters(log) -> None:
    ids = {
        "a": suggest(log, at=T0, rep_id="rep-a", team="East", kind="chat"),
        "b": suggest(
            log,
            at=T0 + timedelta(hours=1),
            rep_id="rep-b",
            team="West",
            experiment_id="exp-1",
            variant="control",
        ),
        "c": suggest(
            log,
            at=T0 + timedelta(hours=2),
            rep_id="rep-a",
            team="East",
            account_id="Acme",
            experiment_id="exp-1",
            variant="dpo",
        ),
        "d": suggest(log, at=T0 + timedelta(hours=3), rep_id="rep-c", team=None, kind="quote"),
    }
    log.record_feedback(ids["b"], "accepted", "rep-b")
    log.record_feedback(ids["c"], "rejected", "rep-a", reason="too long")
    names = {v: k for k, v in ids.items()}

    def q(**filters) -> list[str]:
        return [names[r.suggestion_id] for r in log.query(**filters)]

    assert q() == ["d", "c", "b", "a"]  # newest first
    assert q(rep="rep-a") == ["c", "a"]
    assert q(teams=["East"]) == ["c", "a"]
    assert q(teams=["East", "West"]) == ["c", "b", "a"]
    assert q(teams=[]) == []
    assert q(account="Acme") == ["c"]
    assert q(experiment="exp-1") == ["c", "b"]
    assert q(experiment="exp-1", variant="dpo") == ["c"]
    assert q(kind="quote") == ["d"]
    assert q(action="accepted") == ["b"]
    assert q(action="none") == ["d", "a"]
    assert q(since=T0 + timedelta(hours=1), until=T0 + timedelta(hours=3)) == ["c", "b"]
    assert q(since="2025-03-03T10:00:00Z") == ["d", "c", "b"]
    assert q(limit=2) == ["d", "c"]
    assert q(limit=2, offset=2) == ["b", "a"]
    assert q(limit=None, offset=3) == ["a"]

    with pytest.raises(InputError, match="action 'maybe' is unknown; use one of accepted"):
        log.query(action="maybe")
    with pytest.raises(InputError, match="kind 'mail' is unknown"):
        log.query(kind="mail")
    with pytest.raises(InputError, match="limit and offset must be 0 or more"):
        log.query(offset=-1)
