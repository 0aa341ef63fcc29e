"""Small display helpers shared by the UI tabs."""

from __future__ import annotations

import re

_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]<>()#+!|~])")


def clock(seconds: float | None) -> str:
    """``m:ss`` (or ``h:mm:ss``) for a time in seconds from the start of a call."""
    if seconds is None:
        return ""
    total = int(round(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def md_escape(text: str) -> str:
    """Transcript text shown as Markdown literally: a caller's ``**`` or ``<a>`` stays text."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", text)
