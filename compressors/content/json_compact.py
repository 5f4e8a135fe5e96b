"""Lossless JSON: the same values in fewer tokens (minified; records as tables).

Tool servers pretty-print JSON and repeat every key in every record. `compact` removes
the whitespace between tokens and writes records as a table that is still valid JSON:
an object holding ``"ctxzip_table"``, whose first row names the columns and whose other
rows are the records' values in that order::

    [{"id": 1, "name": "a", "kind": "f"}, {"id": 2, "kind": "f"}, {"kind": "f", "id": 3, "name": "c"}]
    -> {"same":{"kind":"f"},"ctxzip_table":[["id","name"],[1,"a"],[2],[3,"c"]]}

- Columns: the records' keys, the most common key order first (in an object of records:
  the keys at least two members share).
  A row shorter than the header lacks its last keys; a key missing in between is written
  as the value declared by ``"absent"`` (``null``, or a string no cell of that table
  holds): ``{"absent":null,"ctxzip_table":[["a","b"],[null,2]]}`` is ``[{"b": 2}]``.
- ``"same"``: members that every row has with the same value (byte for byte), written once.
- A column of objects has the header cell ``{"user":["login","id"]}``: its cells are
  sub-rows (``["octocat",1]``); a column of arrays of objects has ``{"labels":[["name"]]}``:
  its cells are arrays of sub-rows. Their constant members go to ``"same"`` under the
  column's name (``"same":{"user":{"type":"User"}}``); a cell that does not fit (no
  object, other keys) is written as itself.
- An object whose members are records becomes a table whose first header cell is
  ``null``: each row starts with the member's name, and a member that is no record stays
  as a one-member object: ``{"ctxzip_table":[[null,"v"],["numpy","2.0"],{"count":1}]}``
  is ``{"numpy": {"v": "2.0"}, "count": 1}``.
- A record that does not fit (duplicate keys, a row longer than the object, or in an
  object of records a key no other member has) stays in place as itself, and so does an
  array's scalar item.
- Tables nest: a cell is compacted the same way.

Each rewrite is applied only where its text is shorter. Every kept token (strings with
their escapes, numbers as written) is the very substring of the input. `expand_tables`
returns a value equal to the original (objects as unordered, as JSON has them; the key
order is kept too unless records differed in key order or a member went to ``"same"``).
Text that already holds ``"ctxzip_table"`` is only minified, so a table is never ambiguous.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any

from ctxzip.compressors.content.json_records import members

TABLE = "ctxzip_table"
ABSENT = "absent"
SAME = "same"
_MARKERS: tuple[str | None, ...] = (None, "-", "~", "?", "")
_OTHER = object()
_TOKENS = re.compile(r'("(?:[^"\\]|\\.)*")|[ \t\n\r]+')


def minify(text: str) -> str:
    """`text` (valid JSON) without the whitespace between tokens; strings untouched."""
    return _TOKENS.sub(lambda m: m.group(1) or "", text)


@dataclass
class _Record:
    """A compacted value; for an object, its members' keys, spellings and compacted values."""

    text: str  # the value compacted (an object possibly as a keyed table)
    name: str | None  # the member's name as spelled, when it is an object member
    keys: tuple[str, ...] | None  # None: not an object, or one with duplicate keys
    spelled: dict[str, str]  # key -> its spelling, quotes included
    cells: dict[str, _Record]  # key -> the member's value
    items: list[_Record] | None = None  # for an array: its items


