"""The rule file: its checks, the errors a manager sees, and the hot reload of RuleBook."""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

import pytest

from copilot.errors import ConfigError
from copilot.rules import (
    PLACEHOLDERS,
    AllOf,
    NotOf,
    RuleBook,
    RuleFileError,
    SignalCondition,
    file_version,
    load_rules,
    parse_rules,
)
from copilot.settings import REPO_ROOT, load_settings
from copilot.signals import SIGNAL_TYPES

GOOD = """\
rules:
  - id: tender-soon
    description: 招标即将开始
    when:
      all:
        - signal: tender_countdown
          max: 72
        - budget_window_closing
        - not: {signal: champion_departed}
    priority: critical
    owner: account_owner
    due: before_signal
    due_margin_hours: 12
    action: "{account}: 招标还有 {tender_hours} 小时, prepare the quote strategies"
"""


def write(path: Path, text: str) -> None:
    """Write ``text`` and move the mtime forward a full second.

    Filesystem timestamps are coarse (a few ms): two edits in one test can land on the
    same mtime, and an edit of equal size would then look unchanged. A human edit
    never comes that fast; the test says so explicitly instead of sleeping.
    """
    before = path.stat().st_mtime_ns if path.exists() else time.time_ns()
    path.write_text(text, encoding="utf-8")
    os.utime(path, ns=(before + 1_000_000_000, before + 1_000_000_000))


def problems(text: str) -> RuleFileError:
    refused = parse_rules(text.encode("utf-8"), Path("rules.yaml"))
    assert isinstance(refused, RuleFileError), f"expected a refusal, got {refused}"
    return refused


# --- the format --------------------------------------------------------------------------


def test_default_rule_file_loads_with_every_rule_enabled(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path)
    assert settings.rules_path == REPO_ROOT / "configs" / "rules.yaml"
    rules = load_rules(settings.rules_path)
    ids = [r.id for r in rules]
    assert 8 <= len(ids) <= 12
    assert len(set(ids)) == len(ids)
    assert all(r.enabled for r in rules.rules)
    assert rules.version == file_version(settings.rules_path.read_bytes())
    assert rules.get("tender-budget-new-lead").priority == "critical"


def test_nested_conditions_and_bare_names_parse_into_typed_conditions() -> None:
    rules = parse_rules(GOOD.encode(), Path("rules.yaml"))
    rule = rules.get("tender-soon")
    assert isinstance(rule.when, AllOf)
    tender, budget, negated = rule.when.all
    assert tender == SignalCondition(signal="tender_countdown", max=72)
    assert budget == SignalCondition(signal="budget_window_closing")  # from the bare name
    assert isinstance(negated, NotOf)
    assert negated.not_ == SignalCondition(signal="champion_departed")
    assert rule.due_margin_hours == 12
    assert rule.description == "招标即将开始"


def test_rules_validate_against_the_signal_module_list() -> None:
    text = GOOD.replace("budget_window_closing", "high_stock")
    assert "high_stock" in SIGNAL_TYPES
    assert parse_rules(text.encode(), Path("r.yaml")).get("tender-soon") is not None


def test_product_match_accepts_one_name_or_a_list() -> None:
    text = GOOD.replace(
        "        - budget_window_closing\n",
        "        - {signal: low_stock, product: GTX Pro}\n"
        "        - {signal: high_stock, product: [GTX Pro, MG Special]}\n",
    )
    rule = parse_rules(text.encode(), Path("r.yaml")).get("tender-soon")
    assert rule.when.all[1].product == ["GTX Pro"]
    assert rule.when.all[2].product == ["GTX Pro", "MG Special"]


# --- what a broken file says ---------------------------------------------------------------


def test_yaml_syntax_error_names_the_line() -> None:
    text = GOOD.replace("    priority: critical\n", "    priority: [critical\n")
    (problem,) = problems(text).problems
    assert problem.problem.startswith("not valid YAML")
    assert problem.line == 11  # where the parser gave up: the line after the open bracket
    assert "indentation" in problem.fix


