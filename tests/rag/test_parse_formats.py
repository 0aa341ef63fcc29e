"""WebVTT, SRT, Chinese transcripts and the header'd markdown calls of ../shared/data/calls/b2b-scripted."""

from pathlib import Path

import pytest

from copilot.errors import InputError
from rag.parse import TEXT_SUFFIXES, parse_csv_folder, parse_transcript_file
from tests.conftest import SHARED_DATA, require_shared_data

B2B = SHARED_DATA / "calls" / "b2b-scripted"

VTT = """WEBVTT

NOTE written for this test

1
00:00:00.000 --> 00:00:02.500
<v Dana>Hi Sam, thanks for taking the call.

2
00:00:02.800 --> 00:00:04.100
<v.loud Sam>Sure. It's more than we budgeted.</v>

00:00:04.100 --> 00:00:05.000
<v Sam>A <i>lot</i> more.

00:01:05.250 --> 00:01:09.000 align:start
Dana: Let me show you the yearly cost.
"""

SRT = """1
00:00:01,000 --> 00:00:03,200
Rep: Good morning, this is Lee from Acme.

2
00:00:03,500 --> 00:00:06,000
Customer: We already use another vendor.

3
00:00:06,000 --> 00:00:07,500
and we are happy with them.

4
01:00:00,000 --> 01:00:02,000
[Rep] What would make you switch?
"""


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_subtitle_suffixes_are_transcripts() -> None:
    assert {".vtt", ".srt"} <= TEXT_SUFFIXES


def test_webvtt_voice_tags_and_name_lines_keep_cue_times(tmp_path: Path) -> None:
    call = parse_transcript_file(_write(tmp_path, "call-9.vtt", VTT))
    assert call.call_id == "call-9"
    assert call.speakers == ["Dana", "Sam", "Dana"]
    assert [t.speaker for t in call.turns] == ["rep", "customer", "rep"]
    # Sam's two cues are one turn, spanning both cues; markup is gone.
    assert call.turns[1].text == "Sure. It's more than we budgeted. A lot more."
    assert (call.turns[1].start, call.turns[1].end) == (2.8, 5.0)
    assert (call.turns[2].start, call.turns[2].end) == (65.25, 69.0)
    assert call.turns[2].text == "Let me show you the yearly cost."


def test_srt_labels_continuations_and_hours(tmp_path: Path) -> None:
    call = parse_transcript_file(_write(tmp_path, "c.srt", SRT))
    assert [t.speaker for t in call.turns] == ["rep", "customer", "rep"]
    assert call.turns[1].text == "We already use another vendor. and we are happy with them."
    assert (call.turns[1].start, call.turns[1].end) == (3.5, 7.5)
    assert call.turns[2].start == 3600.0 and call.turns[2].text == "What would make you switch?"


def test_subtitle_without_any_speaker_names_the_file_and_fix(tmp_path: Path) -> None:
    path = _write(tmp_path, "bare.srt", "1\n00:00:01,000 --> 00:00:02,000\nHello there.\n")
    with pytest.raises(InputError, match=r"bare.srt: the first cue .* has no speaker label"):
        parse_transcript_file(path)


def test_unknown_speaker_labels_are_named_with_the_fix(tmp_path: Path) -> None:
    text = "WEBVTT\n\n00:00.000 --> 00:01.000\n<v Ann>Hi.\n\n00:01.000 --> 00:02.000\n<v Bo>Hey.\n\n00:02.000 --> 00:03.000\n<v Cy>Yo.\n"
    path = _write(tmp_path, "three.vtt", text)
    with pytest.raises(InputError) as err:
        parse_transcript_file(path)
    message = str(err.value)
    assert "three.vtt" in message and "['Ann', 'Bo', 'Cy']" in message
    assert "label the turns 'Rep:' and 'Customer:'" in message


def test_chinese_roles_named_speakers_and_full_width_colon(tmp_path: Path) -> None:
    roles = parse_transcript_file(
        _write(
            tmp_path,
            "zh.txt",
            "销售代表：您好，我是张伟。\n用户：太贵了，预算不够。\n销售代表：我们可以分期。\n",
        )
    )
    assert [t.speaker for t in roles.turns] == ["rep", "customer", "rep"]
    assert roles.turns[1].text == "太贵了，预算不够。"

    named = parse_transcript_file(
        _write(
            tmp_path, "zh-named.txt", "张伟：王总您好。\n王芳：我们已经有供应商了。\n张伟：明白。\n"
        )
    )
    assert [t.speaker for t in named.turns] == ["rep", "customer", "rep"]

    vtt = "WEBVTT\n\n00:00.000 --> 00:02.000\n<v 销售>这个方案一年三万。\n\n00:02.000 --> 00:04.500\n客户：我要和老板商量一下。\n"
    sub = parse_transcript_file(_write(tmp_path, "zh.vtt", vtt))
    assert [(t.speaker, t.text, t.end) for t in sub.turns] == [
        ("rep", "这个方案一年三万。", 2.0),
        ("customer", "我要和老板商量一下。", 4.5),
    ]