@dataclass
class _Column:
    """A table column; `sub`: the columns its cells are written in (a column of objects,
    or with `many`, of arrays of objects)."""

    key: str
    spelled: str
    sub: list[_Column] | None = None
    many: bool = False
    fit: frozenset[str] = frozenset()  # the keys an object may have to be a sub-row
    same: list[str] = field(default_factory=list)  # members every sub-row has, hoisted

    def header(self) -> str:
        if self.sub is None:
            return self.spelled
        inner = "[" + ",".join(c.header() for c in self.sub) + "]"
        return "{" + self.spelled + ":" + (f"[{inner}]" if self.many else inner) + "}"

    def hoisted(self) -> str:
        """Its sub-rows' hoisted members (and its sub-columns'), as a member of "same"."""
        parts = self.same + [h for c in self.sub or () if (h := c.hoisted())]
        return self.spelled + ":{" + ",".join(parts) + "}" if parts else ""


def _scalar(cell: str) -> Any:
    """The value of a cell when it could be taken for an absent marker (else `_OTHER`)."""
    if cell == "null":
        return None
    if cell.startswith('"'):
        return json.loads(cell)
    return _OTHER


def _taken(records: list[_Record], out: set[Any]) -> set[Any]:
    for r in records:
        out.update(_scalar(c.text) for c in [*r.cells.values(), *(r.items or ())])
        _taken([*r.cells.values(), *(r.items or ())], out)
    return out


def _marker(records: list[_Record]) -> str:
    """A marker for an absent cell that no cell of these records (at any depth) equals."""
    taken = _taken(records, set())
    for candidate in _MARKERS:
        if candidate not in taken:
            return json.dumps(candidate)
    n = 0
    while f"ctxzip_absent{n}" in taken:
        n += 1
    return json.dumps(f"ctxzip_absent{n}")


def _columns(records: list[_Record], least: int = 2) -> list[str]:
    """Keys of at least `least` records: the most common key order first, then others."""
    shapes = Counter(r.keys for r in records if r.keys)
    if not shapes:
        return []
    seen = Counter(k for r in records if r.keys for k in r.keys)
    order = dict.fromkeys(shapes.most_common(1)[0][0])
    for r in records:
        order.update(dict.fromkeys(r.keys or ()))
    return [k for k in order if seen[k] >= least]


def _hoist(fits: list[_Record], keys: list[str], spelled: dict[str, str]) -> dict[str, str]:
    """The keys with one value (byte for byte) in every record, where writing it once pays."""
    same: dict[str, str] = {}
    for k in keys:
        v = fits[0].cells[k].text if k in fits[0].cells else ""
        pays = len(fits) * (len(v) + 1) > len(spelled[k]) + len(v) + 2
        if v and pays and all(k in r.cells and r.cells[k].text == v for r in fits):
            same[k] = v
    return same


class _Writer:
    """Writes records as rows of columns, with one marker for an absent cell."""

    def __init__(self, marker: str) -> None:
        self.marker = marker
        self.used = False  # whether a row needed the marker

    def cell(self, node: _Record, col: _Column) -> str:
        if col.sub is None or (col.many and node.items is None):
            return node.text
        if col.many:
            return (
                "["
                + ",".join(self.cell(i, replace(col, many=False)) for i in node.items or ())
                + "]"
            )
        fits = node.keys is not None and set(node.keys) <= col.fit
        return self.row(node, col.sub, []) if fits else node.text

    def row(self, r: _Record, columns: list[_Column], lead: list[str]) -> str:
        cells: list[str | None] = []
        for col in columns:
            node = r.cells.get(col.key)
            cells.append(None if node is None else self.cell(node, col))
        while cells and cells[-1] is None:
            cells.pop()  # a short row lacks its last keys
        self.used = self.used or None in cells
        return "[" + ",".join([*lead, *(self.marker if c is None else c for c in cells)]) + "]"


def _sub(key: str, spelled: str, objects: list[_Record], marker: str, many: bool) -> _Column | None:
    """A column whose objects (`many`: whose arrays' objects) are written as sub-rows."""
    inner = _columns(objects, 1)
    if len(objects) < 2 or not inner:
        return None
    fits = [n for n in objects if set(n.keys or ()) <= set(inner)]
    inner = [k for k in inner if any(k in n.cells for n in fits)]
    names = {k: v for n in reversed(fits) for k, v in n.spelled.items()}
    same = _hoist(fits, inner, names)
    sub = _layout(fits, [k for k in inner if k not in same], marker)
    if not sub:
        return None  # sub-rows with no cells would read as empty arrays
    return _Column(key, spelled, sub, many, frozenset(inner),
                   [f"{names[k]}:{v}" for k, v in same.items()])  # fmt: skip


