"""Pick the content compressor for a text by what it holds (never by the tool's name).

Order: JSON (it parses), diff, search results, table, source code, prose/markup,
and any other multi-line text as line-oriented output (logs, listings). Text that looks
like JSON but does not parse passes through, counted as ``unparseable``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from ctxzip.compressor import Compressor
from ctxzip.compressors.content import code, diff, json_records, logs, prose, search, tables
from ctxzip.compressors.content.base import Shrunk, passthrough

TYPES = ("json", "diff", "search", "table", "code", "prose", "logs")
MIN_LINES = 6


def detect(text: str, lines: list[str] | None = None) -> tuple[str, Any]:
    """(content type, parsed JSON or None); ``unparseable`` for broken JSON-looking text."""
    stripped = text.lstrip()
    if stripped[:1] in ("{", "["):
        try:
            return "json", json.loads(text)
        except (ValueError, RecursionError):
            if stripped[:1] == "{" or stripped[:2] in ("[{", "[\n", "[ ", '["', "[]"):
                return "unparseable", None
    lines = lines if lines is not None else text.splitlines(keepends=True)
    if diff.looks_like(lines):
        return "diff", None
    if search.looks_like(lines):
        return "search", None
    if tables.looks_like(lines):
        return "table", None
    if code.looks_like(lines):
        return "code", None
    if prose.looks_like(text, lines):
        return "prose", None
    if len(lines) >= MIN_LINES:
        return "logs", None
    return "prose", None


def route(
    text: str,
    query: str | None,
    rate: float,
    prose_method: Callable[[], Compressor | None] | None = None,
) -> Shrunk:
    """Compress `text` with the compressor for its content, to about `rate` of its size.

    The result never grows: when compression would not shorten the text it passes
    through (reason ``no_gain``). `prose_method` loads the text method for prose (called
    only when prose arrives; None passes prose through)."""
    lines = text.splitlines(keepends=True)
    kind, parsed = detect(text, lines)
    if kind == "unparseable":
        return passthrough(text, "unparseable", "unparseable")
    if kind == "json":
        out = json_records.compress(text, query, rate, parsed=lambda: parsed)
    elif kind == "prose":
        out = prose.compress(text, query, rate, prose_method)
    else:
        module = {"diff": diff, "search": search, "table": tables, "code": code, "logs": logs}
        out = module[kind].compress(text, query, rate, lines)
    if out.changed and len(out.text) >= len(text):
        return passthrough(text, kind, "no_gain")
    return out
