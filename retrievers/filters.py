"""Metadata filters: one small language, evaluated in SQLite, in Python or by Qdrant.

A filter is a mapping ``{key: condition}``; every key must match (AND). A condition is
a scalar (equality), a list (any of), or a dict of operators ``$eq $ne $in $nin $gt
$gte $lt $lte``. Keys may be dotted (``"a.b"``) to reach nested metadata. A document
without the key never matches, whatever the operator, in every backend.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ctxzip.errors import InputError

OPERATORS = ("$eq", "$ne", "$in", "$nin", "$gt", "$gte", "$lt", "$lte")
_KEY = re.compile(r"^[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*$")
Scalar = str | int | float | bool


@dataclass(frozen=True)
class Condition:
    key: str
    op: str
    value: Any  # a scalar, or a tuple of scalars for $in / $nin


def parse_filter(filter: Mapping[str, Any] | None) -> list[Condition]:
    """Validate a filter and flatten it into conditions (an empty list matches everything)."""
    if filter is None:
        return []
    if not isinstance(filter, Mapping):
        raise InputError(f"filter must be a dict, got {type(filter).__name__}")
    conditions: list[Condition] = []
    for key, spec in filter.items():
        if not isinstance(key, str) or not _KEY.match(key):
            raise InputError(f"filter key {key!r} must be letters, digits, _ or - (dots nest)")
        if isinstance(spec, Mapping):
            if not spec:
                raise InputError(f"filter on {key!r} has no operator")
            for op, value in spec.items():
                conditions.append(_condition(key, op, value))
        elif isinstance(spec, (list, tuple)):
            conditions.append(_condition(key, "$in", spec))
        else:
            conditions.append(_condition(key, "$eq", spec))
    return conditions


def _condition(key: str, op: str, value: Any) -> Condition:
    if op not in OPERATORS:
        raise InputError(f"unknown filter operator {op!r} on {key!r}; use one of {OPERATORS}")
    if op in ("$in", "$nin"):
        if not isinstance(value, (list, tuple)) or not all(_is_scalar(v) for v in value):
            raise InputError(f"{op} on {key!r} needs a list of strings, numbers or booleans")
        return Condition(key, op, tuple(value))
    if not _is_scalar(value):
        raise InputError(f"{op} on {key!r} needs a string, number or boolean")
    if op in ("$gt", "$gte", "$lt", "$lte") and isinstance(value, bool):
        raise InputError(f"{op} on {key!r} needs a number or string, not a boolean")
    return Condition(key, op, value)


def _is_scalar(value: Any) -> bool:
    return isinstance(value, (str, int, float, bool))


_MISSING = object()


def _lookup(metadata: Mapping[str, Any], key: str) -> Any:
    value: Any = metadata
    for part in key.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return _MISSING
        value = value[part]
    return value


def matches(metadata: Mapping[str, Any], conditions: list[Condition]) -> bool:
    """Whether `metadata` meets every condition (Python reference semantics)."""
    for c in conditions:
        value = _lookup(metadata, c.key)
        if value is _MISSING or value is None:
            return False
        try:
            ok = {
                "$eq": lambda v, c=c: v == c.value,
                "$ne": lambda v, c=c: v != c.value,
                "$in": lambda v, c=c: v in c.value,
                "$nin": lambda v, c=c: v not in c.value,
                "$gt": lambda v, c=c: v > c.value,
                "$gte": lambda v, c=c: v >= c.value,
                "$lt": lambda v, c=c: v < c.value,
                "$lte": lambda v, c=c: v <= c.value,
            }[c.op](value)
        except TypeError:  # comparing a string with a number: no match
            ok = False
        if not ok:
            return False
    return True


def to_sql(conditions: list[Condition], column: str = "metadata") -> tuple[str, list[Any]]:
    """A parameterised SQLite WHERE clause over a JSON column ("1" when there is none)."""
    clauses: list[str] = []
    params: list[Any] = []
    sql_ops = {"$eq": "=", "$ne": "!=", "$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}
    for c in conditions:
        path = "$." + ".".join(f'"{p}"' for p in c.key.split("."))
        value_sql = f"json_extract({column}, ?)"
        present = f"json_type({column}, ?) NOT IN ('null')"
        if c.op in sql_ops:
            clauses.append(f"({present} AND {value_sql} {sql_ops[c.op]} ?)")
            params += [path, path, c.value]
        else:
            if not c.value:
                clauses.append(f"({present})" if c.op == "$nin" else "0")
                params += [path] if c.op == "$nin" else []
                continue
            marks = ",".join("?" * len(c.value))
            neg = "NOT " if c.op == "$nin" else ""
            clauses.append(f"({present} AND {value_sql} {neg}IN ({marks}))")
            params += [path, path, *c.value]
    return (" AND ".join(clauses) or "1"), params
