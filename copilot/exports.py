"""CSV for people to open in a spreadsheet, with formula cells neutralised.

Every CSV the copilot writes for a user goes through ``write_csv`` (or ``csv_bytes``),
so a value a customer or a rep typed can never run as a formula when a manager opens
the file in Excel or LibreOffice ("CSV injection"). Following the OWASP guidance on
CSV injection, a text cell that starts with ``=``, ``+``, ``-``, ``@``, a tab or a
carriage return gets a leading apostrophe, which spreadsheets read as "this is
text"; the csv module quotes separators, quotes and line breaks inside a cell.

Numbers (``int``, ``float``) are written as they are: a number cannot carry a
formula, and ``-3`` must stay a number. The same characters in a *string* are
neutralised, so ``"-1+2"`` arrives as the text ``'-1+2``, not as 1.

    from copilot.exports import csv_bytes, write_csv
    write_csv(rows, ["id", "text"], stream)     # rows: sequences or mappings
    body = csv_bytes(rows, ["id", "text"])      # UTF-8 with a BOM, for downloads
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TextIO

# OWASP, "CSV Injection": cells must not begin with these characters.
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
NEUTRALISER = "'"


def safe_cell(value: Any) -> Any:
    """``value`` ready for a CSV cell: None -> "", numbers unchanged, text starting like a
    formula prefixed with an apostrophe."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return value
    text = str(value)
    if text.startswith(FORMULA_PREFIXES):
        return NEUTRALISER + text
    return text


def write_csv(
    rows: Iterable[Sequence[Any] | Mapping[str, Any]], header: Sequence[str], stream: TextIO
) -> int:
    """Write ``header`` and ``rows`` to ``stream``; returns the number of rows written.

    A row is a sequence in ``header`` order or a mapping read by the header's names
    (a missing name is an empty cell).
    """
    writer = csv.writer(stream)
    writer.writerow([safe_cell(name) for name in header])
    count = 0
    for row in rows:
        values = [row.get(name) for name in header] if isinstance(row, Mapping) else row
        writer.writerow([safe_cell(v) for v in values])
        count += 1
    return count


def csv_text(rows: Iterable[Sequence[Any] | Mapping[str, Any]], header: Sequence[str]) -> str:
    buffer = io.StringIO(newline="")
    write_csv(rows, header, buffer)
    return buffer.getvalue()


def csv_bytes(rows: Iterable[Sequence[Any] | Mapping[str, Any]], header: Sequence[str]) -> bytes:
    """The CSV as UTF-8 with a byte-order mark: without it Excel reads the file in the
    system's legacy code page and shows Chinese text as mojibake."""
    return csv_text(rows, header).encode("utf-8-sig")
