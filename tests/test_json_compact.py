"""Lossless JSON compaction (the MCP wrapper's first stage): property-tested on generated
values (records with optional keys, keys in other orders, constant columns, objects of
records, cells that look like absent markers) and checked on real outputs."""

from __future__ import annotations

import importlib.metadata as md
import json
import re
import sys
from pathlib import Path

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
# cells that could be taken for an absent marker, and numbers of every type
cell = st.one_of(st.sampled_from([None, "-", "~", "?", "", "ctxzip_absent0", 0, False, 0.0]),
                 scalars, st.lists(scalars, max_size=2))  # fmt: skip
sparse = st.dictionaries(st.sampled_from(["id", "name", "kind", "size", "ü"]), cell, max_size=5)
constant = st.fixed_dictionaries({"kind": st.just("PersistentVolumeClaim"), "id": st.integers(0, 9)},
                                 optional={"ns": st.just("kube-system"), "x": cell})  # fmt: skip
records = st.lists(st.one_of(record, sparse, constant), min_size=2, max_size=12)
user = st.fixed_dictionaries({"login": st.text(max_size=5), "id": st.integers(0, 10**6)},
                             optional={"site_admin": st.booleans(), "type": cell,
                                       "plan": st.one_of(sparse, constant, cell)})  # fmt: skip
label = st.fixed_dictionaries({"name": st.text(max_size=4), "color": st.just("d73a4a")},
                              optional={"id": st.integers(0, 10**9), "x": cell})  # fmt: skip
nested = st.fixed_dictionaries(  # object columns, at two levels, with odd cells among them
    {"id": st.integers(0, 99), "user": st.one_of(user, user, user, sparse, cell)},
    optional={"meta": st.one_of(sparse, st.dictionaries(keys, sparse, max_size=3), cell),
              "labels": st.one_of(*[st.lists(label, max_size=4)] * 3,
                                  st.lists(st.one_of(user, user, sparse, scalars), max_size=4),
                                  st.lists(st.lists(scalars, max_size=2), max_size=2), cell)},
)  # fmt: skip
documents = st.one_of(
    values,
    st.lists(record, min_size=3, max_size=20),
    records,
    st.lists(nested, min_size=2, max_size=10),
    st.dictionaries(st.text(max_size=4), nested, max_size=6),
    st.lists(st.one_of(sparse, constant, scalars), max_size=8),
    st.dictionaries(st.text(max_size=6), st.one_of(sparse, constant, constant, cell), max_size=8),
    st.dictionaries(keys, st.one_of(records, st.lists(st.one_of(record, values), max_size=12),
                                    st.dictionaries(keys, sparse)), max_size=3),
)  # fmt: skip


SPELLED = re.compile(r'"(?:[^"\\]|\\.)*"|-?\d[\d.eE+-]*')
OURS = {'"ctxzip_table"', '"same"', '"absent"', '"-"', '"~"', '"?"', '""', '"ctxzip_absent0"'}


