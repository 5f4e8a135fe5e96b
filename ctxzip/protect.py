"""Protected spans: text that compressors keep verbatim (and count against the budget)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property

import regex

from ctxzip.result import Span
from ctxzip.spans import merge_spans

CODE_FENCE = regex.compile(r"(?ms)^[ \t]*(```|~~~)[^\n]*\n.*?^[ \t]*\1[ \t]*$")
URL = regex.compile(r"""\b(?:https?://|www\.)[^\s<>"'`]+(?<![.,;:!?)\]}'"])""")
EMAIL = regex.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b")
TABLE = regex.compile(r"(?m)(?:^[ \t]*\|.*\|[ \t]*(?:\n|\Z)){2,}")
_JSON_START = regex.compile(r"[\[{]")
_decoder = json.JSONDecoder()


def json_spans(text: str, min_chars: int = 8) -> list[Span]:
    """Spans of JSON objects and arrays that parse; prose in brackets is not JSON."""
    spans: list[Span] = []
    pos = 0
    while True:
        m = _JSON_START.search(text, pos)
        if m is None:
            return spans
        start = m.start()
        try:
            value, end = _decoder.raw_decode(text, start)
        except ValueError:
            pos = start + 1
            continue
        if end - start >= min_chars and isinstance(value, (dict, list)) and value:
            spans.append((start, end))
            pos = end
        else:
            pos = start + 1


def structure_spans(text: str) -> list[Span]:
    """Blocks that must never be split: code fences, markdown tables, JSON."""
    spans = [m.span() for m in CODE_FENCE.finditer(text)]
    spans += [
        (m.start(), m.end() - (1 if m.group().endswith("\n") else 0)) for m in TABLE.finditer(text)
    ]
    spans += json_spans(text)
    return merge_spans(spans)


def atomic_spans(text: str) -> list[Span]:
    """Spans no splitter may cut: blocks plus URLs and e-mail addresses."""
    spans = structure_spans(text)
    spans += [m.span() for m in URL.finditer(text)]
    spans += [m.span() for m in EMAIL.finditer(text)]
    return merge_spans(spans)


@dataclass(frozen=True)
class Protect:
    """What a compressor must keep verbatim.

    `patterns` are regexes, `tags` name tagged regions (``"keep"`` protects
    ``<keep>...</keep>``, tags included), `force` lists literal strings always kept.
    `structure=True` also keeps every code fence, table, JSON value, URL and e-mail.
    (Those are never cut in half either way; this decides whether they may be dropped.)
    """

    patterns: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    force: tuple[str, ...] = ()
    structure: bool = False

    @cached_property
    def _compiled(self) -> list[regex.Pattern[str]]:
        compiled = [regex.compile(p) for p in self.patterns]
        for tag in self.tags:
            name = regex.escape(tag)
            compiled.append(regex.compile(rf"(?s)<{name}(?:\s[^>]*)?>.*?</{name}>"))
        forced = sorted((f for f in self.force if f), key=len, reverse=True)
        if forced:
            compiled.append(regex.compile("|".join(regex.escape(f) for f in forced)))
        return compiled

    def spans(self, text: str) -> list[Span]:
        """Merged, sorted spans of `text` that must be kept verbatim."""
        spans: list[Span] = atomic_spans(text) if self.structure else []
        for pattern in self._compiled:
            spans += [m.span() for m in pattern.finditer(text)]
        return merge_spans(spans)

    def __bool__(self) -> bool:
        return bool(self.patterns or self.tags or self.force or self.structure)


NO_PROTECT = Protect()