def _layout(records: list[_Record], keys: list[str], marker: str) -> list[_Column]:
    """The columns for `keys`. A column of objects, or of arrays of objects, is written as
    sub-rows where that is shorter, and only where no cell (array item) it would hold is
    written as an array, which would read as a sub-row."""
    spelled = {k: v for r in reversed(records) for k, v in r.spelled.items()}
    columns = []
    for key in keys:
        nodes = [r.cells[key] for r in records if key in r.cells]
        items = [i for n in nodes for i in n.items or ()]
        candidates: list[_Column | None] = [_Column(key, spelled[key])]
        if not any(n.text.startswith("[") for n in nodes):
            candidates.append(_sub(key, spelled[key], [n for n in nodes if n.keys], marker, False))
        if items and not any(i.text.startswith("[") for i in items):
            candidates.append(_sub(key, spelled[key], [i for i in items if i.keys], marker, True))
        write = _Writer(marker)
        columns.append(min((c for c in candidates if c is not None), key=lambda c: len(
            c.header()) + len(c.hoisted()) + sum(len(write.cell(n, c)) for n in nodes)))  # fmt: skip
    return columns


def _table(records: list[_Record], keyed: bool) -> str | None:
    """`records` as a table object, or None when there is nothing to gain."""
    # an object's members are often of unrelated shapes: columns only for shared keys
    keys = _columns(records, 2 if keyed else 1)
    if not keys:
        return None
    fits = [r for r in records if r.keys is not None and set(r.keys) <= set(keys)]
    odd = {id(r): "{" + f"{r.name}:{r.text}" + "}" if keyed else r.text for r in records}
    for _ in range(2):  # again without the records that came out longer as rows
        if len(fits) < 2:
            return None
        keys = [k for k in keys if any(k in r.cells for r in fits)]
        spelled = {k: v for r in reversed(fits) for k, v in r.spelled.items()}
        same = _hoist(fits, keys, spelled)
        marker = _marker(fits)
        columns = _layout(fits, [k for k in keys if k not in same], marker)
        if not columns:
            return None  # rows with no cells would read as empty arrays
        write = _Writer(marker)
        rows: dict[int, str] = {}
        for r in fits:
            row = write.row(r, columns, [r.name] if keyed and r.name is not None else [])
            if len(row) < len(odd[id(r)]):
                rows[id(r)] = row
        if len(rows) == len(fits):
            break
        fits = [r for r in fits if id(r) in rows]
    if len(rows) < 2:
        return None
    header = ["null"] if keyed else []
    header += [c.header() for c in columns]
    body = ["[" + ",".join(header) + "]"] + [rows.get(id(r), odd[id(r)]) for r in records]
    head = ""
    hoisted = [f"{spelled[k]}:{v}" for k, v in same.items()]
    hoisted += [h for c in columns if (h := c.hoisted())]
    if hoisted:
        head += f'"{SAME}":{{' + ",".join(hoisted) + "},"
    if write.used:
        head += f'"{ABSENT}":{marker},'
    return "{" + head + f'"{TABLE}":[' + ",".join(body) + "]}"


