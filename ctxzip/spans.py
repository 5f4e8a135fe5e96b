"""Character spans: merging them and turning kept spans back into readable text."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from numpy.typing import ArrayLike

from ctxzip.result import Span


def merge_spans(spans: Iterable[Span]) -> list[Span]:
    """Sort and merge overlapping or touching spans; empty spans vanish."""
    out: list[Span] = []
    for start, end in sorted(s for s in spans if s[1] > s[0]):
        if out and start <= out[-1][1]:
            if end > out[-1][1]:
                out[-1] = (out[-1][0], end)
        else:
            out.append((start, end))
    return out


def overlapping(starts: ArrayLike, ends: ArrayLike, spans: Iterable[Span]) -> np.ndarray:
    """For each [start, end) range, whether any of `spans` covers part of it (vectorised:
    which words a compressor kept, which words a forced span touches)."""
    lo, hi = np.asarray(starts, dtype=np.int64), np.asarray(ends, dtype=np.int64)
    merged = merge_spans(spans)
    if not merged or not lo.size:
        return np.zeros(lo.shape, dtype=bool)
    p_start = np.asarray([a for a, _ in merged], dtype=np.int64)
    p_end = np.asarray([b for _, b in merged], dtype=np.int64)
    i = np.searchsorted(p_start, hi, side="left") - 1  # the last span starting before the end
    return (i >= 0) & (p_end[np.maximum(i, 0)] > lo)


def _is_word_char(ch: str) -> bool:
    return ch.isalnum() or ch == "_"


def _separator(gap: str, left: str, right: str) -> str:
    """What stands between two kept pieces when the text between them was dropped."""
    if not gap or gap.isspace():
        return gap  # nothing dropped: the original whitespace, byte for byte
    if "\n\n" in gap:
        return "\n\n"
    if "\n" in gap:
        return "\n"
    if gap[-1].isspace():
        return " "
    if left and right and _is_word_char(left[-1]) and _is_word_char(right[0]):
        return " "  # never glue two words together
    return ""  # "Paris" + "." reads as "Paris."


def join_spans(text: str, spans: Iterable[Span]) -> str:
    """The text made of `spans` of `text`, in order, with natural separators."""
    return joined_with_offsets(text, spans)[0]


def joined_with_offsets(text: str, spans: Iterable[Span]) -> tuple[str, list[int]]:
    """`join_spans`, plus where each merged span starts in the joined text (so spans of
    the joined text can be mapped back to the original, as a second stage needs)."""
    merged = merge_spans(spans)
    parts: list[str] = []
    at: list[int] = []
    length = 0
    prev_end: int | None = None
    for start, end in merged:
        piece = text[start:end]
        if prev_end is not None:
            sep = _separator(text[prev_end:start], parts[-1], piece)
            parts.append(sep)
            length += len(sep)
        at.append(length)
        parts.append(piece)
        length += len(piece)
        prev_end = end
    return "".join(parts), at


def spans_length(spans: Iterable[Span]) -> int:
    return sum(end - start for start, end in spans)
