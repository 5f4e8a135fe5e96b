"""Search results (``path:line:text``, as from ``grep -rn`` or ripgrep): keep matches that
answer the query, one per file at least while the budget lasts.

Each kept line is the input line byte for byte, its path and line number included.
Lines that are not ``path:line:`` shaped (context separators, binary-file notices,
errors) are always kept.
"""

from __future__ import annotations

import re

from ctxzip.compressors.content.base import (
    Shrunk,
    passthrough,
    query_terms,
    render_lines,
    select,
    term_scores,
)

NAME = "search"
LEVEL = re.compile(r"\b(?:ERROR|WARNING|FATAL|CRITICAL)\b")
HIT = re.compile(r"^([^\s:]{1,400}):(\d+):")
AROUND = re.compile(r"^([^\s:]{1,400})-(\d+)-")  # grep -A/-B/-C context lines


def looks_like(lines: list[str]) -> bool:
    """Most non-empty lines are ``path:line:`` hits."""
    sample = [x for x in lines[:200] if x.strip()]
    return len(sample) >= 3 and sum(1 for x in sample if HIT.match(x)) >= 0.6 * len(sample)


def compress(text: str, query: str | None, rate: float, lines: list[str] | None = None) -> Shrunk:
    """Compress grep-style `text` to about `rate` of its characters."""
    lines = lines if lines is not None else text.splitlines(keepends=True)
    if len(lines) < 4:
        return passthrough(text, NAME, "too_short")
    must: set[int] = set()
    paths: list[str] = []
    bodies: list[str] = []
    for i, line in enumerate(lines):
        m = HIT.match(line) or AROUND.match(line)
        if m is None:
            if line.strip() and not line.startswith("--"):
                must.add(i)  # odd-shaped: "Binary file ... matches", grep errors
            paths.append("")
            bodies.append(line)
            continue
        paths.append(m.group(1))
        bodies.append(line[m.end() :])
        if LEVEL.search(bodies[-1]):
            must.add(i)
    terms = query_terms(query)
    scores = term_scores(lines, terms)
    first_seen: set[str] = set()
    for i, path in enumerate(paths):
        if path and path not in first_seen:
            first_seen.add(path)
            scores[i] += 0.05  # the first hit of each file, when budget remains
    budget = int(len(text) * rate)
    kept = select([len(x) for x in lines], scores, must, budget)
    out = render_lines(lines, kept, "hits")
    out.content_type = NAME
    return out
