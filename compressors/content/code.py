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
    ascii_lower,
    matching,
    passthrough,
    query_terms,
    render_lines,
    select,
    term_scores,
)

NAME = "code"
OUTLINE = (
    "def ", "async def ", "class ", "import ", "@", "#include", "package ", "function ",
    "export ", "async function ", "fn ", "pub ", "pub(", "func ", "public ", "private ",
    "protected ", "static ", "interface ", "struct ", "enum ", "trait ", "impl ", "module ",
    "namespace ",
)  # fmt: skip
"""Line starts (after indentation) of the outline: imports, signatures, decorators."""
CODEISH = (
    *OUTLINE, "from ", "return", "if ", "for ", "while ", "elif ", "else", "try", "except",
    "const ", "let ", "var ", "#", "//",
)  # fmt: skip
CODE_ENDS = ("{", "}", ";", "):", ":")
CONTEXT = 2


def _outline(stripped: str) -> bool:
    if stripped.startswith("from "):
        return " import " in stripped
    return stripped.startswith(OUTLINE)


def looks_like(lines: list[str]) -> bool:
    """At least a fifth of the non-empty lines look like code."""
    sample = [x.strip() for x in lines[:300]]
    sample = [x for x in sample if x]
    hits = sum(1 for x in sample if x.startswith(CODEISH) or x.endswith(CODE_ENDS))
    return len(sample) >= 5 and hits >= 0.2 * len(sample)


def compress(text: str, query: str | None, rate: float, lines: list[str] | None = None) -> Shrunk:
    """Compress source `text` to about `rate` of its characters."""
    lines = lines if lines is not None else text.splitlines(keepends=True)
    n = len(lines)
    if n < 8:
        return passthrough(text, NAME, "too_short")
    must = {i for i, line in enumerate(lines) if _outline(line.lstrip())}
    terms = query_terms(query)
    raw = term_scores(lines, terms)
    if terms:  # where a queried name is defined or assigned says most about it
        names = "|".join(re.escape(t) for t in terms)
        defining = re.compile(
            rf"\b(?:{names})\b[ \t]*(?::[^=\n]*)?=(?!=)"
            rf"|\b(?:def|class|fn|func|function)[ \t]+(?:{names})\b"
        )
        for i in matching(defining, lines, ascii_lower(text)):
            raw[i] += 1.0
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
