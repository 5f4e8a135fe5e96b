import pydoc_data.topics

import pytest

from ctxzip import count_tokens, get_tokenizer
from ctxzip.errors import ModelNotFoundError
from ctxzip.tokens import _split_for_counting, encoding_for_model

# Token ids published for these encodings (tiktoken's own test vectors).
KNOWN = {
    "o200k_base": {"hello world": [24912, 2375], "Hello, world!": [13225, 11, 2375, 0]},
    "cl100k_base": {"hello world": [15339, 1917], "Hello, world!": [9906, 11, 1917, 0]},
}


@pytest.mark.parametrize("encoding", sorted(KNOWN))
def test_known_ids(encoding):
    tok = get_tokenizer(encoding)
    for text, ids in KNOWN[encoding].items():
        assert tok.encode(text) == ids
        assert tok.decode(ids) == text
        assert count_tokens(text, encoding) == len(ids)


@pytest.mark.parametrize(
    ("model", "encoding"),
    [
        ("gpt-4o", "o200k_base"),
        ("gpt-4o-mini-2024-07-18", "o200k_base"),
        ("gpt-4.1-nano", "o200k_base"),
        ("gpt-5", "o200k_base"),
        ("o3-mini", "o200k_base"),
        ("o1", "o200k_base"),
        ("gpt-4", "cl100k_base"),
        ("gpt-4-turbo", "cl100k_base"),
        ("gpt-3.5-turbo", "cl100k_base"),
        ("openai/gpt-4o", "o200k_base"),
    ],
)
def test_model_to_encoding(model, encoding):
    assert encoding_for_model(model) == encoding
    assert get_tokenizer(model).encode("hello world") == KNOWN[encoding]["hello world"]


def test_special_token_text_is_content():
    # "<|endoftext|>" typed by a user is text, not a control token, and must not raise
    assert count_tokens("a <|endoftext|> b", "gpt-4o") > 3


@pytest.mark.parametrize("model", ["gpt-4o", "gpt-4"])
def test_parallel_count_is_exact(model):
    text = " ".join(pydoc_data.topics.topics.values())[:300_000]
    tok = get_tokenizer(model)
    assert tok.count(text) == len(tok._enc.encode_ordinary(text))
    pieces = _split_for_counting(text, 4)
    assert "".join(pieces) == text and len(pieces) == 4


AWKWARD = [
    "",
    " ",
    "   \n  \n\n\t x",
    "naïve façade straße 中文 日本語 한국어",
    "😀👍🏽 emoji\u200bjoined",
    "it's THEY'RE we'll 12345678901 3.14159",
    "<|endoftext|> <|fim_prefix|> <|im_start|>",
    "a" * 3000,
    " " * 500 + "x",
    "\r\n".join(["line"] * 50),
]


@pytest.mark.parametrize("encoding", sorted(KNOWN))
def test_native_count_matches_tiktoken(encoding):
    # the fast counter must give tiktoken's number on text that stresses the pre-tokeniser
    tok = get_tokenizer(encoding)
    assert tok._counter is not None
    for text in AWKWARD:
        assert tok.count(text) == len(tok._enc.encode_ordinary(text)), text[:40]


def test_hf_tokenizer_counts():
    tok = get_tokenizer("sentence-transformers/all-MiniLM-L6-v2")
    ids = tok.encode("hello world")
    assert ids == [7592, 2088]  # bert-base-uncased WordPiece ids, no [CLS]/[SEP]
    assert count_tokens("hello world", "sentence-transformers/all-MiniLM-L6-v2") == 2


def test_unknown_tokenizer_is_a_clear_error():
    with pytest.raises(ModelNotFoundError, match="no-such-org/no-such-model"):
        get_tokenizer("no-such-org/no-such-model")
