"""Line-oriented output (logs, listings, package-manager output): keep what matters, mark the rest.

Always kept: the first and last lines, every error or warning line (with the line after
it, where tracebacks and "caused by" usually continue), and lines whose shape differs
from the dominant line shape when one dominates. Then lines matching the query, best
first, while the budget lasts. Exact repeats score nothing after their first occurrence.
"""

from __future__ import annotations

import re

from ctxzip.compressors.content.base import (
    Shrunk,
    alert_lines,
    passthrough,
    query_terms,
    render_lines,
    select,
    term_scores,
)

NAME = "logs"
HEAD, TAIL = 3, 2
_DIGITS = re.compile(r"\d+")
_SHAPE = re.compile(r"[A-Za-z]+")


def shape(line: str) -> str:
    """A coarse signature of a line's leading shape (letters -> a, digits -> 0)."""
    head = line[:16]
    return _SHAPE.sub("a", _DIGITS.sub("0", head)).strip()


def odd_lines(lines: list[str]) -> set[int]:
    """Lines whose shape differs from a shape that covers at least 70% of the lines."""
    shapes = [shape(line) for line in lines]
    counts: dict[str, int] = {}
    for s in shapes:
        counts[s] = counts.get(s, 0) + 1
    top, top_n = max(counts.items(), key=lambda kv: kv[1]) if counts else ("", 0)
    if top_n < 0.7 * len(lines):
        return set()
    return {i for i, s in enumerate(shapes) if s != top and lines[i].strip()}


def compress(text: str, query: str | None, rate: float, lines: list[str] | None = None) -> Shrunk:
    """Compress line-oriented `text` to about `rate` of its characters."""
    lines = lines if lines is not None else text.splitlines(keepends=True)
    n = len(lines)
    if n <= HEAD + TAIL + 1:
        return passthrough(text, NAME, "too_short")
    must = set(range(HEAD)) | set(range(n - TAIL, n))
    for i in alert_lines(lines, "".join(lines)):
        must.add(i)
        if i + 1 < n:
            must.add(i + 1)
    must |= odd_lines(lines)
    scores = term_scores(lines, query_terms(query))
    seen: set[str] = set()
    for i, line in enumerate(lines):
        norm = line.strip()
        if norm in seen:
            scores[i] = 0.0  # an exact repeat tells nothing new
        seen.add(norm)
    budget = int(len(text) * rate)
    kept = select([len(x) for x in lines], scores, must, budget)
    out = render_lines(lines, kept)
    out.content_type = NAME
    return out
