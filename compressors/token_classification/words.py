"""Sub-tokens to words, vectorised, for any Hugging Face fast tokenizer.

A token-classification compressor scores sub-tokens but keeps or drops whole words,
so it needs to know where words start. LLMLingua-2 hard-wires that rule to two
tokenizer names; here it comes from the tokenizer itself:

* its own continuation markers, read once per vocabulary into a boolean table
  (WordPiece ``##x`` continues a word; SentencePiece ``▁x`` and byte-level ``Ġx``
  start one; a punctuation-only token always starts one), and
* the character offsets of each encoding (whitespace before a token starts a word;
  a token that overlaps the previous one, such as two bytes of one character in a
  byte-level BPE, never does, so no character is ever split).

Everything after the vocabulary table is numpy over whole arrays: no loop per word.

Also here: the per-vocabulary piece table LLMLingua-2's per-chunk rule needs
(`vocab_pieces`), repeated separators (`repeated_separators`) and the stopwords that
never count as a query match (`STOPWORDS`).
"""

from __future__ import annotations

import json
import unicodedata
from dataclasses import dataclass
from typing import Any

import numpy as np

SCHEMES = ("wordpiece", "sentencepiece", "bytelevel", "offsets")

# Words too common to mark a query match (question-aware scoring).
STOPWORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "but",
        "by",
        "can",
        "did",
        "do",
        "does",
        "for",
        "from",
        "had",
        "has",
        "have",
        "how",
        "i",
        "if",
        "in",
        "into",
        "is",
        "it",
        "its",
        "of",
        "on",
        "or",
        "so",
        "than",
        "that",
        "the",
        "their",
        "them",
        "then",
        "there",
        "these",
        "they",
        "this",
        "to",
        "was",
        "were",
        "what",
        "when",
        "where",
        "which",
        "who",
        "whom",
        "whose",
        "why",
        "will",
        "with",
        "would",
        "you",
        "your",
        "about",
        "after",
        "before",
        "between",
        "during",
        "many",
        "much",
        "most",
        "some",
        "such",
        "only",
        "also",
        "not",
        "no",
        "yes",
        "our",
        "we",
        "us",
        "he",
        "she",
        "his",
        "her",
        "him",
    ]
)

# Every code point for which str.isspace() is true.
_SPACE_CODEPOINTS = np.array([c for c in range(0x3001) if chr(c).isspace()], dtype=np.int64)


@dataclass(frozen=True)
class WordRule:
    """Where words start in one tokenizer's vocabulary."""

    scheme: str
    starts: np.ndarray  # bool per id: this token begins a new word
    punct: np.ndarray  # bool per id: the token is punctuation / symbols only
    special: np.ndarray  # bool per id: one of the tokenizer's own special tokens


