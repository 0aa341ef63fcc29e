"""Text transcripts and call folders into turns.

Supported here: ``Name: text`` lines (``.txt``/``.md``), markdown call
transcripts with a header (title with the call stage, ``**Outcome:**``,
``**Participants:**``; the layout of the B2B scripted calls), WebVTT and SRT
subtitles with speaker labels (``<v Name>`` voice tags, ``Name: text`` or
``[Name] text`` cue text), the project's JSON transcript schema, and CSV
message exports laid out as a folder with ``conversations.csv``
(conversation_id, outcome, duration_seconds) and ``messages.csv``
(conversation_id, timestamp, message, author). Labels may be in English or
Chinese, with an ASCII or a full-width colon.

Plain text has no times, so turn times are estimated from text length at a
steady speaking rate; they keep the order and rough position, nothing more.
Subtitles keep their cue times.
"""

from __future__ import annotations

import csv
import json
import logging
import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from copilot.errors import InputError
from copilot.schemas import Speaker, Turn

logger = logging.getLogger(__name__)

TEXT_SUFFIXES = {".txt", ".md", ".json", ".vtt", ".srt"}
CHARS_PER_SECOND = (
    14.0  # about 150 words a minute in English; close enough for Chinese characters too
)

# Speaker labels that name a role outright, in the languages the users sell in.
ROLE_LABELS: dict[str, Speaker] = {
    **dict.fromkeys(
        [
            "rep",
            "agent",
            "sales",
            "seller",
            "salesperson",
            "advisor",
            "销售",
            "客服",
            "顾问",
            "业务员",
            "销售代表",
            "销售顾问",
            "客户经理",  # in Chinese firms the account manager is the seller
            "坐席",
        ],
        "rep",
    ),
    **dict.fromkeys(
        [
            "customer",
            "client",
            "buyer",
            "prospect",
            "caller",
            "客户",
            "买家",
            "顾客",
            "用户",
            "客人",
        ],
        "customer",
    ),
}

_LINE = re.compile(r"^\s*(?:\*\*)?([^:：*\n]{1,40}?)(?:\*\*)?\s*[:：]\s*(.+?)\s*$")


@dataclass
class ParsedCall:
    call_id: str
    turns: list[Turn]
    meta: dict[str, Any]
    # The label each turn carried in the source ("Maria", "销售"), where the format has one.
    speakers: list[str] = field(default_factory=list)


def _role(label: str) -> Speaker | None:
    return ROLE_LABELS.get(label.strip().casefold())


def _timed(pairs: list[tuple[Speaker, str]]) -> list[Turn]:
    turns, clock = [], 0.0
    for speaker, text in pairs:
        length = max(len(text) / CHARS_PER_SECOND, 0.5)
        turns.append(
            Turn(speaker=speaker, start=round(clock, 2), end=round(clock + length, 2), text=text)
        )
        clock += length + 0.3
    return turns


def parse_speaker_lines(text: str, source: str) -> list[Turn]:
    """``Name: text`` lines; continuation lines join the turn above."""
    labelled: list[list[str]] = []
    for line in text.splitlines():
        match = _LINE.match(line)
        if match and not match.group(1).strip().startswith("#"):
            # '**Name:** text' leaves the closing bold marks in front of the text.
            labelled.append([match.group(1).strip(), re.sub(r"^\*\*\s*", "", match.group(2))])
        elif labelled and line.strip() and not line.lstrip().startswith(("#", "---")):
            labelled[-1][1] += " " + line.strip()
    if not labelled:
        raise InputError(
            f"{source} has no 'Speaker: text' lines; write one turn per line, e.g. 'Rep: Hello' "
            "and 'Customer: Hi'"
        )

    roles = assign_roles([label for label, _ in labelled], source)
    return _timed([(roles[label], body) for label, body in labelled])


