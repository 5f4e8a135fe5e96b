"""Prose, markdown and HTML: through one of the existing text methods (``extractive`` by
default), with one marker at the end whose key fetches the whole original back."""

from __future__ import annotations

import re
from collections.abc import Callable

from ctxzip.budget import Budget
from ctxzip.compressor import Compressor
from ctxzip.compressors.content.base import Shrunk, key_for, marker, passthrough

NAME = "prose"
_SENTENCE_END = re.compile(r"[.!?:]['\")\]]?\s*$")
_TAG = re.compile(r"</?[A-Za-z][\w-]*(?:\s[^<>]*)?>")


def looks_like(text: str, lines: list[str]) -> bool:
    """Paragraphs, sentences or markup rather than a listing."""
    rows = [x for x in lines if x.strip()]
    if not rows:
        return False
    if len(_TAG.findall(text[:4000])) >= 5:
        return True
    long_rows = sum(1 for x in rows if len(x) > 200)
    ends = sum(1 for x in rows if _SENTENCE_END.search(x))
    return long_rows >= 0.3 * len(rows) or ends >= 0.3 * len(rows)


def compress(text: str, query: str | None, rate: float,
             load: Callable[[], Compressor | None] | None) -> Shrunk:  # fmt: skip
    """Compress prose at `rate` with the text method `load` returns; passes through
    without one."""
    method = load() if load is not None else None
    if method is None:
        return passthrough(text, NAME, "no_text_method")
    result = method.compress(text, query=query, budget=Budget(rate=rate))
    short = result.texts[0] if result.texts else ""
    if not short.strip():
        return passthrough(text, NAME, "nothing_kept")
    key = key_for(text)
    out = short.rstrip() + "\n" + marker(len(text) - len(short), "chars", key)
    if len(out) >= len(text):
        return passthrough(text, NAME, "no_gain")
    return Shrunk(out, NAME, 1, 1, {key: text})