def test_markdown_header_with_unknown_speaker_names_the_participants(tmp_path: Path) -> None:
    text = (
        "# Sales Call Transcript: Demo\n**Outcome:** Pilot agreed\n**Participants:**\n"
        "- Ana (Acme Account Executive)\n- Ben Ito (CTO, Beta)\n\n---\n\n"
        "**Ana:** Hello Ben.\n\n**Carl:** Hi, I'm sitting in.\n"
    )
    with pytest.raises(InputError) as err:
        parse_transcript_file(_write(tmp_path, "demo.md", text))
    assert "demo.md" in str(err.value) and "['Carl']" in str(err.value)
    assert "'**Participants:**' list" in str(err.value)


def test_csv_with_missing_columns_names_the_file_and_columns(tmp_path: Path) -> None:
    folder = tmp_path / "export"
    folder.mkdir()
    (folder / "messages.csv").write_text("conversation_id,text\nc1,hello\n", encoding="utf-8")
    with pytest.raises(InputError) as err:
        parse_csv_folder(folder)
    assert "messages.csv" in str(err.value) and "'author'" in str(err.value)
    assert "['conversation_id', 'text']" in str(err.value)

    (folder / "messages.csv").write_text(
        "conversation_id,message,author\nc1,hello,Agent\n", encoding="utf-8"
    )
    (folder / "conversations.csv").write_text("id,outcome\nc1,won\n", encoding="utf-8")
    with pytest.raises(InputError, match="conversations.csv needs the column 'conversation_id'"):
        parse_csv_folder(folder)


# Expected from reading the five files: call id, outcome, stage, turn count, speakers by role.
B2B_CALLS = {
    "closing-call-01.md": (
        "CLOSE-2024-023",
        "Deal closed, contract signed",
        "Closing Call",
        32,
        {"Maria": "rep", "James": "customer", "Susan": "customer"},
    ),
    "cold-call-success-01.md": (
        "CC-2024-001",
        "Discovery call scheduled",
        "Cold Outreach - Success",
        20,
        {"Sarah": "rep", "Michael": "customer"},
    ),
    "demo-call-success-01.md": (
        "DEMO-2024-089",
        "Moving to pilot phase",
        "Product Demo",
        56,
        {"Alex": "rep", "Lisa": "rep", "Robert": "customer", "Amy": "customer", "Tom": "customer"},
    ),
    "discovery-call-01.md": (
        "DISC-2024-012",
        "Demo scheduled for next week",
        "Discovery Call",
        47,
        {"Marcus": "rep", "Jennifer": "customer", "David": "customer"},
    ),
    "objection-pricing-01.md": (
        "OBJ-2024-034",
        "Moved forward with custom ROI analysis",
        "Objection Handling - Pricing",
        24,
        {"Nicole": "rep", "Kevin": "customer"},
    ),
}


@pytest.mark.real_data
@pytest.mark.parametrize("name", sorted(B2B_CALLS))
def test_real_b2b_markdown_calls(name: str) -> None:
    require_shared_data()
    call_id, outcome, stage, n_turns, roles = B2B_CALLS[name]
    call = parse_transcript_file(B2B / name)
    assert call.call_id == call_id
    assert call.meta["outcome"] == outcome
    assert call.meta["extra"]["stage"] == stage
    assert len(call.turns) == n_turns == len(call.speakers)
    assert {s: t.speaker for s, t in zip(call.speakers, call.turns, strict=True)} == roles
    # The closing notes are commentary, never a turn; stage directions are not speech.
    assert call.meta["extra"]["notes"]
    assert not any("*" in t.text for t in call.turns)


@pytest.mark.real_data
def test_real_b2b_header_fields_and_turn_text() -> None:
    require_shared_data()
    call = parse_transcript_file(B2B / "objection-pricing-01.md")
    assert call.meta["date"] == "2024-02-10" and call.meta["duration_s"] == 18 * 60
    assert call.meta["extra"]["attendees"] == ["Nicole", "Kevin Brown"]
    first = call.turns[0]
    assert first.speaker == "customer" and first.text.startswith(
        "Nicole, thanks for the follow-up."
    )
    assert (
        call.turns[2].text
        == "We were thinking more like $50-60K annually. Your quote came in at $110K."
    )
    cold = parse_transcript_file(B2B / "cold-call-success-01.md")
    assert cold.turns[5].text.startswith("Yeah, unfortunately.")  # '*laughs*' dropped