def assign_roles(labels_in_order: list[str], source: str) -> dict[str, Speaker]:
    """Rep or customer for each speaker label: role names outright; two people by order of
    speaking (rep first); anything else is refused with the labels and the fix."""
    labels = list(dict.fromkeys(labels_in_order))
    roles = {label: _role(label) for label in labels}
    unknown = [label for label, role in roles.items() if role is None]
    if unknown:
        known = {r for r in roles.values() if r}
        if len(labels) == 2 and not known:
            # Two named people: outbound calls open with the rep, so the first name is the rep.
            roles = {labels[0]: "rep", labels[1]: "customer"}
            logger.warning(
                "%s: speakers %s mapped to rep/customer by order of speaking", source, labels
            )
        elif len(unknown) == 1 and len(known) == 1:
            roles[unknown[0]] = "customer" if known == {"rep"} else "rep"
            logger.warning("%s: speaker %r taken as the %s", source, unknown[0], roles[unknown[0]])
        else:
            raise InputError(
                f"{source}: cannot tell rep from customer among speakers {labels} (unknown: "
                f"{unknown}); label the turns 'Rep:' and 'Customer:' (or 'Agent:'/'Client:', "
                "'销售:'/'客户:'), or keep to two named speakers with the rep speaking first"
            )
    return roles  # type: ignore[return-value]


def parse_json_transcript(data: Any, source: str) -> ParsedCall:
    """The project's JSON schema: {"call_id"?, metadata..., "turns": [{"speaker", "text", "start"?, "end"?}]}."""
    if not isinstance(data, dict) or not isinstance(data.get("turns"), list) or not data["turns"]:
        raise InputError(
            f"{source}: expected a JSON object with a non-empty 'turns' list (see README)"
        )
    pairs, times = [], []
    for i, turn in enumerate(data["turns"]):
        if not isinstance(turn, dict) or not str(turn.get("text", "")).strip():
            raise InputError(f"{source}: turn {i} needs a non-empty 'text'")
        role = _role(str(turn.get("speaker", "")))
        if role is None:
            raise InputError(
                f"{source}: turn {i} has speaker {turn.get('speaker')!r}; use 'rep' or 'customer'"
            )
        pairs.append((role, str(turn["text"]).strip()))
        times.append((turn.get("start"), turn.get("end")))
    if all(isinstance(s, int | float) and isinstance(e, int | float) for s, e in times):
        turns = [
            Turn(r, float(s), float(e), t) for (r, t), (s, e) in zip(pairs, times, strict=True)
        ]
    else:
        turns = _timed(pairs)
    meta = {k: v for k, v in data.items() if k not in {"turns", "call_id"}}
    return ParsedCall(call_id=str(data.get("call_id") or Path(source).stem), turns=turns, meta=meta)


def parse_transcript_file(path: Path) -> ParsedCall:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"{path} is not UTF-8 text; save the transcript as UTF-8") from exc
    if not text.strip():
        raise InputError(f"{path} is empty; a transcript needs at least one 'Speaker: text' line")
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno})") from exc
        return parse_json_transcript(data, str(path))
    suffix = path.suffix.lower()
    if suffix in {".vtt", ".srt"}:
        return parse_subtitles(text, str(path), call_id=path.stem)
    if suffix == ".md" and _is_call_markdown(text):
        return parse_call_markdown(text, str(path), call_id=path.stem)
    return ParsedCall(call_id=path.stem, turns=parse_speaker_lines(text, str(path)), meta={})


# --- subtitles: WebVTT and SRT ---------------------------------------------------

_CUE_TIME = re.compile(
    r"^\s*(?P<start>(?:\d+:)?\d{1,2}:\d{2}[.,]\d{1,3})\s*-->\s*"
    r"(?P<end>(?:\d+:)?\d{1,2}:\d{2}[.,]\d{1,3})"
)
_VOICE = re.compile(r"<v(?:\.[\w.-]+)?\s+([^>]+)>")
_MARKUP = re.compile(r"</?[^>]*>")
_BRACKET_LABEL = re.compile(r"^\s*[\[(（【]([^\]\)）】]{1,40})[\]\)）】]\s*(.+)$")


def _cue_seconds(stamp: str) -> float:
    parts = stamp.replace(",", ".").split(":")
    seconds = float(parts[-1]) + 60 * int(parts[-2])
    return seconds + 3600 * int(parts[-3]) if len(parts) == 3 else seconds


def _cue_label(lines: list[str]) -> tuple[str | None, str]:
    """The speaker of one cue and its plain text: a voice tag, else 'Name: text' or '[Name] text'."""
    raw = " ".join(line.strip() for line in lines if line.strip())
    voice = _VOICE.search(raw)
    text = _MARKUP.sub("", raw).strip()
    if voice:
        return voice.group(1).strip(), text
    for pattern in (_LINE, _BRACKET_LABEL):
        match = pattern.match(text)
        if match:
            return match.group(1).strip(), match.group(2).strip()
    return None, text


