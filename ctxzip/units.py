"""Sentences and words with exact character offsets.

Every unit is a slice of the original text (``text[u.start:u.end] == u.text``), units
never overlap, and the gaps between them hold only whitespace, so any selection of
units maps back to the source exactly. Code fences, markdown tables, JSON, URLs and
e-mail addresses are never cut; code fences, tables and JSON on their own lines are
units of their own. Units overlapping a `Protect` span are flagged ``protected``.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

import regex

from ctxzip.protect import NO_PROTECT, Protect, atomic_spans, structure_spans
from ctxzip.result import Span
from ctxzip.spans import merge_spans


@dataclass(frozen=True)
class Unit:
    """One sentence or word: its text, where it sits in the source, and its kind."""

    text: str
    start: int
    end: int
    kind: str = "text"  # "text" | "block" (code/table/JSON) | "atom" (URL, e-mail...)
    protected: bool = False

    @property
    def span(self) -> Span:
        return (self.start, self.end)


_ABBREVIATIONS = frozenset(
    [
        "mr",
        "mrs",
        "ms",
        "dr",
        "prof",
        "sr",
        "jr",
        "st",
        "vs",
        "etc",
        "e.g",
        "i.e",
        "cf",
        "fig",
        "figs",
        "no",
        "nos",
        "vol",
        "pp",
        "ca",
        "approx",
        "inc",
        "ltd",
        "co",
        "corp",
        "dept",
        "est",
        "jan",
        "feb",
        "mar",
        "apr",
        "jun",
        "jul",
        "aug",
        "sep",
        "sept",
        "oct",
        "nov",
        "dec",
        "mt",
        "ft",
        "al",
        "gen",
        "col",
        "lt",
        "sgt",
        "rev",
    ]
)
_CJK = r"\p{Han}\p{Hiragana}\p{Katakana}"
# A sentence ends at terminal punctuation (plus closing quotes/brackets) followed by
# whitespace, right after CJK / Indic terminal punctuation, at a paragraph break, or
# before a line that starts a list item, heading or quote.
_BOUNDARY = regex.compile(
    r"""
    (?P<latin>[.!?…]+["'”’)\]]*)(?=\s+\S)
  | (?P<cjk>[。！？｡]+[」』”’）)]*)
  | (?P<indic>[।॥]+)
  | (?P<para>\n[ \t]*\n\s*)
  | (?P<line>\n)(?=[ \t]*(?:[-*+•]\s|\d{1,3}[.)]\s|\#{1,6}\s|>\s))
    """,
    regex.VERBOSE,
)
_UNIT_NAMES = (
    r"(?:%|‰|°[CF]?|[kMGTP]?(?:Hz|B|iB|W|Wh|V|A|g|m|s|b|bps)|mm|cm|km|mg|kg|ms|µs|ns|min|h"
    r"|hrs?|lbs?|oz|ft|in|mi|mph|ml|mL|L|px|pt|em|rem|x|USD|EUR|GBP|JPY)"
)
_WORD = regex.compile(
    rf"""
    [$€£¥]?\d+(?:[.,:/]\d+)*(?:[\p{{L}}\p{{M}}µ°%‰]+\b|[ \t]?{_UNIT_NAMES}\b)?  # numbers, units
  | [{_CJK}]                                                       # one CJK character
  | [\p{{L}}\p{{M}}\p{{N}}_]+(?:['’\-][\p{{L}}\p{{M}}\p{{N}}_]+)*    # words, accents included
  | ([^\s\p{{L}}\p{{M}}\p{{N}}_])\1*                                # a run of one punctuation mark
    """,
    regex.VERBOSE,
)


class _Spans:
    """Sorted, merged spans with O(log n) membership and overlap tests."""

    def __init__(self, spans: list[Span]) -> None:
        self.spans = merge_spans(spans)
        self._starts = [s for s, _ in self.spans]

    def containing(self, pos: int) -> Span | None:
        i = bisect.bisect_right(self._starts, pos) - 1
        if i >= 0 and self.spans[i][0] <= pos < self.spans[i][1]:
            return self.spans[i]
        return None

    def overlaps(self, start: int, end: int) -> bool:
        i = bisect.bisect_left(self._starts, end) - 1
        return i >= 0 and self.spans[i][1] > start


def _trimmed(text: str, start: int, end: int) -> Span | None:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return (start, end) if end > start else None


def _is_abbreviation(text: str, dot: int) -> bool:
    """True when the '.' at `dot` ends an abbreviation or an initial, not a sentence."""
    i = dot
    while i > 0 and (text[i - 1].isalpha() or text[i - 1] == "."):
        i -= 1
    word = text[i:dot].lower()
    return word in _ABBREVIATIONS or (len(word) == 1 and text[i].isupper())


def _prose_sentences(text: str, start: int, end: int, no_cut: _Spans) -> list[Span]:
    spans: list[Span] = []
    cut = start
    for m in _BOUNDARY.finditer(text, start, end):
        if no_cut.containing(m.start()) or no_cut.containing(m.end() - 1):
            continue
        if m.group("latin"):
            if m.group("latin")[0] == "." and _is_abbreviation(text, m.start()):
                continue
            if text[m.end() : m.end() + 200].lstrip()[:1].islower():
                continue  # "e.g. the", "3 p.m. today": not a new sentence
        span = _trimmed(text, cut, m.end())
        if span:
            spans.append(span)
        cut = m.end()
    span = _trimmed(text, cut, end)
    if span:
        spans.append(span)
    return spans


def _on_own_lines(text: str, start: int, end: int) -> bool:
    before = text[text.rfind("\n", 0, start) + 1 : start]
    after_nl = text.find("\n", end)
    after = text[end : len(text) if after_nl < 0 else after_nl]
    return not before.strip() and not after.strip()


def split_sentences(text: str, protect: Protect = NO_PROTECT) -> list[Unit]:
    """Sentences of `text`; code fences, tables and JSON on their own lines are whole units."""
    no_cut = _Spans(atomic_spans(text) + protect.spans(text))
    keep = _Spans(protect.spans(text))
    blocks = [s for s in structure_spans(text) if _on_own_lines(text, *s)]
    units: list[Unit] = []
    pos = 0
    for b_start, b_end in [*blocks, (len(text), len(text))]:
        for s, e in _prose_sentences(text, pos, b_start, no_cut):
            units.append(Unit(text[s:e], s, e, "text", keep.overlaps(s, e)))
        if b_end > b_start:
            units.append(
                Unit(text[b_start:b_end], b_start, b_end, "block", keep.overlaps(b_start, b_end))
            )
        pos = b_end
    return units


def split_words(text: str, protect: Protect = NO_PROTECT) -> list[Unit]:
    """Words, numbers with units, single CJK characters and runs of one punctuation mark.

    Code fences, tables, JSON, URLs, e-mails and protected spans are single units.
    """
    keep = protect.spans(text)
    keep_index = _Spans(keep)
    atoms = merge_spans(atomic_spans(text) + keep)
    units: list[Unit] = []
    pos = 0
    for a_start, a_end in [*atoms, (len(text), len(text))]:
        units += [Unit(m.group(), m.start(), m.end()) for m in _WORD.finditer(text, pos, a_start)]
        if a_end > a_start:
            kind = "block" if "\n" in text[a_start:a_end] else "atom"
            units.append(
                Unit(text[a_start:a_end], a_start, a_end, kind, keep_index.overlaps(a_start, a_end))
            )
        pos = a_end
    return units


_SOLID = regex.compile(r"\S+")


def split_whitespace_words(text: str, protect: Protect = NO_PROTECT) -> list[Unit]:
    """Whitespace-delimited words, the units word-level compressors keep or drop whole.

    A flag (``--ascii``), path, URL, e-mail, version, number with its unit or dotted /
    snake_case / camelCase name is one word, punctuation attached to it included, so
    dropping words never alters one. Code fences, tables, JSON and protected spans that
    hold whitespace are single units ("block"), grown to the whole words they touch; a
    word holding a URL or e-mail is an "atom", like in `split_words`.
    """
    keep = protect.spans(text)
    keep_index = _Spans(keep)
    spans = merge_spans(atomic_spans(text) + keep)
    solid = _Spans([s for s in spans if not regex.search(r"\s", text[s[0] : s[1]])])
    atoms = [s for s in spans if regex.search(r"\s", text[s[0] : s[1]])]
    units: list[Unit] = []
    pos = 0
    for a_start, a_end in [*atoms, (len(text), len(text))]:
        for m in _SOLID.finditer(text, pos, a_start):
            kind = "atom" if solid.overlaps(*m.span()) else "text"
            units.append(Unit(m.group(), m.start(), m.end(), kind, keep_index.overlaps(*m.span())))
        if a_end > a_start:
            # the block grows to the whole words it touches at either edge
            start = a_start
            while start > pos and not text[start - 1].isspace():
                start -= 1
            if units and units[-1].end > start:
                start = min(start, units.pop().start)
            end = a_end
            while end < len(text) and not text[end].isspace():
                end += 1
            kind = "block" if "\n" in text[start:end] else "atom"
            units.append(Unit(text[start:end], start, end, kind, keep_index.overlaps(start, end)))
            a_end = end
        pos = a_end
    return units


def reconstruct(text: str, units: list[Unit]) -> str:
    """Rebuild `text` from its units and the whitespace gaps between them.

    Raises ValueError when the units do not tile the text (a check for tests and callers).
    """
    out: list[str] = []
    pos = 0
    for u in units:
        gap = text[pos : u.start]
        if u.start < pos or (gap and not gap.isspace()) or text[u.start : u.end] != u.text:
            raise ValueError(f"units do not tile the text at offset {u.start}")
        out += [gap, u.text]
        pos = u.end
    tail = text[pos:]
    if tail and not tail.isspace():
        raise ValueError(f"text after offset {pos} is not covered by any unit")
    out.append(tail)
    return "".join(out)