def detect_scheme(tokenizer: Any) -> str:
    """'wordpiece', 'sentencepiece', 'bytelevel' or 'offsets' (unknown: offsets only)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return "offsets"
    spec = json.loads(backend.to_str())
    model = (spec.get("model") or {}).get("type", "")
    text = json.dumps({k: spec.get(k) for k in ("pre_tokenizer", "decoder", "normalizer")})
    if model == "WordPiece":
        return "wordpiece"
    if '"ByteLevel"' in text:
        return "bytelevel"
    if '"Metaspace"' in text or "\u2581" in text:
        return "sentencepiece"
    return "offsets"


def _is_punct(piece: str) -> bool:
    return bool(piece) and all(unicodedata.category(ch)[0] in "PS" for ch in piece)


_BYTE_DECODER: dict[str, str] = {}


def _byte_level_text(token: str) -> str:
    """GPT-2 byte-level token text ("Ġthe") back to readable text (" the")."""
    if not _BYTE_DECODER:
        bs = (
            list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
        )
        cs = bs[:]
        n = 0
        for b in range(256):
            if b not in bs:
                bs.append(b)
                cs.append(256 + n)
                n += 1
        _BYTE_DECODER.update({chr(c): chr(b) for b, c in zip(bs, cs, strict=True)})
    raw = "".join(_BYTE_DECODER.get(ch, ch) for ch in token)
    return raw.encode("latin-1", errors="replace").decode("utf-8", errors="replace")


def word_rule(tokenizer: Any) -> WordRule:
    """The vocabulary table for `tokenizer` (built once per tokenizer object)."""
    key = id(tokenizer)
    cached = _RULES.get(key)
    if cached is not None and cached[0] is tokenizer:
        return cached[1]
    rule = _build_rule(tokenizer)
    _RULES[key] = (tokenizer, rule)
    return rule


_RULES: dict[int, tuple[Any, WordRule]] = {}


def _build_rule(tokenizer: Any) -> WordRule:
    scheme = detect_scheme(tokenizer)
    size = len(tokenizer)
    pieces = tokenizer.convert_ids_to_tokens(list(range(size)))
    starts = np.zeros(size, dtype=bool)
    punct = np.zeros(size, dtype=bool)
    for i, piece in enumerate(pieces):  # once per vocabulary, never per input
        if piece is None:
            continue
        if scheme == "wordpiece":
            body, start = (piece[2:], False) if piece.startswith("##") else (piece, True)
        elif scheme == "sentencepiece":
            start = piece.startswith("\u2581")
            body = piece.lstrip("\u2581")
        elif scheme == "bytelevel":
            text = _byte_level_text(piece)
            start = text[:1].isspace()
            body = "" if "\ufffd" in text else text.strip()  # part of a multi-byte character
        else:
            body, start = piece, False
        punct[i] = _is_punct(body)
        starts[i] = start or punct[i]
    special = np.zeros(size, dtype=bool)
    special[[i for i in tokenizer.all_special_ids if 0 <= i < size]] = True
    return WordRule(scheme, starts, punct, special)


def codepoints(text: str) -> np.ndarray:
    """The text's code points as an int array (vectorised character tests)."""
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.int64)


def space_mask(cps: np.ndarray) -> np.ndarray:
    return np.isin(cps, _SPACE_CODEPOINTS)


@dataclass
class Words:
    """Words of one text: token -> word index, and each word's trimmed character span."""

    token_word: np.ndarray  # int per token
    first_token: np.ndarray  # int per word: index of its first token
    start: np.ndarray  # int per word (characters)
    end: np.ndarray

    def __len__(self) -> int:
        return int(self.start.shape[0])


def merge_words(
    ids: np.ndarray, offsets: np.ndarray, rule: WordRule, cps: np.ndarray, space: np.ndarray
) -> Words:
    """Group `ids` (with character `offsets`, shape [n, 2]) into words of the text.

    Empty words (whitespace-only tokens) are merged into the next word, so every
    word has a non-empty span that starts and ends on a non-space character.
    """
    n = int(ids.shape[0])
    if n == 0:
        empty = np.zeros(0, dtype=np.int64)
        return Words(empty, empty, empty, empty)
    tok_start = offsets[:, 0].astype(np.int64)
    tok_end = offsets[:, 1].astype(np.int64)
    prev_end = np.concatenate(([-1], np.maximum.accumulate(tok_end)[:-1]))
    nchars = cps.shape[0]
    first_space = np.zeros(n, dtype=bool)
    inside = tok_start < nchars
    first_space[inside] = space[tok_start[inside]]
    last_idx = np.clip(prev_end - 1, 0, max(nchars - 1, 0))
    prev_last_space = (prev_end > 0) & space[last_idx] if nchars else np.zeros(n, dtype=bool)
    prev_punct = np.concatenate(([False], rule.punct[ids][:-1]))
    starts = rule.starts[ids] | (tok_start > prev_end) | first_space | prev_last_space
    starts |= prev_punct & ~rule.punct[ids]  # "(the" is two words, as in WordPiece
    # a byte piece of the previous token's character continues it; the previous
    # token being punctuation-only ends a word only where the vocabulary says so
    starts &= tok_start >= prev_end
    starts[0] = True
    # a whitespace-only token glues onto the word that follows it
    empty_tok = _blank(tok_start, tok_end, space)
    starts &= ~np.concatenate(([False], empty_tok[:-1]))
    starts[0] = True
    first = np.flatnonzero(starts)
    if first.shape[0] > 1 and _blank(tok_start[first[-1] :], tok_end[first[-1] :], space).all():
        starts[first[-1]] = False  # trailing whitespace tokens join the last word
    token_word = np.cumsum(starts) - 1
    first = np.flatnonzero(starts)
    w_start = tok_start[first]
    w_end = np.maximum.reduceat(tok_end, first)
    w_start, w_end = _trim(w_start, w_end, space)
    return Words(token_word, first, w_start, w_end)