def parse_subtitles(text: str, source: str, call_id: str) -> ParsedCall:
    """WebVTT or SRT cues with speaker labels. Consecutive cues of one speaker become one turn
    (subtitles split sentences for the screen); a cue without a label continues the speaker before."""
    cues: list[tuple[str, float, float, str]] = []
    for block in re.split(r"\n\s*\n", text.replace("\r\n", "\n")):
        lines = block.strip("\n").splitlines()
        at = next((i for i, line in enumerate(lines) if _CUE_TIME.match(line)), None)
        if at is None:
            continue  # the WEBVTT header, NOTE, STYLE and REGION blocks, or stray text
        times = _CUE_TIME.match(lines[at])
        label, body = _cue_label(lines[at + 1 :])
        if not body:
            continue
        if label is None:
            if not cues:
                raise InputError(
                    f"{source}: the first cue ({lines[at].strip()}) has no speaker label; start "
                    "each speaker's cues with '<v Name>' (WebVTT) or 'Name: ' (WebVTT or SRT)"
                )
            label = cues[-1][0]
        cues.append(
            (label, _cue_seconds(times.group("start")), _cue_seconds(times.group("end")), body)
        )
    if not cues:
        raise InputError(
            f"{source} has no timed cues ('00:00:01.000 --> 00:00:03.500' lines followed by text)"
        )

    roles = assign_roles([label for label, *_ in cues], source)
    turns: list[Turn] = []
    speakers: list[str] = []
    for label, start, end, body in cues:
        if speakers and speakers[-1] == label:
            last = turns[-1]
            turns[-1] = Turn(last.speaker, last.start, round(end, 3), f"{last.text} {body}")
            continue
        turns.append(Turn(roles[label], round(start, 3), round(end, 3), body))
        speakers.append(label)
    return ParsedCall(call_id=call_id, turns=turns, meta={}, speakers=speakers)


# --- markdown call transcripts with a header ------------------------------------

_HEADER_FIELD = re.compile(r"^\*\*([^*:：]{1,40})[:：]\*\*\s*(.*?)\s*$")
_BOLD_TURN = re.compile(r"^\s*\*\*([^*:：\n]{1,40})[:：]\s*\*\*\s*(.*?)\s*$")
_PARTICIPANT = re.compile(r"^\s*[-*]\s+([^(（]+?)\s*(?:[(（]([^)）]*)[)）])?\s*$")
_ACTION = re.compile(r"(?<!\*)\*[^*\n]+\*(?!\*)")  # *laughs*: stage directions, not speech
# Job titles that put a participant on the selling side; "VP of Sales" buys, so "sales" alone
# is not enough.
_SELLER_TITLE = re.compile(
    r"account executive|account manager|sales rep|sales representative|sales engineer|"
    r"solutions? (?:engineer|consultant)|sales development|business development|\bsdr\b|"
    r"\bbdr\b|\bae\b|customer success|销售|顾问|客户经理",
    re.IGNORECASE,
)


def _is_call_markdown(text: str) -> bool:
    head = text.split("\n---", 1)[0]
    return bool(re.search(r"^\*\*(?:Outcome|Participants)[:：]\*\*", head, re.MULTILINE))


def _parse_date(value: str) -> str:
    for fmt in ("%B %d, %Y", "%b %d, %Y", "%Y-%m-%d", "%d %B %Y"):
        try:
            return datetime.strptime(value.strip(), fmt).date().isoformat()
        except ValueError:
            pass
    return value.strip()


def _parse_minutes(value: str) -> float | None:
    match = re.match(r"\s*(\d+(?:\.\d+)?)\s*(min|minutes?|分钟|s|sec|seconds?|秒)?", value)
    if not match:
        return None
    amount = float(match.group(1))
    return amount if (match.group(2) or "min").startswith(("s", "秒")) else amount * 60