def test_unknown_signal_names_rule_line_and_the_close_match() -> None:
    text = GOOD.replace("- budget_window_closing", "- budget_window_closng")
    (problem,) = problems(text).problems
    assert problem.rule_id == "tender-soon"
    assert problem.line == 8
    assert problem.where == "when.all[1]"
    assert "unknown signal type 'budget_window_closng'" in problem.problem
    assert "did you mean 'budget_window_closing'" in problem.fix


def test_unknown_key_and_missing_key_are_both_reported() -> None:
    text = GOOD.replace("    priority: critical\n", "    priorty: critical\n")
    found = {(p.where, p.line) for p in problems(text).problems}
    assert ("priorty", 10) in found
    assert ("priority", 2) in found  # missing: reported at the rule's first line


def test_duplicate_rule_id_points_at_the_second_one() -> None:
    second = GOOD.split("rules:\n", 1)[1]
    (problem,) = problems(GOOD + second).problems
    assert problem.rule_id == "tender-soon"
    assert problem.line == 15
    assert "duplicate rule id" in problem.problem
    assert "own id" in problem.fix


@pytest.mark.parametrize(
    ("action", "message", "fix"),
    [
        (
            "{tender_hour} left",
            "unknown placeholder '{tender_hour}'",
            "did you mean {tender_hours}",
        ),
        ("{champion} left", "read from a champion_departed signal", "add a champion_departed"),
        ("{tender_hours:>4} left", "has a format ('>4')", "write just {tender_hours}"),
        ("{tender_hours left", "unmatched brace", "{{ and }}"),
    ],
)
def test_bad_placeholders_are_refused_at_load_time(action: str, message: str, fix: str) -> None:
    text = GOOD.replace(
        '"{account}: 招标还有 {tender_hours} 小时, prepare the quote strategies"', f'"{action}"'
    )
    (problem,) = problems(text).problems
    assert problem.where == "action"
    assert problem.line == 14
    assert message in problem.problem
    assert fix in problem.fix


def test_before_signal_needs_a_countdown_signal() -> None:
    text = GOOD.replace("signal: tender_countdown", "signal: no_activity").replace(
        "{tender_hours}", "{idle_days}"
    )
    text = text.replace("- budget_window_closing", "- low_stock")
    (problem,) = problems(text).problems
    assert problem.where == "due"
    assert "needs a signal with a deadline" in problem.problem


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (("    due: before_signal\n", ""), "says no due time"),
        (("          max: 72\n", "          max: 72\n          min: 80\n"), "min 80.0 is above"),
        (("    priority: critical\n", "    priority: urgent\n"), "Input should be 'critical'"),
        (
            ("    owner: account_owner\n", "    owner: account_owner\n    supersedes: [gone]\n"),
            "supersedes unknown rule 'gone'",
        ),
        (("        - budget_window_closing\n", "        - {foo: 1}\n"), "a condition is a signal"),
    ],
)
def test_other_schema_errors_name_the_rule(edit: tuple[str, str], message: str) -> None:
    (problem,) = problems(GOOD.replace(*edit)).problems
    assert problem.rule_id == "tender-soon"
    assert message in problem.problem
    assert problem.fix


def test_supersede_cycle_is_refused() -> None:
    other = GOOD.split("rules:\n", 1)[1].replace("id: tender-soon", "id: other")
    text = (GOOD + other).replace(
        "    owner: account_owner\n", "    owner: account_owner\n    supersedes: [PEER]\n"
    )
    text = text.replace("[PEER]", "[other]", 1).replace("[PEER]", "[tender-soon]", 1)
    (problem,) = problems(text).problems
    assert "in a circle: tender-soon -> other -> tender-soon" in problem.problem


def test_error_text_names_the_file_rule_line_and_fix() -> None:
    refused = problems(GOOD.replace("- budget_window_closing", "- budgett"))
    text = str(refused)
    assert text.startswith("rule file rules.yaml was refused")
    assert "line 8: rule 'tender-soon': when.all[1]: unknown signal type 'budgett'; fix:" in text


