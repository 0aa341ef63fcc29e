"""Text transcripts and call folders into turns.

Supported here: ``Name: text`` lines (``.txt``/``.md``), the project's JSON
transcript schema, and CSV message exports laid out as a folder with
``conversations.csv`` (conversation_id, outcome, duration_seconds) and
``messages.csv`` (conversation_id, timestamp, message, author).

Plain text has no times, so turn times are estimated from text length at a
steady speaking rate; they keep the order and rough position, nothing more.
"""

from __future__ import annotations

import csv
import json
import logging
import re
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from copilot.errors import InputError
from copilot.schemas import Speaker, Turn

logger = logging.getLogger(__name__)

TEXT_SUFFIXES = {".txt", ".md", ".json"}
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
        ],
        "rep",
    ),
    **dict.fromkeys(
        ["customer", "client", "buyer", "prospect", "caller", "客户", "买家", "顾客"], "customer"
    ),
}

_LINE = re.compile(r"^\s*(?:\*\*)?([^:：*\n]{1,40}?)(?:\*\*)?\s*[:：]\s*(.+?)\s*$")


@dataclass
class ParsedCall:
    call_id: str
    turns: list[Turn]
    meta: dict[str, Any]


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
            labelled.append([match.group(1).strip(), match.group(2)])
        elif labelled and line.strip() and not line.lstrip().startswith(("#", "---")):
            labelled[-1][1] += " " + line.strip()
    if not labelled:
        raise InputError(
            f"{source} has no 'Speaker: text' lines; write one turn per line, e.g. 'Rep: Hello' "
            "and 'Customer: Hi'"
        )

    labels = list(dict.fromkeys(label for label, _ in labelled))
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
                f"{source}: cannot tell rep from customer among speakers {labels}; label the turns "
                "'Rep:' and 'Customer:' (or 'Agent:'/'Client:', '销售:'/'客户:')"
            )
    return _timed([(roles[label], body) for label, body in labelled])


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
    return ParsedCall(call_id=path.stem, turns=parse_speaker_lines(text, str(path)), meta={})


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
            outcomes = {row["conversation_id"]: row for row in csv.DictReader(fh)}

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
