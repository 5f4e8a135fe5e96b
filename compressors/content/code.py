"""Source code: keep the outline (imports, signatures, decorators) and the bodies around
lines that answer the query.

Always kept: import lines, ``def``/``class``/``function``/``fn``/... signature lines and
decorators, and error/warning comments. Then lines matching the query with two lines of
context either side, best first, while the budget lasts.
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

NAME = "code"
OUTLINE = re.compile(
    r"^[ \t]*(?:(?:async[ \t]+)?def |class |import |from \S+ import |@\w|#include|package |"
    r"(?:export[ \t]+)?(?:async[ \t]+)?function\b|(?:pub(?:\([^)]*\))?[ \t]+)?fn |func |"
    r"(?:public|private|protected|static|interface|struct|enum|trait|impl|module|namespace)\b)",
    re.M,
)
CODEISH = re.compile(
    r"^[ \t]*(?:(?:async[ \t]+)?def |class |import |from \S+ import |return\b|if\b.*[:{][ \t]*$|"
    r"for\b.*[:{][ \t]*$|while\b.*[:{][ \t]*$|elif\b|else[ \t]*[:{]|try[ \t]*[:{]|except\b|#include|"
    r"function\b|const |let |var |fn |func |pub |package |#|//)"
    r"|[{};][ \t]*$|\):[ \t]*$",
    re.M,
)
CONTEXT = 2


def looks_like(lines: list[str]) -> bool:
    """At least a fifth of the non-empty lines look like code."""
    sample = [x for x in lines[:300] if x.strip()]
    return len(sample) >= 5 and len(matching(CODEISH, sample)) >= 0.2 * len(sample)


def compress(text: str, query: str | None, rate: float, lines: list[str] | None = None) -> Shrunk:
    """Compress source `text` to about `rate` of its characters."""
    lines = lines if lines is not None else text.splitlines(keepends=True)
    n = len(lines)
    if n < 8:
        return passthrough(text, NAME, "too_short")
    must = matching(OUTLINE, lines, text)
    raw = term_scores(lines, query_terms(query))
    scores = list(raw)
    for i, s in enumerate(raw):
        if s > 0:
            for j in range(max(0, i - CONTEXT), min(n, i + CONTEXT + 1)):
                if j != i:
                    scores[j] = max(scores[j], s * 0.6)
    for i in must:
        if i + 1 < n and lines[i + 1].strip().startswith(('"""', "'''", "/**", "///", "#")):
            scores[i + 1] += 0.2  # the first docstring line says what a definition is for
    budget = int(len(text) * rate)
    kept = select([len(x) for x in lines], scores, must, budget)
    out = render_lines(lines, kept)
    out.content_type = NAME
    return out