def test_first_load_failure_raises_config_error(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    with pytest.raises(ConfigError, match="cannot be read"):
        RuleBook(path)
    write(path, GOOD.replace("owner: account_owner", "owner: "))
    with pytest.raises(
        ConfigError, match=r"rules.yaml was refused:\n  line 11: rule 'tender-soon'"
    ):
        RuleBook(path)


def test_placeholders_table_names_only_known_signals() -> None:
    assert {s for s in PLACEHOLDERS.values() if s} <= set(SIGNAL_TYPES)


# --- hot reload ----------------------------------------------------------------------------


def test_edit_applies_without_a_new_rulebook(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    write(path, GOOD)
    book = RuleBook(path)
    first = book.current()
    assert first.get("tender-soon").priority == "critical"
    assert book.current() is first  # unchanged file: the same snapshot, no re-read

    write(path, GOOD.replace("priority: critical", "priority: high"))
    second = book.current()
    assert second.get("tender-soon").priority == "high"
    assert second.version != first.version
    assert book.version == second.version
    assert book.last_error is None


def test_broken_edit_keeps_old_rules_and_logs_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "rules.yaml"
    write(path, GOOD)
    book = RuleBook(path)
    good = book.current()

    caplog.set_level(logging.ERROR, logger="copilot.rules")
    write(path, GOOD.replace("- budget_window_closing", "- budget_closing"))
    for _ in range(3):
        assert book.current() is good
    error = book.last_error
    assert error is not None
    assert error.path == path
    assert error.version == file_version(path.read_bytes())
    (problem,) = error.problems
    assert (problem.rule_id, problem.line) == ("tender-soon", 8)
    assert "budget_closing" in problem.problem and "budget_window_closing" in problem.fix
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert str(path) in errors[0].getMessage()
    assert "keeping the 1 rules of version " + good.version in errors[0].getMessage()

    # A different broken version is logged again.
    write(path, "rules: [\n")
    assert book.current() is good
    assert len([r for r in caplog.records if r.levelno == logging.ERROR]) == 2
    assert book.last_error.problems[0].problem.startswith("not valid YAML")

    # Fixing the file recovers.
    write(path, GOOD.replace("priority: critical", "priority: low"))
    assert book.current().get("tender-soon").priority == "low"
    assert book.last_error is None


def test_undoing_a_broken_edit_clears_the_error(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    write(path, GOOD)
    book = RuleBook(path)
    good = book.current()
    write(path, "not: [a mapping")
    assert book.last_error is not None
    write(path, GOOD)
    assert book.current() is good
    assert book.last_error is None


def test_deleted_file_keeps_rules_and_says_so(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    write(path, GOOD)
    book = RuleBook(path)
    good = book.current()
    path.unlink()
    assert book.current() is good
    assert "cannot be read" in book.last_error.problems[0].problem
    write(path, GOOD.replace("priority: critical", "priority: medium"))
    assert book.current().get("tender-soon").priority == "medium"


def test_concurrent_readers_during_edits_only_see_good_versions(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    versions = [GOOD.replace("max: 72", f"max: {hours}") for hours in range(60, 72)]
    write(path, versions[0])
    book = RuleBook(path)
    good = {file_version(v.encode()) for v in versions}
    seen: set[str] = set()
    failures: list[BaseException] = []
    stop = threading.Event()

    def read() -> None:
        try:
            while not stop.is_set():
                current = book.current()
                seen.add(current.version)
                assert len(current) == 1
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            failures.append(exc)

    threads = [threading.Thread(target=read) for _ in range(4)]
    for t in threads:
        t.start()
    for text in versions[1:]:
        write(path, text)
        write(path, text + "  - broken: [\n")  # a broken save in between
        write(path, text)
        time.sleep(0.002)
    stop.set()
    for t in threads:
        t.join(timeout=10)

    assert not failures
    assert seen <= good
    assert len(seen) >= 2  # the readers did see reloads happen
    assert book.current().version == file_version(versions[-1].encode())
    assert book.current().get("tender-soon").when.all[0].max == 71
    assert book.last_error is None
