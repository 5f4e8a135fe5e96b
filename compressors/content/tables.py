"""Tables (markdown, CSV, TSV): keep the header, rows that answer the query, and odd rows.

Always kept: the header row (and a markdown separator row), the last row, and every row
whose column count differs from the table's. Then rows matching the query, best first.
"""

from __future__ import annotations

from ctxzip.compressors.content.base import (
    Shrunk,
    passthrough,
    query_terms,
    render_lines,
    select,
    term_scores,
)

NAME = "table"
DELIMITERS = ("\t", ",", ";")


def _is_markdown(lines: list[str]) -> bool:
    rows = [x.strip() for x in lines if x.strip()]
    return len(rows) >= 3 and sum(1 for r in rows if r.startswith("|")) >= 0.8 * len(rows)


def delimiter(lines: list[str]) -> str | None:
    """The delimiter of a CSV/TSV table, or None when the lines are not one."""
    rows = [x for x in lines[:60] if x.strip()]
    if len(rows) < 3:
        return None
    for d in DELIMITERS:
        counts = [r.count(d) for r in rows]
        mode = max(set(counts), key=counts.count)
        if mode >= (1 if d == "\t" else 2) and counts.count(mode) >= 0.85 * len(rows):
            return d
    return None


def looks_like(lines: list[str]) -> bool:
    return _is_markdown(lines) or delimiter(lines) is not None


def compress(text: str, query: str | None, rate: float, lines: list[str] | None = None) -> Shrunk:
    """Compress a table to about `rate` of its characters."""
    lines = lines if lines is not None else text.splitlines(keepends=True)
    n = len(lines)
    if n < 6:
        return passthrough(text, NAME, "too_short")
    sep = "|" if _is_markdown(lines) else delimiter(lines)
    if sep is None:
        return passthrough(text, NAME, "unparseable")
    counts = [line.count(sep) for line in lines]
    body = [c for c, line in zip(counts, lines, strict=True) if line.strip()]
    mode = max(set(body), key=body.count)
    first = next(i for i, line in enumerate(lines) if line.strip())
    must = {first, n - 1}
    for i, line in enumerate(lines):
        stripped = line.strip()
        if sep == "|" and set(stripped) <= set("|-: ") and "-" in stripped:
            must.add(i)  # the markdown separator row
        elif stripped and counts[i] != mode:
            must.add(i)  # odd-shaped row
    scores = term_scores(lines, query_terms(query))
    budget = int(len(text) * rate)
    kept = select([len(x) for x in lines], scores, must, budget)
    out = render_lines(lines, kept, "rows")
    out.content_type = NAME
    return out
