"""Sub-token to word merging with real tokenizers: WordPiece, byte-level BPE, SentencePiece."""

from __future__ import annotations

import numpy as np
import pytest

from ctxzip.compressors.token_classification.words import (
    codepoints,
    detect_scheme,
    merge_words,
    space_mask,
    word_rule,
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
    words = merge_words(
        ids, np.asarray(enc.offsets).reshape(-1, 2), word_rule(tokenizer), cps, space_mask(cps)
    )
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


def test_wordpiece_merges_hash_pieces_and_keeps_accents(minilm):
    assert detect_scheme(minilm) == "wordpiece"
    ids, words, texts = _words(minilm, TEXT)
    assert "2023" in texts  # '202' + '##3'
    assert "naïve" in texts and "Café" in texts  # offsets map back to the accented original
    assert texts[texts.index("東") : texts.index("東") + 2] == ["東", "京"]
    i = texts.index("SEP")
    assert texts[i - 1 : i + 2] == ["[", "SEP", "]"]  # user text, split as text...
    assert minilm.sep_token_id not in ids.tolist()  # ...and never the control token
    _check_tiling(TEXT, words)


def test_bytelevel_never_splits_a_character(smollm):
    assert detect_scheme(smollm) == "bytelevel"
    _, words, texts = _words(smollm, TEXT)
    assert "economy" in texts and "naïve" in texts and "Café" in texts
    assert "Ελληνικά" in texts
    assert "-----" in texts
    assert "" not in texts  # trailing spaces join the last word instead of making an empty one
    _check_tiling(TEXT, words)


def test_sentencepiece_marker_starts_words(sentencepiece):
    assert detect_scheme(sentencepiece) == "sentencepiece"
    text = "the economy of the city grew quickly. naive cafes in Tokyo"
    _, words, texts = _words(sentencepiece, text)
    assert texts == [
        "the",
        "economy",
        "of",
        "the",
        "city",
        "grew",
        "quickly",
        ".",
        "naive",
        "cafes",
        "in",
        "Tokyo",
    ]
    _check_tiling(text, words)


def test_word_scores_mean_and_first(minilm):
    ids, words, texts = _words(minilm, "in 2023 now")
    probs = np.linspace(0.1, 0.9, ids.size).astype(np.float32)
    mean = word_scores(probs, words, "mean")
    first = word_scores(probs, words, "first")
    i = texts.index("2023")
    toks = np.flatnonzero(words.token_word == i)
    assert toks.size == 2
    assert mean[i] == pytest.approx(probs[toks].mean())
    assert first[i] == pytest.approx(probs[toks[0]])
