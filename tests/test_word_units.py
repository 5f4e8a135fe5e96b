"""Word-level methods keep whole whitespace words, byte for byte, in order.

Generated technical text (flags, paths, URLs, e-mails, versions, numbers with units,
snake_case / camelCase / dotted names, hashes, attached punctuation, odd spacing) and
real text (a man page, the bundled QA passages) go through every word-level method; every
word of the output must be an input word, unchanged, in the input's order.
"""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from ctxzip import Budget, CompressionRequest, get_compressor, split_whitespace_words
from ctxzip.compressors.token_classification.words import codepoints, space_mask, whitespace_words
from ctxzip.evals.datasets import bundled_path

MAN = """GZIP(1)                     General Commands Manual                    GZIP(1)

NAME
       gzip, gunzip, zcat - compress or expand files

OPTIONS
       -a --ascii
              Ascii text mode: convert end-of-lines using local conventions. This option is
              supported only on some non-Unix systems. For MSDOS, CR LF is converted to LF
              when compressing, and LF is converted to CR LF when decompressing.

       -c --stdout --to-stdout
              Write output on standard output; keep original files unchanged.  See
              /usr/share/doc/gzip/README.gz or https://www.gnu.org/software/gzip/ (v1.12).

       --rsyncable
              While compressing, synchronize the output occasionally based on the input
              (about 32KiB blocks); mail bug-gzip@gnu.org with [gzip(1) - OPTIONS] errors.
"""

_IDENTIFIERS = [
    lambda r: r.choice(["-", "--"]) + r.choice(["a", "ascii", "to-stdout", "x", "no-name"]),
    lambda r: (
        "/" + "/".join(r.choice(["usr", "etc", "lib64", "share", "gzip.conf"]) for _ in range(3))
    ),
    lambda r: f"https://{r.choice(['gnu.org', 'docs.python.org'])}/{r.choice(['a', 'x/y.html'])}",
    lambda r: f"{r.choice(['bug', 'info'])}@{r.choice(['gnu.org', 'example.com'])}",
    lambda r: f"v{r.randint(0, 9)}.{r.randint(0, 30)}.{r.randint(0, 9)}",
    lambda r: f"{r.randint(1, 999)}{r.choice(['MB/s', 'ms', 'KiB', '%', 'GHz'])}",
    lambda r: "_".join(r.choice(["max", "line", "len", "io"]) for _ in range(2)),
    lambda r: r.choice(["getElementById", "maxLineLength", "HTTPServer"]),
    lambda r: ".".join(r.choice(["os", "path", "join", "ctxzip", "units"]) for _ in range(3)),
    lambda r: f"{r.getrandbits(160):040x}",
    lambda r: r.choice(["(see", "below)", "[gzip(1)", "OPTIONS]", "end-of-lines.", "it's"]),
]
_WORDS = [
    "the",
    "a",
    "file",
    "is",
    "compressed",
    "when",
    "output",
    "of",
    "and",
    "to",
    "by",
    "this",
    "option",
    "mode",
    "text",
]


def generated(seed: int) -> str:
    r = random.Random(seed)
    parts = []
    for _ in range(r.randint(20, 80)):
        word = r.choice(_IDENTIFIERS)(r) if r.random() < 0.4 else r.choice(_WORDS)
        if r.random() < 0.15:
            word += r.choice([",", ".", ":", ";", ")"])
        parts.append(word + r.choice([" ", " ", " ", "  ", "\n", "\n\n", "\t"]))
    return "".join(parts)


def texts(generated_count: int = 24, record_count: int = 6) -> list[str]:
    lines = bundled_path("pyref").read_text().splitlines()[:record_count]
    records = [json.loads(x) for x in lines]
    return (
        [generated(s) for s in range(generated_count)]
        + [MAN]
        + [c for r in records for c in r["contexts"][:2]]
    )


def assert_words_copied(source: str, output: str) -> None:
    """Every word of `output` is a word of `source`, byte-identical, in order."""
    words = source.split()
    i = 0
    for word in output.split():
        while i < len(words) and words[i] != word:
            i += 1
        assert i < len(words), f"{word!r} is not an input word (in order) of {source[:80]!r}"
        i += 1


def test_the_check_catches_a_mangled_word():
    with pytest.raises(AssertionError):
        assert_words_copied("-a --ascii text", "a --ascii")
    with pytest.raises(AssertionError):
        assert_words_copied("one two", "two one")


def test_whitespace_units_tile_the_words():
    for text in texts():
        units = split_whitespace_words(text)
        assert " ".join(u.text for u in units).split() == text.split()
        assert all(text[u.start : u.end] == u.text for u in units)
    units = split_whitespace_words('see https://a.org/x y and {"k": 1} end')
    assert "https://a.org/x" in [u.text for u in units]


def test_token_words_are_whitespace_words():
    from ctxzip.compressors.token_classification import load_token_classifier

    lm = load_token_classifier(backend="torch")
    for text in [MAN, generated(3)]:
        enc = lm.backend.encode(text, add_special_tokens=False)
        words = whitespace_words(
            np.asarray(enc.offsets).reshape(-1, 2), space_mask(codepoints(text))
        )
        assert [text[a:b] for a, b in zip(words.start, words.end, strict=True)] == text.split()
        assert (np.diff(words.token_word) >= 0).all()


@pytest.mark.parametrize(
    "method,options",
    [
        ("token-classification", {}),
        ("token-classification", {"question_aware": False}),
        ("token-classification", {"per_chunk": True}),
        ("coarse-to-fine", {"extractive": {"threshold": None}}),
        ("self-information", {}),
        ("self-information", {"unit": "phrase"}),
    ],
)
def test_word_level_output_copies_input_words(method, options):
    comp = get_compressor(method, **options)
    # SmolLM2 scores every word: fewer texts keep the suite quick, the same kinds of text
    slow = method == "self-information"
    items = texts(4, 1) if slow else texts()
    for rate in (0.2,) if slow else (0.5, 0.2):
        results = comp.compress_batch(
            [
                CompressionRequest((t,), "What does --ascii convert?", Budget(rate=rate))
                for t in items
            ]
        )
        for text, result in zip(items, results, strict=True):
            assert result.text, "nothing kept: the test would prove nothing"
            assert_words_copied(text, result.text)
        assert any(r.tokens_out < r.tokens_in for r in results)


def test_flags_survive_whole():
    comp = get_compressor("token-classification")
    out = comp.compress(MAN, budget=Budget(rate=0.3)).text
    for word in out.split():
        assert word in MAN.split()
    assert " ascii " not in f" {out} "  # never "-a --ascii" -> "a ascii"
