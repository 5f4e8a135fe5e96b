"""Reader-token costs of words: what each word weighs against the budget.

The budget is counted in the reader's tokenizer (tiktoken or a Hugging Face fast
tokenizer), not the classifier's, so every word needs its cost in reader tokens.
`word_costs` maps the reader's tokens of the whole text onto words (vectorised, one
encode per text); `isolated_costs` and `piece_costs` encode each word on its own, as
LLMLingua-2 weighs words in its per-chunk rule.
"""

from __future__ import annotations

import contextlib
import itertools
from typing import Any

import numpy as np

from ctxzip.compressors.token_classification.words import Words, vocab_pieces, word_rule

_byte_tables: dict[str, np.ndarray] = {}


def _tiktoken_bytes(enc: Any) -> np.ndarray:
    """Bytes per token id of a tiktoken encoding (built once per encoding)."""
    table = _byte_tables.get(enc.name)
    if table is None:
        table = np.zeros(enc.n_vocab, dtype=np.int64)
        for i in range(enc.n_vocab):  # once per encoding
            with contextlib.suppress(KeyError):
                table[i] = len(enc.decode_single_token_bytes(i))
        _byte_tables[enc.name] = table
    return table


def reader_token_starts(reader: Any, text: str, cps: np.ndarray) -> np.ndarray | None:
    """Character offset where each reader token starts (None: tokenizer gives no offsets)."""
    enc = getattr(reader, "_enc", None)
    if enc is not None:
        ids = np.asarray(enc.encode_ordinary(text), dtype=np.int64)
        if ids.size == 0:
            return np.zeros(0, dtype=np.int64)
        lens = _tiktoken_bytes(enc)[ids]
        byte_start = np.concatenate(([0], np.cumsum(lens)[:-1]))
        char_bytes = np.where(
            cps < 0x80, 1, np.where(cps < 0x800, 2, np.where(cps < 0x10000, 3, 4))
        )
        char_start = np.concatenate(([0], np.cumsum(char_bytes)[:-1]))
        return np.searchsorted(char_start, byte_start, side="right") - 1
    fast = getattr(reader, "_fast", None)
    if fast is not None:
        offsets = fast.encode(text, add_special_tokens=False).offsets
        return np.asarray([s for s, _ in offsets], dtype=np.int64)
    return None


def word_costs(reader: Any, text: str, cps: np.ndarray, words: Words) -> np.ndarray:
    """Reader tokens per word; a token belongs to the first word ending after its start."""
    if len(words) == 0:
        return np.zeros(0, dtype=np.int64)
    starts = reader_token_starts(reader, text, cps)
    if starts is None:  # a tokenizer without offsets: count word by word (slow path)
        return np.asarray(
            [reader.count(text[s:e]) for s, e in zip(words.start, words.end, strict=True)],
            dtype=np.int64,
        )
    owner = np.minimum(np.searchsorted(words.end, starts, side="right"), len(words) - 1)
    return np.bincount(owner, minlength=len(words)).astype(np.int64)


def isolated_costs(reader: Any, text: str, words: Words) -> np.ndarray:
    """Reader tokens of each word encoded on its own (LLMLingua-2's per-word weights)."""
    pieces = [text[s:e] for s, e in zip(words.start.tolist(), words.end.tolist(), strict=True)]
    enc = getattr(reader, "_enc", None)
    if enc is not None:
        return np.fromiter(map(len, enc.encode_ordinary_batch(pieces)), np.int64, len(pieces))
    fast = getattr(reader, "_fast", None)
    if fast is not None:
        encs = fast.encode_batch(pieces, add_special_tokens=False)
        return np.fromiter((len(e.ids) for e in encs), np.int64, len(pieces))
    return np.asarray([reader.count(p) for p in pieces], dtype=np.int64)


def piece_costs(
    reader: Any, text: str, ids: np.ndarray, words: Words, tokenizer: Any
) -> np.ndarray:
    """Reader tokens of each word's tokenizer text: its pieces joined, continuation
    markers ("##") removed (LLMLingua-2's per-word weight). Byte-level vocabularies
    (which llmlingua does not support) use the word's own text."""
    rule = word_rule(tokenizer)
    if rule.scheme not in ("wordpiece", "sentencepiece"):
        return isolated_costs(reader, text, words)
    toks = vocab_pieces(tokenizer).text[ids].tolist()
    if rule.scheme == "wordpiece":
        toks = [t[2:] if t.startswith("##") else t for t in toks]
    bounds = [*words.first_token.tolist(), len(toks)]
    texts = ["".join(toks[a:b]) for a, b in itertools.pairwise(bounds)]
    enc = getattr(reader, "_enc", None)
    if enc is not None:
        return np.fromiter(map(len, enc.encode_ordinary_batch(texts)), np.int64, len(texts))
    return np.asarray([reader.count(t) for t in texts], dtype=np.int64)
