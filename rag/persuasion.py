"""Persuasion for Good chats (Wang et al., ACL 2019) as calls.

The folder holds ``full_dialog.csv`` (one row per utterance: ``Unit`` the text, ``Turn``
the round, ``B4`` the role, 0 persuader / 1 persuadee, ``B2`` the dialogue id) and
``full_info.csv`` (one row per participant: ``B2``, ``B4``, ``B6`` the donation actually
made after the chat). The persuader asks for a donation, so the persuader is the rep and
the persuadee the customer; the persuadee's donation is the outcome. The ``300_*`` files
beside them annotate a subset of the same dialogues: they are not read here, so no
dialogue is stored twice.

A chat has no times. ``Turn`` needs seconds (copilot/schemas.py), so turn times are the
project's reading-speed estimate for text without times (rag/parse.py), the same a
``Name: text`` transcript of this chat would get: they keep the order and rough
position, not real seconds.
"""

from __future__ import annotations

import csv
import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from copilot.errors import InputError
from copilot.schemas import Speaker
from rag.parse import ParsedCall, _timed

logger = logging.getLogger(__name__)

DIALOG_FILE = "full_dialog.csv"
INFO_FILE = "full_info.csv"
DIALOG_COLUMNS = ("B2", "Turn", "B4", "Unit")
INFO_COLUMNS = ("B2", "B4", "B6")

DONATED = "donated"
NOT_DONATED = "not donated"
ROLES: dict[str, Speaker] = {"0": "rep", "1": "customer"}  # B4: persuader, persuadee
CALL_PREFIX = "persuasion-"

# Dialogue ids start with the session's date and time: 20180904-045349_715_live; the
# origin marks some sessions BAD_.
_SESSION_DATE = re.compile(r"^(?:BAD_)?(\d{4})(\d{2})(\d{2})-\d{6}")


@dataclass(frozen=True)
class Participant:
    user_id: str | None
    donation: float | None


def is_persuasion_folder(path: Path) -> bool:
    """A folder with full_dialog.csv. Its full_info.csv is checked when it is read, so a
    folder missing it gets an error that says so instead of being passed over."""
    return path.is_dir() and (path / DIALOG_FILE).is_file()


def persuasion_files(folder: Path) -> list[Path]:
    """The files a persuasion folder is read from (what its content hash covers)."""
    return [folder / DIALOG_FILE, folder / INFO_FILE]


def call_id_for(dialogue_id: str) -> str:
    return f"{CALL_PREFIX}{dialogue_id}"


def parse_persuasion_folder(folder: Path) -> list[ParsedCall]:
    """One call per dialogue, in file order; outcome and donation from ``full_info.csv``."""
    info = _read_info(folder / INFO_FILE)
    rows_by_dialogue = _read_dialog(folder / DIALOG_FILE)

    calls, no_outcome = [], 0
    for dialogue_id, rows in rows_by_dialogue.items():
        pairs = _turn_pairs(rows)
        if not pairs:
            logger.warning("%s: dialogue %s has no text; skipped", folder, dialogue_id)
            continue
        persuadee = info.get((dialogue_id, "1"))
        persuader = info.get((dialogue_id, "0"))
        meta: dict[str, Any] = {}
        extra: dict[str, Any] = {"dataset": "persuasion", "dialogue_id": dialogue_id}
        if persuadee is not None and persuadee.donation is not None:
            meta["outcome"] = DONATED if persuadee.donation > 0 else NOT_DONATED
            extra["donation"] = persuadee.donation
        else:
            no_outcome += 1
        if persuader is not None and persuader.donation is not None:
            extra["persuader_donation"] = persuader.donation
        if persuader is not None and persuader.user_id:
            meta["rep_id"] = persuader.user_id  # the corpus's pseudonym (B3), e.g. user_585
        if date := _session_date(dialogue_id):
            meta["date"] = date
        meta["extra"] = extra
        calls.append(ParsedCall(call_id=call_id_for(dialogue_id), turns=_timed(pairs), meta=meta))
    if not calls:
        raise InputError(
            f"{folder / DIALOG_FILE} holds no dialogue rows; it needs one row per utterance "
            f"with the columns {list(DIALOG_COLUMNS)}"
        )
    if no_outcome:
        logger.warning(
            "%s: %d dialogues have no persuadee row with a donation (B4=1, B6) in %s; stored "
            "without an outcome",
            folder,
            no_outcome,
            INFO_FILE,
        )
    logger.info("%s: %d persuasion dialogues", folder, len(calls))
    return calls


def _read_rows(path: Path, needed: tuple[str, ...], what: str) -> list[dict[str, str]]:
    if not path.is_file():
        raise InputError(
            f"{path} is missing; a persuasion folder needs {DIALOG_FILE} and {INFO_FILE} "
            "side by side (the Persuasion for Good FullData files)"
        )
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            missing = [c for c in needed if c not in (reader.fieldnames or [])]
            if missing:
                raise InputError(
                    f"{path} lacks the column(s) {missing}; it needs {list(needed)} ({what}) "
                    f"and has {reader.fieldnames}; restore the original file or add the columns"
                )
            return list(reader)
    except UnicodeDecodeError as exc:
        raise InputError(f"{path} is not UTF-8 text; save it as UTF-8") from exc


def _read_dialog(path: Path) -> dict[str, list[dict[str, str]]]:
    rows: dict[str, list[dict[str, str]]] = {}
    odd_roles = 0
    for row in _read_rows(path, DIALOG_COLUMNS, "dialogue id, round, role 0/1, text"):
        if (row["B4"] or "").strip() not in ROLES:
            odd_roles += 1
            continue
        rows.setdefault((row["B2"] or "").strip(), []).append(row)
    if odd_roles:
        logger.warning("%s: %d rows have a role (B4) other than 0 or 1; skipped", path, odd_roles)
    return rows


def _read_info(path: Path) -> dict[tuple[str, str], Participant]:
    info: dict[tuple[str, str], Participant] = {}
    for row in _read_rows(path, INFO_COLUMNS, "dialogue id, role 0/1, donation made"):
        key = ((row["B2"] or "").strip(), (row["B4"] or "").strip())
        info[key] = Participant(
            user_id=(row.get("B3") or "").strip() or None,
            donation=_amount(row["B6"], path, key[0]),
        )
    return info


def _amount(value: str | None, path: Path, dialogue_id: str) -> float | None:
    if value is None or not value.strip():
        return None
    try:
        amount = float(value)
    except ValueError:
        amount = math.nan
    if not math.isfinite(amount) or amount < 0:
        logger.warning("%s: donation %r of %s is not an amount; ignored", path, value, dialogue_id)
        return None
    return amount


def _turn_pairs(rows: list[dict[str, str]]) -> list[tuple[Speaker, str]]:
    """Consecutive rows of one role in one round are one turn (the corpus splits some
    utterances into sentences)."""
    pairs: list[tuple[Speaker, str]] = []
    last_key: tuple[str, str] | None = None
    for row in rows:
        text = re.sub(r"\s+", " ", row["Unit"] or "").strip()
        if not text:
            continue
        key = ((row["Turn"] or "").strip(), row["B4"].strip())
        if key == last_key:
            pairs[-1] = (pairs[-1][0], f"{pairs[-1][1]} {text}")
        else:
            pairs.append((ROLES[key[1]], text))
        last_key = key
    return pairs


def _session_date(dialogue_id: str) -> str | None:
    match = _SESSION_DATE.match(dialogue_id)
    return "-".join(match.groups()) if match else None
