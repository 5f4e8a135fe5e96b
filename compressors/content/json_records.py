"""JSON: shrink long arrays (and long objects) of records; everything kept is byte-identical.

The text is parsed once to check it is JSON, then walked over its own characters, so a
kept record is the very substring the tool produced (numbers, escapes and spacing
included). Each long array keeps its first two and last record, records that look like
errors, records whose shape (type, or set of keys) differs from the array's majority,
the few records naming a rare query term (whatever their size), and other records
matching the query, best first, while the budget lasts. The omitted
records are named in-band by a final note element (for objects: a final member)::

    {"ctxzip_omitted": {"count": 120, "of": 200, "indices": "2-80,82-122", "key": "…"}}

The result is valid JSON of the same top-level type; the key fetches the omitted
records back as one JSON array (or object).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from ctxzip.compressors.content.base import (
    Shrunk,
    is_alert,
    key_for,
    passthrough,
    query_terms,
    select,
    term_scores,
)

NAME = "json"
MIN_RECORDS = 8
SMALL = 400  # characters
NOTE = "ctxzip_omitted"
HEAD, TAIL = 2, 1
_WS = " \t\n\r"
_decoder = json.JSONDecoder()
_ALERT_VALUES = frozenset({"error", "failed", "failure", "fatal", "critical", "warning"})
_ALERT_KEYS = frozenset({"error", "errors", "exception", "traceback", "stderr"})

Member = tuple[str | None, int, int, int]  # (key or None, piece start, value start, end)


def _skip_ws(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in _WS:
        pos += 1
    return pos


def members(text: str, start: int) -> tuple[list[Member], int]:
    """The members of the array or object opening at `start`, and the position after it."""
    close = "]" if text[start] == "[" else "}"
    out: list[Member] = []
    pos = _skip_ws(text, start + 1)
    if text[pos] == close:
        return out, pos + 1
    while True:
        key = None
        piece = pos
        if close == "}":
            key, pos = json.decoder.scanstring(text, pos + 1)  # type: ignore[attr-defined]
            pos = _skip_ws(text, pos) + 1  # the colon
            pos = _skip_ws(text, pos)
        _, end = _decoder.raw_decode(text, pos)
        out.append((key, piece, pos, end))
        pos = _skip_ws(text, end)
        if text[pos] == close:
            return out, pos + 1
        pos = _skip_ws(text, pos + 1)  # the comma


def _shape(value: Any) -> Any:
    if isinstance(value, dict):
        return ("object", frozenset(value))
    return type(value).__name__


def _alert(value: Any, text: str) -> bool:
    if isinstance(value, dict):
        for k, v in value.items():
            if k.lower() in _ALERT_KEYS and v not in (None, "", [], {}, False, 0):
                return True
            if isinstance(v, str) and v.strip().lower() in _ALERT_VALUES:
                return True
    return is_alert(text)


def _ranges(indices: list[int]) -> str:
    parts: list[str] = []
    start = prev = indices[0]
    for i in [*indices[1:], -2]:
        if i != prev + 1:
            parts.append(str(start) if start == prev else f"{start}-{prev}")
            start = i
        prev = i
    return ",".join(parts)


class _Walker:
    def __init__(self, text: str, terms: list[str], rate: float) -> None:
        self.text = text
        self.terms = terms
        self.rate = rate
        self.edits: list[tuple[int, int, str]] = []
        self.originals: dict[str, str] = {}
        self.omitted = 0
        self.total = 0

    def walk(self, value: Any, start: int, depth: int = 0) -> None:
        """Visit the container `value` whose text opens at `start`."""
        if not isinstance(value, (list, dict)) or depth > 6:
            return
        found, end = members(self.text, start)
        if len(found) >= MIN_RECORDS:
            self.shrink(value, start, end, found)
            return
        items: list[Any] = list(value.values()) if isinstance(value, dict) else list(value)
        if isinstance(value, dict) and len(items) != len(found):
            return  # duplicate keys: leave this object as it is
        for item, (_, _p, s, e) in zip(items, found, strict=True):
            if e - s >= SMALL:  # a small container cannot hold a long array
                self.walk(item, s, depth + 1)

    def shrink(self, value: Any, start: int, end: int, members: list[Member]) -> None:
        text = self.text
        is_obj = isinstance(value, dict)
        if is_obj and len({m[0] for m in members}) != len(members):
            return  # duplicate keys: which value json.loads kept is ambiguous; leave it
        values = list(value.values()) if is_obj else list(value)
        pieces = [text[p:e] for _, p, _s, e in members]  # an object member: key and value
        n = len(members)
        self.total += n
        shapes = [_shape(v) for v in values]
        counts: dict[Any, int] = {}
        for sh in shapes:
            counts[sh] = counts.get(sh, 0) + 1
        top, top_n = max(counts.items(), key=lambda kv: kv[1])
        must = set(range(HEAD)) | set(range(n - TAIL, n))
        if top_n >= 0.6 * n:
            must |= {i for i, sh in enumerate(shapes) if sh != top}
        must |= {i for i, (v, p) in enumerate(zip(values, pieces, strict=True)) if _alert(v, p)}
        scores = term_scores(pieces, self.terms)
        # the few records that name a rare query term are what the question is about:
        # kept even when one alone is larger than the budget (a package with its whole
        # license text), as long as they are few
        named = [i for i, score in enumerate(scores) if score >= 1.0]
        if len(named) <= max(8, n // 4):
            must |= set(named)
        budget = int(sum(len(p) for p in pieces) * self.rate)
        kept = select([len(p) for p in pieces], scores, must, budget)
        dropped = [i for i in range(n) if i not in kept]
        if not dropped:
            return
        lead = text[start + 1 : members[0][1]]
        sep = text[members[0][3] : members[1][1]]
        trail = text[members[-1][3] : end - 1]
        gone = sep.join(pieces[i] for i in dropped)
        original = ("{" if is_obj else "[") + gone + ("}" if is_obj else "]")
        key = key_for(original)
        self.originals[key] = original
        self.omitted += len(dropped)
        note_value = json.dumps(
            {"count": len(dropped), "of": n, "indices": _ranges(dropped), "key": key}
        )
        note = f'"{NOTE}": {note_value}' if is_obj else f'{{"{NOTE}": {note_value}}}'
        body = sep.join([*(pieces[i] for i in sorted(kept)), note])
        opener, closer = ("{", "}") if is_obj else ("[", "]")
        self.edits.append((start, end, opener + lead + body + trail + closer))


def compress(
    text: str, query: str | None, rate: float, parsed: Callable[[], Any] | None = None
) -> Shrunk:
    """Compress JSON `text` to about `rate` of its characters (long arrays/objects only)."""
    try:
        value = parsed() if parsed is not None else json.loads(text)
    except (ValueError, RecursionError):
        return passthrough(text, NAME, "unparseable")
    if not isinstance(value, (list, dict)):
        return passthrough(text, NAME, "scalar")
    start = _skip_ws(text, 0)
    walker = _Walker(text, query_terms(query), rate)
    try:
        walker.walk(value, start)
    except (ValueError, IndexError, RecursionError):
        return passthrough(text, NAME, "unparseable")
    if not walker.edits:
        return passthrough(text, NAME, "no_long_arrays")
    out, pos = [], 0
    for s, e, new in sorted(walker.edits):
        out += [text[pos:s], new]
        pos = e
    out.append(text[pos:])
    return Shrunk("".join(out), NAME, walker.omitted, walker.total, walker.originals)
