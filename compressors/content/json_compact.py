"""Lossless JSON: the same values in fewer tokens (minified; uniform records as a table).

Tool servers pretty-print JSON and repeat every key in every record. `compact` removes
the whitespace between tokens and writes each array of at least `MIN_ROWS` records that
share one key order as a table that is still valid JSON::

    [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}, ...]
    -> {"ctxzip_table":[["id","name"],[1,"a"],[2,"b"],...]}

Records of another shape stay in the table as the objects they were. Every kept token
(strings with their escapes, numbers as written) is the very substring of the input;
`expand_tables` turns a compacted value back into the original one, equal value for
value and key for key (tested on generated and on real outputs).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from typing import Any

from ctxzip.compressors.content.json_records import members

TABLE = "ctxzip_table"
MIN_ROWS = 3
_TOKENS = re.compile(r'("(?:[^"\\]|\\.)*")|[ \t\n\r]+')


def minify(text: str) -> str:
    """`text` (valid JSON) without the whitespace between tokens; strings untouched."""
    return _TOKENS.sub(lambda m: m.group(1) or "", text)


def _keys(value: Any) -> tuple[str, ...] | None:
    return tuple(value) if isinstance(value, dict) else None


def _header(items: list[Any]) -> tuple[str, ...] | None:
    """The key order shared by most records, when a table pays off for this array."""
    if len(items) < MIN_ROWS or not all(isinstance(v, dict) for v in items):
        return None
    shapes = Counter(_keys(v) for v in items)
    header, n = shapes.most_common(1)[0]
    if not header or n < MIN_ROWS or 2 * n < len(items):
        return None
    return header


def _emit(text: str, start: int, end: int, value: Any) -> str:
    """The compact text of the (minified) JSON value `text[start:end]`, parsed as `value`."""
    if not isinstance(value, (dict, list)) or end - start <= 2:
        return text[start:end]
    found, _ = members(text, start)
    if isinstance(value, dict):
        if len(found) != len(value):
            return text[start:end]  # duplicate keys: leave the object exactly as it was
        parts = [text[p:s] + _emit(text, s, e, v)
                 for (_, p, s, e), v in zip(found, value.values(), strict=True)]  # fmt: skip
        return "{" + ",".join(parts) + "}"
    header = _header(value)
    if header is None:
        return (
            "["
            + ",".join(_emit(text, s, e, v) for (_, _, s, e), v in zip(found, value, strict=True))
            + "]"
        )
    rows: list[str] = []
    head = ""
    for (_, _p, s, e), record in zip(found, value, strict=True):
        inner, _ = members(text, s)
        if _keys(record) != header or len(inner) != len(header):
            rows.append(_emit(text, s, e, record))  # another shape: the object itself
            continue
        if not head:
            head = "[" + ",".join(text[p : vs - 1] for _, p, vs, _ in inner) + "]"
        cells = [
            _emit(text, vs, ve, v) for (_, _, vs, ve), v in zip(inner, record.values(), strict=True)
        ]
        rows.append("[" + ",".join(cells) + "]")
    return '{"' + TABLE + '":[' + ",".join([head, *rows]) + "]}"


def compact(text: str) -> str | None:
    """The lossless compact form of JSON `text`, or None when it is not JSON (or holds
    the table key already, so a table could not be told apart)."""
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return None
    mini = minify(text)
    if f'"{TABLE}"' in mini:
        return mini if len(mini) < len(text) else None
    try:
        return _emit(mini, 0, len(mini), value)
    except (ValueError, IndexError, RecursionError):
        return mini


def expand_tables(value: Any) -> Any:
    """A compacted value back in its original form (tables to arrays of records)."""
    if isinstance(value, list):
        return [expand_tables(v) for v in value]
    if not isinstance(value, dict):
        return value
    table = value.get(TABLE) if len(value) == 1 else None
    if isinstance(table, list) and table and isinstance(table[0], list):
        header = table[0]
        return [dict(zip(header, (expand_tables(c) for c in row), strict=True))
                if isinstance(row, list) else expand_tables(row) for row in table[1:]]  # fmt: skip
    return {k: expand_tables(v) for k, v in value.items()}
