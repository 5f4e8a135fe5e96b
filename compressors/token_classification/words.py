"""Words for any Hugging Face fast tokenizer: whitespace-delimited, scored from sub-tokens.

A token-classification compressor scores sub-tokens but keeps or drops whole words. A
word is a maximal run of non-space characters (`whitespace_words`), never the model
tokenizer's idea of a word: ``-a --ascii`` is two words ``-a`` and ``--ascii``, never
``a ascii``; paths, URLs, e-mails, versions, numbers with units and dotted, snake_case
or camelCase names are one word each, kept whole or dropped whole, with any punctuation
attached to them. Each word's score is aggregated from the sub-tokens that start inside
it (`word_scores`: mean, max or first), using the encoding's character offsets.

Also here: the per-vocabulary tables (`word_rule`: punctuation and special tokens;
`vocab_pieces`: LLMLingua-2's chunk ends), repeated separators
(`repeated_separators`) and the stopwords that never count as a query match
(`STOPWORDS`). Everything per input is numpy over whole arrays.
"""

from __future__ import annotations

import itertools
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


def whitespace_words(offsets: np.ndarray, space: np.ndarray) -> Words:
    """The whitespace-delimited words of a text and which tokens fall in each.

    A word is a maximal run of non-space characters, so flags (``--ascii``), paths,
    URLs, versions, numbers with units and dotted or snake_case names are single words,
    and punctuation stays with the word it is attached to. Tokens (character `offsets`,
    shape [n, 2]) belong to the word their first character is in; a word no token
    touches (only characters the tokenizer drops) is not a unit. Vectorised.
    """
    n = int(offsets.shape[0])
    nchars = int(space.shape[0])
    if n == 0 or nchars == 0:
        empty = np.zeros(0, dtype=np.int64)
        return Words(np.zeros(n, dtype=np.int64), empty, empty, empty)
    solid = ~space
    prev = np.concatenate(([False], solid[:-1]))
    nxt = np.concatenate((solid[1:], [False]))
    w_start = np.flatnonzero(solid & ~prev)
    w_end = np.flatnonzero(solid & ~nxt) + 1
    tok_start = offsets[:, 0].astype(np.int64)
    # the word a token starts in (a token starting on a space joins the word after it)
    owner = np.searchsorted(w_end, tok_start, side="right")
    owner = np.minimum(owner, w_start.shape[0] - 1)
    used = np.zeros(w_start.shape[0], dtype=bool)
    used[owner] = True
    if not used.all():  # drop words without tokens, renumber the rest
        renumber = np.cumsum(used) - 1
        owner = renumber[owner]
        w_start, w_end = w_start[used], w_end[used]
    first = np.searchsorted(owner, np.arange(w_start.shape[0]), side="left")
    return Words(owner.astype(np.int64), first.astype(np.int64), w_start, w_end)


def word_scores(token_scores: np.ndarray, words: Words, how: str = "mean") -> np.ndarray:
    """Per-word score from per-token scores: mean, max or first of its sub-tokens."""
    if len(words) == 0:
        return np.zeros(0, dtype=np.float64)
    if how == "first":
        return token_scores[words.first_token].astype(np.float64)
    if how == "max":
        return np.maximum.reduceat(token_scores.astype(np.float64), words.first_token)
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


def repeated_separators(text: str, words: Words) -> np.ndarray:
    """Words of punctuation only that repeat the word before them (``---- ----``)."""
    pieces = [text[a:b] for a, b in zip(words.start.tolist(), words.end.tolist(), strict=True)]
    sep = np.fromiter((_is_punct(p) for p in pieces), dtype=bool, count=len(pieces))
    same = np.asarray([False] + [a == b for a, b in itertools.pairwise(pieces)], dtype=bool)
    return sep & same
