"""Messages cut to what a line, a tag or a table cell can hold."""

from __future__ import annotations


def first_line(text: object) -> str:
    """The first line of a message (of an exception's text, too)."""
    lines = str(text).strip().splitlines()
    return lines[0] if lines else ""


def clip(line: str, limit: int = 200) -> str:
    return line if len(line) <= limit else line[: limit - 1] + "…"