def parse_call_markdown(text: str, source: str, call_id: str) -> ParsedCall:
    """A markdown call: '# ...: Stage' title, '**Field:** value' header lines (Call ID, Date,
    Duration, Outcome), a '**Participants:**' list with roles, then '**Name:** text' turns
    after a '---' rule; a closing '**Call Notes:**' list after a further rule is kept as notes."""
    header_text, _, rest = text.partition("\n---")
    fields: dict[str, str] = {}
    participants: list[tuple[str, str]] = []
    stage = None
    for line in header_text.splitlines():
        if line.startswith("# ") and stage is None:
            title = line[2:].strip()
            stage = title.split(":", 1)[1].strip() if ":" in title else title
        elif match := _HEADER_FIELD.match(line):
            fields[match.group(1).strip().casefold()] = match.group(2)
        elif (match := _PARTICIPANT.match(line)) and "participants" in fields:
            participants.append((match.group(1).strip(), (match.group(2) or "").strip()))

    # The body runs to the rule before '**Call Notes:**' (or to the end).
    body, notes = rest, []
    notes_at = re.search(r"^\s*---\s*\n\s*\*\*(?:Call )?Notes[:：]\*\*", rest, re.MULTILINE)
    if notes_at:
        body = rest[: notes_at.start()]
        notes = [
            line.strip()[2:].strip()
            for line in rest[notes_at.end() :].splitlines()
            if line.strip().startswith(("- ", "* "))
        ]
    labelled: list[list[str]] = []
    for line in body.splitlines():
        if match := _BOLD_TURN.match(line):
            labelled.append([match.group(1).strip(), match.group(2)])
        elif labelled and line.strip() and line.strip() != "---":
            labelled[-1][1] += "\n" + line.strip()
    if not labelled:
        raise InputError(
            f"{source} has a call header but no '**Name:** text' turns after the '---' rule"
        )

    roles = _participant_roles(participants, [label for label, _ in labelled], source)
    pairs = []
    for label, body_text in labelled:
        spoken = re.sub(r"\s+", " ", _ACTION.sub(" ", body_text)).strip()
        pairs.append((label, spoken or body_text.strip()))
    meta: dict[str, Any] = {}
    if fields.get("outcome"):
        meta["outcome"] = fields["outcome"]
    if fields.get("date"):
        meta["date"] = _parse_date(fields["date"])
    if fields.get("duration") and (seconds := _parse_minutes(fields["duration"])) is not None:
        meta["duration_s"] = seconds
    extra: dict[str, Any] = {"attendees": [name for name, _ in participants]}
    if stage:
        extra["stage"] = stage
    if notes:
        extra["notes"] = notes
    meta["extra"] = extra
    return ParsedCall(
        call_id=fields.get("call id") or call_id,
        turns=_timed([(roles[label], spoken) for label, spoken in pairs]),
        meta=meta,
        speakers=[label for label, _ in pairs],
    )


def _participant_roles(
    participants: list[tuple[str, str]], labels: list[str], source: str
) -> dict[str, Speaker]:
    """Rep or customer for each turn label, from the participants' titles. Turns name people by
    first name or full name; role labels ('Rep', '客户') need no participant entry."""
    if not participants:
        return assign_roles(labels, source)
    sellers = {name for name, title in participants if _SELLER_TITLE.search(title)}
    if not sellers:
        sellers = {participants[0][0]}  # outbound calls list the caller first
        logger.warning(
            "%s: no participant has a sales title; %r taken as the rep", source, participants[0][0]
        )
    by_label: dict[str, Speaker] = {}
    for name, _ in participants:
        role: Speaker = "rep" if name in sellers else "customer"
        by_label.setdefault(name.casefold(), role)
        by_label.setdefault(name.split()[0].casefold(), role)
    roles: dict[str, Speaker] = {}
    unknown = []
    for label in dict.fromkeys(labels):
        role = by_label.get(label.casefold()) or _role(label)
        if role is None:
            unknown.append(label)
        else:
            roles[label] = role
    if unknown:
        raise InputError(
            f"{source}: speakers {unknown} are not among the participants "
            f"{[name for name, _ in participants]} and are no role name; add them to the "
            "'**Participants:**' list as '- Name (Title, Company)', or label the turns "
            "'**Rep:**' / '**Customer:**'"
        )
    return roles


# --- CSV message exports ------------------------------------------------------

CSV_AUTHORS: dict[str, Speaker] = {"agent": "rep", **ROLE_LABELS}


def is_csv_call_folder(path: Path) -> bool:
    return path.is_dir() and (path / "messages.csv").is_file()


def _seconds(stamp: str) -> float | None:
    try:
        return datetime.fromisoformat(stamp.strip()).timestamp()
    except ValueError:
        return None


