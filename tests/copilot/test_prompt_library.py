"""Prompt versions: numbered, immutable, one active; bad input named with its fix."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from copilot.errors import InputError, NotFoundError
from copilot.prompt_library import (
    MAX_NOTE_CHARS,
    MAX_SYSTEM_CHARS,
    KnowledgeNote,
    PromptLibrary,
    parse_ref,
)
from copilot.prompts import objection_messages

PRICE_NOTE = {"title": "Price", "text": "Annual plans are 12% below monthly; quote it."}
CHINESE_NOTE = {"title": "价格", "text": "年付比月付便宜12%。"}


@pytest.fixture
def library(tmp_path: Path) -> PromptLibrary:
    return PromptLibrary(tmp_path / "copilot.db")


def test_versions_number_from_one_per_name_and_never_change(library: PromptLibrary) -> None:
    first = library.save("renewals", "  Be brief.  ", [PRICE_NOTE], author="dana")
    second = library.save("renewals", "Be brief and cite prices.", [PRICE_NOTE, CHINESE_NOTE])
    other = library.save("续约话术", "简短回答。", [])

    assert (first.ref, second.ref, other.ref) == ("renewals@1", "renewals@2", "续约话术@1")
    assert first.system_prompt == "Be brief."  # stripped
    assert first.author == "dana" and second.author == "unknown"
    assert library.get("renewals@1") == first
    assert library.get("renewals@2").notes == (
        KnowledgeNote("Price", PRICE_NOTE["text"]),
        KnowledgeNote("价格", CHINESE_NOTE["text"]),
    )
    assert library.get("renewals@2").knowledge == [
        "Price: Annual plans are 12% below monthly; quote it.",
        "价格: 年付比月付便宜12%。",
    ]
    assert [v.ref for v in library.versions("renewals")] == ["renewals@1", "renewals@2"]
    assert sorted(v.ref for v in library.versions()) == ["renewals@1", "renewals@2", "续约话术@1"]
    assert library.names() == sorted(["renewals", "续约话术"])


def test_a_version_feeds_the_prompt_as_system_text_and_fenced_notes(
    library: PromptLibrary,
) -> None:
    version = library.save("renewals", "Answer in one sentence.", [CHINESE_NOTE])
    system, _ = objection_messages(
        "太贵了", system=version.system_prompt, knowledge=version.knowledge
    )
    assert system["content"].startswith("Answer in one sentence.")
    assert "<<价格: 年付比月付便宜12%。>>" in system["content"]


def test_active_version_defaults_to_none_and_switches(library: PromptLibrary) -> None:
    assert library.active() is None
    one = library.save("renewals", "Prompt one.")
    two = library.save("renewals", "Prompt two.")
    assert library.activate("renewals@1", by="dana") == one
    assert library.active() == one
    library.activate(two.ref)
    assert library.active().ref == "renewals@2"
    library.deactivate()
    assert library.active() is None


def test_the_library_persists_across_instances(tmp_path: Path) -> None:
    PromptLibrary(tmp_path / "c.db").save("renewals", "Prompt one.", [PRICE_NOTE])
    PromptLibrary(tmp_path / "c.db").activate("renewals@1")
    reopened = PromptLibrary(tmp_path / "c.db")
    assert reopened.active().knowledge == ["Price: Annual plans are 12% below monthly; quote it."]


def test_concurrent_saves_get_distinct_versions(library: PromptLibrary) -> None:
    refs: list[str] = []

    def save(i: int) -> None:
        refs.append(library.save("renewals", f"Prompt {i}.").ref)

    threads = [threading.Thread(target=save, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(refs) == [f"renewals@{n}" for n in range(1, 7)]


@pytest.mark.parametrize(
    ("name", "prompt", "notes", "message"),
    [
        ("renewals", "   ", [], "system prompt is empty"),
        ("renewals", "x" * (MAX_SYSTEM_CHARS + 1), [], "over the 4000 limit"),
        ("", "Prompt.", [], "not usable"),
        ("two words", "Prompt.", [], "no spaces or '@'"),
        ("a@b", "Prompt.", [], "no spaces or '@'"),
        ("renewals", "Prompt.", [{"title": "Price", "text": ""}], "has no text"),
        ("renewals", "Prompt.", [{"title": "t", "text": "y" * (MAX_NOTE_CHARS + 1)}], "split it"),
        ("renewals", "Prompt.", [{"title": "t", "body": "x"}], "unknown fields"),
        ("renewals", "Prompt.", ["just text"], "must be"),
        ("renewals", "Prompt.", [{"text": f"note {i}"} for i in range(21)], "merge or drop"),
    ],
)
def test_bad_input_is_refused_with_the_fix(
    library: PromptLibrary, name: str, prompt: str, notes: list, message: str
) -> None:
    with pytest.raises(InputError, match=message):
        library.save(name, prompt, notes)
    assert library.versions() == []


def test_blank_note_rows_are_dropped(library: PromptLibrary) -> None:
    version = library.save("renewals", "Prompt.", [{"title": " ", "text": ""}, CHINESE_NOTE])
    assert version.knowledge == ["价格: 年付比月付便宜12%。"]


def test_refs_are_checked(library: PromptLibrary) -> None:
    assert parse_ref(" renewals@12 ") == ("renewals", 12)
    for bad in ("renewals", "renewals@", "renewals@0", "@3", ""):
        with pytest.raises(InputError, match="name@N"):
            library.get(bad)
    with pytest.raises(NotFoundError, match="renewals@1"):
        library.get("renewals@1")
    with pytest.raises(NotFoundError):
        library.activate("renewals@1")
