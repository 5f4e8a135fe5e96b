"""Lossless JSON compaction (the MCP wrapper's first stage): property-tested on generated
values and checked on real outputs (package metadata)."""

from __future__ import annotations

import importlib.metadata as md
import json

from hypothesis import given, settings
from hypothesis import strategies as st

from ctxzip.compressors.content.json_compact import TABLE, compact, expand_tables, minify
from ctxzip.tokens import count_tokens

scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12),
                    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=12))  # fmt: skip
keys = st.sampled_from(["id", "name", "path", "size", "a b", 'q"x', "ü"])
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=6), st.dictionaries(keys, inner, max_size=5)),
    max_leaves=30,
)
record = st.fixed_dictionaries({"id": st.integers(0, 10**9), "name": st.text(max_size=8),
                                "tags": st.lists(st.text(max_size=4), max_size=3)})  # fmt: skip
documents = st.one_of(
    values,
    st.lists(record, min_size=3, max_size=20),
    st.dictionaries(keys, st.lists(st.one_of(record, values), max_size=12), max_size=3),
)


def _same(a: object, b: object) -> bool:
    """Equal value for value and key for key, order included (1 is not 1.0 here)."""
    return json.dumps(a) == json.dumps(b)


@settings(max_examples=300, deadline=None)
@given(documents, st.sampled_from([None, 2, 4]))
def test_every_value_comes_back(value, indent):
    text = json.dumps(value, indent=indent, ensure_ascii=indent == 4)
    out = compact(text)
    assert out is not None
    assert _same(expand_tables(json.loads(out)), json.loads(text))
    assert len(out) <= len(text) or TABLE not in out


def test_numbers_and_escapes_keep_their_spelling():
    text = '[\n  {"id": 1.50, "v": 1e5, "s": "a\\u0041\\n"},\n  {"id": 2.0, "v": 2E-3, "s": "b"},\n' \
           '  {"id": 3, "v": -0.0, "s": "c"}\n]'  # fmt: skip
    out = compact(text)
    assert (
        out
        == '{"ctxzip_table":[["id","v","s"],[1.50,1e5,"a\\u0041\\n"],[2.0,2E-3,"b"],[3,-0.0,"c"]]}'
    )
    assert minify('{ "a" : [ 1 , "x y" ] }') == '{"a":[1,"x y"]}'


def test_odd_records_stay_objects_and_marker_text_is_never_tabled():
    rows = [{"a": i, "b": i} for i in range(4)] + [{"other": True}]
    out = compact(json.dumps(rows))
    assert out.endswith('{"other":true}]}') and _same(expand_tables(json.loads(out)), rows)
    tricky = json.dumps([{"ctxzip_table": 1}] * 4)
    assert compact(tricky) == minify(tricky)
    assert compact("not json") is None


def test_real_package_metadata_loses_no_value_and_40_percent_of_tokens():
    rows = []
    for dist in list(md.distributions())[:150]:
        meta = dist.metadata
        rows.append({"name": meta["Name"], "version": dist.version,
                     "summary": meta["Summary"] or "", "requires": len(dist.requires or [])})  # fmt: skip
    text = json.dumps({"packages": rows, "count": len(rows)}, indent=2)
    out = compact(text)
    assert _same(expand_tables(json.loads(out)), json.loads(text))
    assert count_tokens(out) <= 0.6 * count_tokens(text)
