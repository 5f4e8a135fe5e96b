import itertools

import pytest

from ctxzip import Protect, split_sentences, split_words
from ctxzip.spans import join_spans, merge_spans, overlapping
from ctxzip.units import reconstruct

CODE = "Install it first.\n\n```python\ndef f(x):\n    return x.y  # Not. A. Sentence.\n```\nThen run it. Done."
JSON = 'The config is {"name": "ctxzip", "rates": [0.5, 0.3], "note": "a. B"} here. Next one.\n{"k": "v. W", "n": 1}\nEnd.'
CJK = "東京は日本の首都です。人口は約1400万人！大阪はどうですか？はい、そうです。"
MARKDOWN = "# Title\n\nIntro line. Second.\n\n| col a | col b |\n|---|---|\n| 1. x | 2. y |\n\n- item one. more\n- item two\n"
PROSE = "Dr. Smith paid $1,200.50 for 3.5GHz chips at 3 p.m. today. See https://example.com/a.b?x=1. Write to a.b@c.org! It ran 5 km in 20 min. Café crème, naïve résumé."
SAMPLES = {"code": CODE, "json": JSON, "cjk": CJK, "markdown": MARKDOWN, "prose": PROSE}


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_round_trip(name):
    text = SAMPLES[name]
    for units in (split_sentences(text), split_words(text)):
        assert reconstruct(text, units) == text
        for u in units:
            assert text[u.start : u.end] == u.text
        assert all(a.end <= b.start for a, b in itertools.pairwise(units))


def test_code_fence_is_one_block():
    sentences = [u.text for u in split_sentences(CODE)]
    assert sentences[0] == "Install it first."
    assert sentences[1].startswith("```python") and sentences[1].endswith("```")
    assert sentences[2:] == ["Then run it.", "Done."]
    assert any(u.kind == "block" and u.text.startswith("```") for u in split_words(CODE))


def test_json_intact():
    sentences = [u.text for u in split_sentences(JSON)]
    assert sentences[0].startswith("The config is {") and sentences[0].endswith("here.")
    assert '{"k": "v. W", "n": 1}' in sentences
    words = [u.text for u in split_words(JSON)]
    assert '{"name": "ctxzip", "rates": [0.5, 0.3], "note": "a. B"}' in words


def test_cjk_sentences_and_words():
    assert [u.text for u in split_sentences(CJK)] == [
        "東京は日本の首都です。",
        "人口は約1400万人！",
        "大阪はどうですか？",
        "はい、そうです。",
    ]
    words = [u.text for u in split_words(CJK)]
    assert words[:3] == ["東", "京", "は"]
    assert "1400万人" in words or "1400" in words


def test_markdown_table_and_list():
    sentences = [u.text for u in split_sentences(MARKDOWN)]
    assert "| col a | col b |\n|---|---|\n| 1. x | 2. y |" in sentences
    assert "- item one. more" in sentences and "- item two" in sentences


def test_prose_atoms():
    sentences = [u.text for u in split_sentences(PROSE)]
    assert sentences[0] == "Dr. Smith paid $1,200.50 for 3.5GHz chips at 3 p.m. today."
    assert "See https://example.com/a.b?x=1." in sentences
    words = [u.text for u in split_words(PROSE)]
    for atom in [
        "$1,200.50",
        "3.5GHz",
        "https://example.com/a.b?x=1",
        "a.b@c.org",
        "5 km",
        "20 min",
        "crème",
        "naïve",
        "résumé",
    ]:
        assert atom in words, atom


def test_protected_spans():
    text = "Keep <keep>this. And this.</keep> Not this. Order #A-17 matters. Token XYZ stays."
    protect = Protect(tags=("keep",), patterns=(r"#[A-Z]-\d+",), force=("XYZ",))
    spans = protect.spans(text)
    assert [text[s:e] for s, e in spans] == ["<keep>this. And this.</keep>", "#A-17", "XYZ"]
    words = split_words(text, protect)
    assert [u.text for u in words if u.protected] == [
        "<keep>this. And this.</keep>",
        "#A-17",
        "XYZ",
    ]
    sentences = split_sentences(text, protect)
    assert (
        sentences[0].text == "Keep <keep>this. And this.</keep> Not this."
        and sentences[0].protected
    )
    assert Protect(structure=True).spans("go to https://x.org now")[0] == (6, 19)


def test_join_spans_reads_naturally():
    text = "Paris is nice. Berlin is big.\nRome is old."
    assert join_spans(text, [(0, 5), (13, 14)]) == "Paris."
    assert join_spans(text, [(0, 5), (9, 13)]) == "Paris nice"
    assert join_spans(text, [(0, 14), (30, 42)]) == "Paris is nice.\nRome is old."
    assert merge_spans([(5, 9), (0, 3), (2, 4), (9, 9)]) == [(0, 4), (5, 9)]


def test_overlapping_ranges():
    # words "ab" [0,2) "cd" [3,5) "ef" [6,8); spans unsorted, touching, and one empty
    starts, ends = [0, 3, 6], [2, 5, 8]
    assert overlapping(starts, ends, [(4, 5), (1, 1)]).tolist() == [False, True, False]
    assert overlapping(starts, ends, [(7, 9), (0, 1)]).tolist() == [True, False, True]
    assert overlapping(starts, ends, [(2, 3)]).tolist() == [False, False, False]  # the gap only
    assert overlapping(starts, ends, []).tolist() == [False, False, False]