def _same(a: object, b: object) -> bool:
    """Equal value for value (1, 1.0 and true apart); objects unordered, as in JSON."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


@settings(max_examples=500, deadline=None)
@given(documents, st.sampled_from([None, 2, 4]))
def test_every_value_comes_back(value, indent):
    text = json.dumps(value, indent=indent, ensure_ascii=indent == 4)
    out = compact(text)
    assert out is not None
    assert _same(expand_tables(json.loads(out)), json.loads(text))
    assert len(out) <= len(minify(text))
    # every string and number is spelled as in the input (only the format's own are new)
    mini = minify(text)
    assert all(t in mini or t in OURS for t in SPELLED.findall(out))


@settings(max_examples=200, deadline=None)
@given(st.lists(nested, min_size=4, max_size=12))
def test_object_columns_come_back(rows):
    out = compact(json.dumps(rows, indent=2))
    assert out is not None and _same(expand_tables(json.loads(out)), rows)


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


def test_optional_keys_constant_columns_and_objects_of_records():
    rows = [{"id": 1, "name": "a", "kind": "f"}, {"id": 2, "kind": "f"},
            {"kind": "f", "id": 3, "name": "c"}, {"id": 4, "kind": "f", "name": None}]  # fmt: skip
    out = compact(json.dumps(rows, indent=2))
    assert (
        out == '{"same":{"kind":"f"},"ctxzip_table":[["id","name"],[1,"a"],[2],[3,"c"],[4,null]]}'
    )
    assert _same(expand_tables(json.loads(out)), rows)
    gap = [{"alpha": None, "beta": 1, "gamma": 2}, {"beta": 2, "gamma": 3},
           {"alpha": 3, "beta": 4, "gamma": 5}]  # fmt: skip
    out = compact(json.dumps(gap))
    assert out == ('{"absent":"-","ctxzip_table":[["alpha","beta","gamma"],[null,1,2],["-",2,3],'
                   '[3,4,5]]}')  # fmt: skip
    assert _same(expand_tables(json.loads(out)), gap)
    pkgs = {"numpy": {"version": "2.0", "license": "BSD"}, "scipy": {"version": "1.14"},
            "torch": {"version": "2.6", "license": "BSD-3"}}  # fmt: skip
    out = compact(json.dumps(pkgs, indent=2))
    assert out == ('{"ctxzip_table":[[null,"version","license"],["numpy","2.0","BSD"],'
                   '["scipy","1.14"],["torch","2.6","BSD-3"]]}')  # fmt: skip
    assert json.dumps(expand_tables(json.loads(out))) == json.dumps(pkgs)  # order kept too
    pkgs = {"numpy": pkgs["numpy"], "count": 3, **pkgs}
    out = compact(json.dumps(pkgs, indent=2))
    assert out == ('{"ctxzip_table":[[null,"version","license"],["numpy","2.0","BSD"],'
                   '{"count":3},["scipy","1.14"],["torch","2.6","BSD-3"]]}')  # fmt: skip
    assert json.dumps(expand_tables(json.loads(out))) == json.dumps(pkgs)


def test_duplicate_keys_and_nested_tables():
    text = '[{"a": 1, "a": 2, "b": 0}, {"a": 3, "b": 1}, {"a": 4, "b": 2}, {"a": 5, "b": 3}]'
    out = compact(text)
    assert '{"a":1,"a":2,"b":0}' in out and _same(expand_tables(json.loads(out)), json.loads(text))
    tree = [{"name": n, "children": [{"key": f"{n}{i}", "value": i} for i in range(3)]}
            for n in "xyz"]  # fmt: skip
    out = compact(json.dumps(tree, indent=2))
    assert out.count(TABLE) == 1 and '{"children":[["key","value"]]}' in out  # one header
    assert _same(expand_tables(json.loads(out)), tree)
    nested = {"a": tree[0]["children"], "b": {"c": tree[1]["children"]}}
    out = compact(json.dumps(nested, indent=2))
    assert out.count(TABLE) == 2 and _same(expand_tables(json.loads(out)), nested)


def test_real_json_tool_outputs_round_trip():
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    from json_corpus import broad_json

    for _source, text in broad_json():
        out = compact(text)
        assert out is not None and len(out) <= len(minify(text))
        assert _same(expand_tables(json.loads(out)), json.loads(text))


def test_object_columns_and_columns_of_records_become_sub_rows():
    issues = [{"number": n, "user": {"login": f"u{n}", "id": n * 7, "type": "User"},
               "labels": [], "state": "open" if n % 2 else "closed"} for n in range(1, 5)]  # fmt: skip
    issues[2]["user"] = None  # a cell that is no object stays itself
    out = compact(json.dumps(issues, indent=2))
    assert out == (
        '{"same":{"user":{"type":"User"}},"ctxzip_table":[["number",{"user":["login","id"]},'
        '"labels","state"],[1,["u1",7],[],"open"],[2,["u2",14],[],"closed"],[3,null,[],"open"],'
        '[4,["u4",28],[],"closed"]]}'
    )
    assert _same(expand_tables(json.loads(out)), issues)
    addrs = [{"ifname": f"eth{n}", "addr_info": [{"family": "inet", "local": f"10.0.0.{n}",
              "prefixlen": 24}, {"family": "inet6", "local": f"fe80::{n}"}]} for n in range(3)]  # fmt: skip
    out = compact(json.dumps(addrs, indent=2))
    assert out == (
        '{"ctxzip_table":[["ifname",{"addr_info":[["family","local","prefixlen"]]}],'
        '["eth0",[["inet","10.0.0.0",24],["inet6","fe80::0"]]],'
        '["eth1",[["inet","10.0.0.1",24],["inet6","fe80::1"]]],'
        '["eth2",[["inet","10.0.0.2",24],["inet6","fe80::2"]]]]}'
    )
    assert json.dumps(expand_tables(json.loads(out))) == json.dumps(addrs)


def test_constants_of_object_columns_are_hoisted_under_their_column():
    pods = [{"name": f"web-{n}", "spec": {"node": f"n{n % 2}", "restartPolicy": "Always",
             "dnsPolicy": "ClusterFirst"}} for n in range(4)]  # fmt: skip
    out = compact(json.dumps(pods, indent=2))
    assert out == (
        '{"same":{"spec":{"restartPolicy":"Always","dnsPolicy":"ClusterFirst"}},'
        '"ctxzip_table":[["name",{"spec":["node"]}],["web-0",["n0"]],["web-1",["n1"]],'
        '["web-2",["n0"]],["web-3",["n1"]]]}'
    )
    assert _same(expand_tables(json.loads(out)), pods)