def parse_csv_folder(folder: Path) -> list[ParsedCall]:
    """One call per conversation_id; outcome and duration from conversations.csv when present."""
    outcomes: dict[str, dict[str, str]] = {}
    conversations = folder / "conversations.csv"
    if conversations.is_file():
        with conversations.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            if "conversation_id" not in (reader.fieldnames or []):
                raise InputError(
                    f"{conversations} needs the column 'conversation_id' (and 'outcome', "
                    f"optionally 'duration_seconds'); it has {reader.fieldnames}"
                )
            outcomes = {row["conversation_id"]: row for row in reader}

    rows_by_call: dict[str, list[dict[str, str]]] = defaultdict(list)
    with (folder / "messages.csv").open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        needed = {"conversation_id", "message", "author"}
        if not needed <= set(reader.fieldnames or []):
            raise InputError(
                f"{folder / 'messages.csv'} needs the columns {sorted(needed)} (and optionally "
                f"'timestamp'); it has {reader.fieldnames}"
            )
        for row in reader:
            rows_by_call[row["conversation_id"]].append(row)

    calls, rescaled = [], 0
    for call_id, rows in rows_by_call.items():
        info = outcomes.get(call_id, {})
        meta: dict[str, Any] = {"outcome": (info.get("outcome") or None)}
        if info.get("duration_seconds"):
            try:
                meta["duration_s"] = float(info["duration_seconds"])
            except ValueError:
                logger.warning(
                    "%s: duration %r of %s is not a number",
                    folder,
                    info["duration_seconds"],
                    call_id,
                )
        turns = _csv_turns(rows, f"{folder}:{call_id}")
        if not turns:
            logger.warning("%s: conversation %s has no usable messages; skipped", folder, call_id)
            continue
        if meta.get("duration_s") and turns[-1].end > RESCALE_ABOVE * meta["duration_s"]:
            turns = _rescale(turns, meta["duration_s"])
            rescaled += 1
        calls.append(ParsedCall(call_id=call_id, turns=turns, meta=meta))
    if rescaled:
        logger.warning(
            "%s: message timestamps of %d calls span far more than their duration_seconds; "
            "their turn times were rescaled to fit the duration",
            folder,
            rescaled,
        )
    return calls


# Some exports stamp messages with processing times rather than call offsets; when
# the stamps span much longer than the recorded duration, keep their order and
# proportions but fit them into the duration, so citations point near the moment.
RESCALE_ABOVE = 1.2


def _rescale(turns: list[Turn], duration_s: float) -> list[Turn]:
    factor = duration_s / turns[-1].end
    return [
        Turn(
            t.speaker,
            round(t.start * factor, 2),
            round(max(t.end, t.start + 0.1) * factor, 2),
            t.text,
        )
        for t in turns
    ]


def _csv_turns(rows: list[dict[str, str]], source: str) -> list[Turn]:
    stamps = [_seconds(r.get("timestamp") or "") for r in rows]
    if any(s is None for s in stamps):
        return _timed(
            [
                (CSV_AUTHORS.get(r["author"].strip().casefold(), "customer"), r["message"].strip())
                for r in rows
                if r["message"].strip()
            ]
        )
    origin = min(stamps)
    turns = []
    for i, (row, stamp) in enumerate(zip(rows, stamps, strict=True)):
        text = row["message"].strip()
        role = CSV_AUTHORS.get(row["author"].strip().casefold())
        if not text:
            continue
        if role is None:
            logger.warning(
                "%s: author %r is neither agent nor customer; taken as customer",
                source,
                row["author"],
            )
            role = "customer"
        start = stamp - origin
        following = stamps[i + 1] - origin if i + 1 < len(stamps) else None
        estimate = start + max(len(text) / CHARS_PER_SECOND, 0.5)
        end = min(following, estimate) if following is not None and following > start else estimate
        turns.append(Turn(speaker=role, start=round(start, 2), end=round(end, 2), text=text))
    return turns


# --- metadata sidecars ---------------------------------------------------------

SIDECAR_FIELDS = ("outcome", "account_id", "rep_id", "deal_id", "date")


def read_sidecar(audio_path: Path) -> dict[str, Any]:
    """Metadata from ``<recording>.json`` beside a recording. Its reference turns are ignored:
    a recording's transcript always comes from the audio."""
    sidecar = audio_path.with_suffix(".json")
    if not sidecar.is_file():
        return {}
    try:
        data = json.loads(sidecar.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"sidecar {sidecar} is not valid JSON: {exc}; fix or remove it") from exc
    if not isinstance(data, dict):
        raise InputError(f"sidecar {sidecar} must hold a JSON object")
    meta = {k: data[k] for k in SIDECAR_FIELDS if data.get(k) is not None}
    extra = {k: v for k, v in data.items() if k not in {*SIDECAR_FIELDS, "turns"}}
    if extra:
        meta["extra"] = extra
    return meta