def _node(text: str, start: int, end: int, value: Any) -> _Record:
    """The (minified) JSON value `text[start:end]`, parsed as `value`, compacted; with its
    cells when it is an object (each value is compacted once, bottom up)."""
    if not isinstance(value, (dict, list)) or end - start <= 2:
        return _Record(text[start:end], None, None, {}, {})
    found, _ = members(text, start)
    if isinstance(value, list):
        items = [_node(text, s, e, v) for (_, _, s, e), v in zip(found, value, strict=True)]
        plain = "[" + ",".join(r.text for r in items) + "]"
        table = None
        if len(items) >= 2 and not any(isinstance(v, list) for v in value):
            table = _table(items, keyed=False)  # (an array item would be read as a row)
        out = table if table and len(table) < len(plain) else plain
        return _Record(out, None, None, {}, {}, items)
    if len(found) != len(value):  # duplicate keys: kept exactly as they were
        return _Record(text[start:end], None, None, {}, {})
    spelled: dict[str, str] = {}
    children: list[_Record] = []
    for (key, p, s, e), v in zip(found, value.values(), strict=True):
        assert key is not None
        spelled[key] = text[p : s - 1]
        children.append(replace(_node(text, s, e, v), name=spelled[key]))
    cells = dict(zip(spelled, children, strict=True))
    plain = "{" + ",".join(f"{spelled[k]}:{c.text}" for k, c in cells.items()) + "}"
    table = None
    if sum(isinstance(v, dict) for v in value.values()) >= 2:
        table = _table(children, keyed=True)
    out = table if table and len(table) < len(plain) else plain
    return _Record(out, None, tuple(spelled), spelled, cells)


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
        return _node(mini, 0, len(mini), value).text
    except (ValueError, IndexError, RecursionError):
        return mini


def _is_table(value: dict[str, Any]) -> bool:
    table = value.get(TABLE)
    return (
        isinstance(table, list)
        and bool(table)
        and isinstance(table[0], list)
        and set(value) <= {TABLE, ABSENT, SAME}
        and isinstance(value.get(SAME, {}), dict)
    )


def _rows(value: dict[str, Any]) -> list[Any] | dict[str, Any]:
    """A table object back as the array (or object) of records it was written from."""
    header, *rows = value[TABLE]
    keyed = bool(header) and header[0] is None
    has_marker = ABSENT in value
    marker = value.get(ABSENT)
    same = value.get(SAME, {})

    def record(columns: list[Any], row: list[Any], same: dict[str, Any]) -> dict[str, Any]:
        """One row; `same`: the members hoisted out of these columns' rows (for a column of
        objects, under its name: those hoisted out of its sub-rows)."""
        out = {}
        groups = {name for col in columns if isinstance(col, dict) for name in col}
        for col, cell in zip(columns, row, strict=False):
            if has_marker and type(cell) is type(marker) and cell == marker:
                continue  # absent
            if isinstance(col, dict):  # {name: [its columns]}, {name: [[its columns]]}
                ((name, sub),) = col.items()
                inner = same.get(name, {})
                if not isinstance(cell, list):
                    out[name] = expand_tables(cell)
                elif len(sub) == 1 and isinstance(sub[0], list):  # an array of objects
                    out[name] = [record(sub[0], i, inner) if isinstance(i, list)
                                 else expand_tables(i) for i in cell]  # fmt: skip
                else:
                    out[name] = record(sub, cell, inner)
            else:
                out[col] = expand_tables(cell)
        return out | {k: expand_tables(v) for k, v in same.items() if k not in groups}

    def top(row: list[Any]) -> dict[str, Any]:
        return record(header[keyed:], row[keyed:], same)

    if keyed:  # a row that is an object: members that were written as they were
        return {k: v for row in rows for k, v in ([(row[0], top(row))] if isinstance(row, list)
                else [(k, expand_tables(v)) for k, v in row.items()])}  # fmt: skip
    return [top(row) if isinstance(row, list) else expand_tables(row) for row in rows]


def expand_tables(value: Any) -> Any:
    """A compacted value back in its original form (tables to records)."""
    if isinstance(value, list):
        return [expand_tables(v) for v in value]
    if not isinstance(value, dict):
        return value
    if _is_table(value):
        return _rows(value)
    return {k: expand_tables(v) for k, v in value.items()}
