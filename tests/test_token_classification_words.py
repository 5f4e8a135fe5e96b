"""Whitespace words over real tokenizers' sub-tokens: WordPiece, byte-level BPE, SentencePiece."""

from __future__ import annotations

import numpy as np
import pytest

from ctxzip.compressors.token_classification.words import (
    codepoints,
    detect_scheme,
    repeated_separators,
    space_mask,
    whitespace_words,
    word_scores,
)
from ctxzip.models import MINILM, SMOLLM, load_tokenizer

TEXT = (
    "The U.S. economy grew 3.5% in 2023, said Dr. Smith.\n\n"
    "Café naïve — 東京は日本の首都です。 Ελληνικά κείμενα μένουν. Don't [SEP] <s> stop ----- now!  "
)


def _words(tokenizer, text: str):
    from tokenizers import Tokenizer

    backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    backend.no_padding()
    backend.no_truncation()
    backend.encode_special_tokens = True
    enc = backend.encode(text, add_special_tokens=False)
    cps = codepoints(text)
    ids = np.asarray(enc.ids, dtype=np.int64)
    words = whitespace_words(np.asarray(enc.offsets).reshape(-1, 2), space_mask(cps))
    return ids, words, [text[s:e] for s, e in zip(words.start, words.end, strict=True)]


def _check_tiling(text: str, words) -> None:
    """Words are non-empty, ordered, non-overlapping, trimmed, and cover every non-space char."""
    assert (words.end > words.start).all()
    assert (words.start[1:] >= words.end[:-1]).all()
    covered = np.zeros(len(text), dtype=bool)
    for s, e in zip(words.start, words.end, strict=True):
        assert not text[s].isspace() and not text[e - 1].isspace()
        covered[s:e] = True
    missing = [ch for ch, c in zip(text, covered, strict=True) if not c and not ch.isspace()]
    assert missing == []


@pytest.fixture(scope="module")
def minilm():
    return load_tokenizer(MINILM)


@pytest.fixture(scope="module")
def smollm():
    return load_tokenizer(SMOLLM)


@pytest.fixture(scope="module")
def sentencepiece(tmp_path_factory):
    """A tiny Unigram (SentencePiece-style, '▁' marker) tokenizer trained here."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    corpus = [
        TEXT,
        "the economy of the city grew quickly",
        "naive cafes in Tokyo",
        "日本語の文章",
    ] * 20
    trainer = trainers.UnigramTrainer(
        vocab_size=150, special_tokens=["<s>", "<pad>", "</s>", "<unk>"], unk_token="<unk>"
    )
    tok.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
    )
    return fast


def test_wordpiece_words_are_the_whitespace_words(minilm):
    assert detect_scheme(minilm) == "wordpiece"
    ids, words, texts = _words(minilm, TEXT)
    assert texts == TEXT.split()  # "3.5%", "2023,", "Dr.", "[SEP]", "-----" stay whole
    assert "naïve" in texts and "Café" in texts  # offsets map back to the accented original
    assert minilm.sep_token_id not in ids.tolist()  # "[SEP]" in user text is text
    assert (np.diff(words.token_word) >= 0).all() and words.token_word[-1] == len(words) - 1
    _check_tiling(TEXT, words)


def test_bytelevel_words(smollm):
    assert detect_scheme(smollm) == "bytelevel"
    _, words, texts = _words(smollm, TEXT)
    assert texts == TEXT.split()
    _check_tiling(TEXT, words)


def test_sentencepiece_words(sentencepiece):
    assert detect_scheme(sentencepiece) == "sentencepiece"
    text = "the economy of the city grew quickly. naive cafes in Tokyo"
    _, words, texts = _words(sentencepiece, text)
    assert texts == text.split()
    _check_tiling(text, words)


def test_identifiers_are_single_words(minilm):
    text = "-a --ascii  /usr/share/doc/gzip v1.12 32KiB foo_bar.baz_qux getElementById bug@gnu.org"
    _, words, texts = _words(minilm, text)
    assert texts == text.split()
    assert words.first_token.size == len(texts)


def test_repeated_separators_are_whole_words(minilm):
    text = "a ---- ---- ---- b -- c"
    _, words, _ = _words(minilm, text)
    expected = [False, False, True, True, False, False, False]
    assert repeated_separators(text, words).tolist() == expected


def test_word_scores_mean_max_and_first(minilm):
    ids, words, texts = _words(minilm, "in 2023 now")
    probs = np.linspace(0.1, 0.9, ids.size).astype(np.float32)
    mean = word_scores(probs, words, "mean")
    first = word_scores(probs, words, "first")
    most = word_scores(probs, words, "max")
    i = texts.index("2023")
    toks = np.flatnonzero(words.token_word == i)
    assert toks.size == 2
    assert mean[i] == pytest.approx(probs[toks].mean())
    assert first[i] == pytest.approx(probs[toks[0]])
    assert most[i] == pytest.approx(probs[toks].max())
