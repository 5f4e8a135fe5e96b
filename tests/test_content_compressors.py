"""The content compressors' invariants, property-tested on generated and on real inputs.

- every kept line is byte-identical to an input line, in input order, prefix included;
  markers stand for the omitted runs and their keys give back exactly what was left out;
- JSON stays valid JSON of the same top-level type, kept records are byte-identical, and
  an in-band note says how many records were left out and where;
- error/warning lines and odd-shaped records are always kept;
- what the router cannot parse passes through unchanged.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ctxzip import Budget
from ctxzip.compressors.content import ContentCompressor
from ctxzip.compressors.content.base import MARKER, is_alert
from ctxzip.compressors.content.json_records import NOTE
from ctxzip.compressors.content.logs import odd_lines
from ctxzip.compressors.content.router import detect, route

STDLIB = Path(sysconfig.get_paths()["stdlib"])
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def expand(text: str, originals: dict[str, str]) -> str:
    """Put every omitted stretch back in place of its marker line."""

    def back(m: re.Match[str]) -> str:
        return originals[m.group(3)]

    return re.sub(MARKER.pattern + r"\n?", back, text)


def check_lines(original: str, out_text: str, originals: dict[str, str]) -> None:
    lines = original.splitlines(keepends=True)
    pos = 0
    for line in out_text.splitlines(keepends=True):
        if MARKER.fullmatch(line.rstrip("\n")):
            continue
        # the same bytes as an input line, at or after the previous kept line
        pos = lines.index(line, pos) + 1
    assert expand(out_text, originals) == original


# ---- generated inputs ------------------------------------------------------------------

words = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_-./", min_size=1, max_size=12)
level = st.sampled_from(["INFO", "DEBUG", "INFO", "INFO", "WARNING", "ERROR"])


@st.composite
def log_text(draw: st.DrawFn) -> str:
    n = draw(st.integers(8, 120))
    lines = []
    for i in range(n):
        body = " ".join(draw(st.lists(words, min_size=1, max_size=8)))
        if draw(st.integers(0, 19)) == 0:  # an odd-shaped line: a stack-trace continuation
            lines.append(f"    at {body} (main.js:{i})")
            continue
        lines.append(f"2026-01-01 10:00:{i % 60:02d} {draw(level)} {body}")
    end = draw(st.sampled_from(["\n", "", "\r\n"]))
    return (end or "\n").join(lines) + end


@st.composite
def grep_text(draw: st.DrawFn) -> str:
    n = draw(st.integers(8, 120))
    paths = draw(st.lists(words, min_size=1, max_size=6))
    return "".join(
        f"{draw(st.sampled_from(paths))}.py:{draw(st.integers(1, 9999))}:"
        f"{' '.join(draw(st.lists(words, min_size=1, max_size=6)))}\n"
        for _ in range(n)
    )


@st.composite
def csv_text(draw: st.DrawFn) -> str:
    cols = draw(st.integers(3, 6))
    rows = [",".join(f"col{i}" for i in range(cols))]
    for _ in range(draw(st.integers(6, 80))):
        rows.append(",".join(draw(words) for _ in range(cols)))
    return "\n".join(rows) + "\n"


json_scalar = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**12), 10**12),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20),
)  # fmt: skip
record = st.dictionaries(st.sampled_from(["id", "name", "status", "size", "path"]), json_scalar,
                         min_size=1, max_size=5)  # fmt: skip


@st.composite
def json_text(draw: st.DrawFn) -> str:
    value: object = draw(st.lists(st.one_of(record, record, record, json_scalar), max_size=80))
    if draw(st.booleans()):
        value = {"total": 3, "items": value, "next": None}
    indent = draw(st.sampled_from([None, 2]))
    return json.dumps(value, indent=indent, ensure_ascii=draw(st.booleans()))


queries = st.one_of(st.none(), st.text(alphabet="abcdefghij0123456789 ", max_size=30))
rates = st.sampled_from([0.1, 0.3, 0.5])


@FAST
@given(text=st.one_of(log_text(), grep_text(), csv_text()), query=queries, rate=rates)
def test_line_results_keep_lines_byte_identical_and_in_order(text, query, rate):
    out = route(text, query, rate)
    check_lines(text, out.text, out.originals)
    assert len(out.text) <= len(text)
    if out.content_type == "logs":
        lines = text.splitlines(keepends=True)
        kept = out.text.splitlines(keepends=True)
        alerts = [x for x in lines if is_alert(x)]
        odd = [lines[i] for i in odd_lines(lines)]  # a shape unlike the dominant one
        assert all(x in kept for x in alerts + odd)


@FAST
@given(text=json_text(), query=queries, rate=rates)
def test_json_stays_valid_same_type_and_kept_records_unchanged(text, query, rate):
    out = route(text, query, rate)
    value, new = json.loads(text), json.loads(out.text)
    assert type(new) is type(value)
    if not out.changed:
        assert out.text == text
        return
    items = new["items"] if isinstance(new, dict) else new
    original = value["items"] if isinstance(value, dict) else value
    note = items[-1][NOTE]
    kept = items[:-1]
    assert len(kept) + note["count"] == note["of"] == len(original)
    assert out.omitted == note["count"]
    omitted = json.loads(out.originals[note["key"]])
    assert len(omitted) == note["count"]
    # kept records: the same values, in order, and byte-identical substrings of the input
    indices = [i for i in range(len(original)) if str(i) not in _expand(note["indices"])]
    assert [json.dumps(x) for x in kept] == [json.dumps(original[i]) for i in indices]
    shapes = [frozenset(r) if isinstance(r, dict) else type(r) for r in original]
    top = max(set(shapes), key=shapes.count)
    if shapes.count(top) >= 0.6 * len(shapes):
        odd = [original[i] for i, s in enumerate(shapes) if s != top]
        assert all(r in kept for r in odd)


def _expand(ranges: str) -> set[str]:
    out: set[str] = set()
    for part in ranges.split(","):
        a, _, b = part.partition("-")
        out.update(str(i) for i in range(int(a), int(b or a) + 1))
    return out


def test_json_kept_records_are_byte_identical_numbers_included():
    rows = [f'{{"id": {i}, "score": 1.50, "big": 1E+5, "sha": "{i:040x}"}}' for i in range(50)]
    rows[30] = '{"id": 30, "status": "error", "score": 1.50}'
    text = "[\n  " + ",\n  ".join(rows) + "\n]"
    out = route(text, "what is the score of id 42", 0.3)
    assert json.loads(out.text)[-1][NOTE]["count"] > 0
    for row in json.loads(out.text)[:-1]:
        assert f'"id": {row["id"]},' in text
    kept = [r for r in rows if r in out.text]
    assert rows[30] in kept and rows[0] in kept and rows[-1] in kept  # alert, head, tail
    assert '"score": 1.50, "big": 1E+5' in out.text  # numbers exactly as the tool wrote them


@pytest.mark.parametrize("text", [
    '{"items": [' + ", ".join(f'{{"id": {i}}}' for i in range(300)),  # cut off
    "[{" + "x" * 5000,
])  # fmt: skip
def test_unparseable_json_passes_through(text):
    out = route(text, "id 5", 0.3)
    assert out.text == text and out.reason == "unparseable" and not out.changed


def test_router_picks_by_content():
    assert detect(json.dumps([{"a": 1}] * 3))[0] == "json"
    assert detect("diff --git a/x b/x\n--- a/x\n+++ b/x\n@@ -1 +1 @@\n-a\n+b\n")[0] == "diff"
    assert detect("a.py:1:x\nb.py:2:y\nc.py:3:z\n")[0] == "search"
    assert detect("| a | b |\n|---|---|\n| 1 | 2 |\n| 3 | 4 |\n")[0] == "table"
    code = "import os\n\ndef f(x):\n    return x\n\nclass A:\n    pass\n"
    assert detect(code)[0] == "code"
    assert detect("This is prose. It has sentences.\nAnd more of them here.\n")[0] == "prose"
    assert detect("\n".join(f"ls{i} (1) - list things" for i in range(10)))[0] == "logs"


def test_content_compressor_is_registered_and_deterministic():
    from ctxzip.registry import get_compressor

    c = get_compressor("content", prose_method="truncate")
    assert isinstance(c, ContentCompressor) and c.kind == "text"
    text = "\n".join(f"2026-01-01 INFO step {i} done" for i in range(300))
    a = c.compress(text, query="step 123", budget=Budget(rate=0.2))
    b = c.compress(text, query="step 123", budget=Budget(rate=0.2))
    assert a.texts == b.texts and a.tokens_out < a.tokens_in * 0.4
    assert "2026-01-01 INFO step 123 done" in a.texts[0]
    info = a.extra["contexts"][0]
    assert info["content_type"] == "logs" and info["omitted"] > 0 and info["originals"]


# ---- real inputs -------------------------------------------------------------------------


def _run(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""


def real_inputs() -> list[tuple[str, str]]:
    out = [
        ("json", _run([sys.executable, "-m", "pip", "list", "--format", "json"])),
        ("search", "".join(_run(["grep", "-rn", "return None", str(STDLIB / "json"),
                                 str(STDLIB / "email")]).splitlines(keepends=True)[:400])),
        ("code", (STDLIB / "textwrap.py").read_text()),
        ("diff", _run(["git", "-C", str(Path(__file__).parent), "log", "-p", "-n", "3"])),
    ]  # fmt: skip
    return [(kind, text) for kind, text in out if text.count("\n") > 20]


@pytest.mark.parametrize("kind,text", real_inputs())
def test_real_inputs(kind, text):
    out = route(text, "return value of the function", 0.3)
    assert out.content_type == kind
    if kind == "json":
        assert isinstance(json.loads(out.text), type(json.loads(text)))
    else:
        check_lines(text, out.text, out.originals)
    assert len(out.text) < len(text)
    tokens = set(re.findall(r"\S+", MARKER.sub("", out.text)))
    assert tokens <= set(re.findall(r"\S+", text))  # nothing split, merged or altered


@FAST
@given(
    value=st.dictionaries(st.text(min_size=1, max_size=10), st.one_of(record, json_scalar),
                          min_size=8, max_size=40),
    query=queries,
    rate=rates,
)  # fmt: skip
def test_long_objects_keep_members_verbatim_and_note_the_rest(value, query, rate):
    text = json.dumps(value, indent=1)
    out = route(text, query, rate)
    new = json.loads(out.text)
    assert isinstance(new, dict)
    if not out.changed:
        assert out.text == text
        return
    note = new.pop(NOTE)
    assert len(new) + note["count"] == note["of"] == len(value)
    assert all(value[k] == v for k, v in new.items())  # kept members unchanged
    assert list(new) == [k for k in value if k in new]  # in their order
    omitted = json.loads(out.originals[note["key"]])
    assert set(omitted) | set(new) == set(value) and not set(omitted) & set(new)
