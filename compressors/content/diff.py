"""Unified diffs and ``git log -p``: keep every commit and file header, then hunks that
answer the query.

Always kept: ``commit``/``Author:``/``Date:``/``Merge:`` lines, ``diff --git``, ``index``,
``---``/``+++``, mode and rename lines. Then, by score: commit messages, ``@@`` hunk
headers, changed (``+``/``-``) lines, and context lines, each boosted by query matches.
"""

from __future__ import annotations

import re

from ctxzip.compressors.content.base import (
    Shrunk,
    matching,
    passthrough,
    query_terms,
    render_lines,
    select,
    term_scores,
)

NAME = "diff"
HEADER = re.compile(
    r"^(?:commit [0-9a-f]{7,64}\b|Author: |Date: |Merge: |diff --git |diff -|index [0-9a-f]|"
    r"--- |\+\+\+ |new file mode|deleted file mode|old mode|new mode|rename from|rename to|"
    r"similarity index|Binary files )",
    re.M,
)


def looks_like(lines: list[str]) -> bool:
    """A unified diff: ``diff --git`` or a ``---``/``+++``/``@@`` triple."""
    head = lines[:400]
    if any(x.startswith("diff --git ") for x in head):
        return True
    for i in range(len(head) - 2):
        if (
            head[i].startswith("--- ")
            and head[i + 1].startswith("+++ ")
            and (head[i + 2].startswith("@@ "))
        ):
            return True
    return False


def compress(text: str, query: str | None, rate: float, lines: list[str] | None = None) -> Shrunk:
    """Compress a diff to about `rate` of its characters."""
    lines = lines if lines is not None else text.splitlines(keepends=True)
    if len(lines) < 8:
        return passthrough(text, NAME, "too_short")
    scores = term_scores(lines, query_terms(query))
    must = matching(HEADER, lines, "".join(lines))
    in_message = False
    for i, line in enumerate(lines):
        if i in must:
            must.add(i)
            in_message = line.startswith("Date: ")
            continue
        if line.startswith("@@"):
            in_message = False
            scores[i] += 0.3
        elif in_message and line.startswith("    "):
            scores[i] += 1.0
        elif line.startswith(("+", "-")):
            scores[i] += 0.1 if scores[i] else 0.0
    budget = int(len(text) * rate)
    kept = select([len(x) for x in lines], scores, must, budget)
    out = render_lines(lines, kept)
    out.content_type = NAME
    return out