def _blank(start: np.ndarray, end: np.ndarray, space: np.ndarray) -> np.ndarray:
    """True for tokens whose characters are all whitespace (or that cover none)."""
    non_space = np.concatenate(([0], np.cumsum(~space)))
    return (
        non_space[np.minimum(end, space.shape[0])] - non_space[np.minimum(start, space.shape[0])]
        == 0
    )


def _trim(start: np.ndarray, end: np.ndarray, space: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n = space.shape[0]
    if n == 0:
        return start, end
    idx = np.arange(n + 1)
    sentinel = np.concatenate((space, [False]))
    # next non-space at or after i; previous non-space before i (exclusive end)
    nxt = np.where(~sentinel, idx, n)
    nxt = np.minimum.accumulate(nxt[::-1])[::-1]
    prv = np.where(np.concatenate(([True], ~space)), np.concatenate(([0], idx[1:])), 0)
    prv = np.maximum.accumulate(prv)
    s = np.minimum(nxt[np.minimum(start, n)], end)
    e = np.maximum(prv[np.minimum(end, n)], s)
    return s, e


def word_scores(token_scores: np.ndarray, words: Words, how: str = "mean") -> np.ndarray:
    """Per-word score from per-token scores: mean of its sub-tokens, or the first's."""
    if len(words) == 0:
        return np.zeros(0, dtype=np.float64)
    if how == "first":
        return token_scores[words.first_token].astype(np.float64)
    sums = np.add.reduceat(token_scores.astype(np.float64), words.first_token)
    counts = np.diff(np.concatenate((words.first_token, [token_scores.shape[0]])))
    return sums / counts


@dataclass(frozen=True)
class Pieces:
    """One tokenizer's vocabulary as text, for LLMLingua-2's per-chunk rule."""

    text: np.ndarray  # object per id: the piece as the tokenizer writes it ("" for none)
    chunk_end: np.ndarray  # bool per id: an LLMLingua-2 chunk may end after this token


def vocab_pieces(tokenizer: Any) -> Pieces:
    """The piece table for `tokenizer` (built once per tokenizer object)."""
    key = id(tokenizer)
    cached = _PIECES.get(key)
    if cached is not None and cached[0] is tokenizer:
        return cached[1]
    size = len(tokenizer)
    text = np.asarray(
        [p or "" for p in tokenizer.convert_ids_to_tokens(list(range(size)))], dtype=object
    )
    bare = [p.lstrip("#\u2581\u0120") for p in text]
    ends = np.asarray(
        [b == "." or "\n" in p or p == "\u010a" for b, p in zip(bare, text, strict=True)],
        dtype=bool,
    )
    table = Pieces(text, ends)
    _PIECES[key] = (tokenizer, table)
    return table


_PIECES: dict[int, tuple[Any, Pieces]] = {}


def repeated_separators(ids: np.ndarray, words: Words, punct: np.ndarray) -> np.ndarray:
    """Words repeating the previous word's separator (e.g. the 2nd..nth '-' of '-----')."""
    n_tokens = np.diff(np.concatenate((words.first_token, [ids.size])))
    sig = np.where(n_tokens == 1, ids[words.first_token], -1)
    sep = (sig >= 0) & punct[np.maximum(sig, 0)]
    same = np.concatenate(([False], sig[1:] == sig[:-1]))
    return sep & same
