"""Token-aware chunking with overlap that keeps exact character offsets.

Text is cut at sentence boundaries (`ctxzip.units.split_sentences`), sentences longer
than a chunk at word boundaries, and single words longer than a chunk by characters.
Pieces are packed greedily up to `chunk_tokens` (counted in the given tokenizer, by
default the embedding model's own, so chunks fit its window); each new chunk starts
with up to `overlap_tokens` of the previous chunk's last pieces. Every chunk is a
slice: ``text[chunk.start:chunk.end] == chunk.text``.
"""

from __future__ import annotations

from dataclasses import dataclass

from ctxzip.errors import InputError
from ctxzip.tokens import Tokenizer, get_tokenizer
from ctxzip.units import split_sentences, split_words


@dataclass(frozen=True)
class Chunk:
    text: str
    start: int
    end: int
    tokens: int
    index: int


@dataclass(frozen=True)
class _Piece:
    start: int
    end: int
    tokens: int


def chunk_text(
    text: str, tokenizer: Tokenizer | str, chunk_tokens: int = 200, overlap_tokens: int = 32
) -> list[Chunk]:
    """Chunks of at most about `chunk_tokens` tokens, overlapping by up to `overlap_tokens`."""
    if chunk_tokens < 1:
        raise InputError(f"chunk_tokens must be positive, got {chunk_tokens}")
    if not 0 <= overlap_tokens < chunk_tokens:
        raise InputError(f"overlap_tokens must be in [0, chunk_tokens), got {overlap_tokens}")
    tok = get_tokenizer(tokenizer) if isinstance(tokenizer, str) else tokenizer
    pieces = _pieces(text, tok, chunk_tokens)
    chunks: list[Chunk] = []
    i = 0
    while i < len(pieces):
        j, used = i, 0
        while j < len(pieces) and (j == i or used + pieces[j].tokens <= chunk_tokens):
            used += pieces[j].tokens
            j += 1
        start, end = pieces[i].start, pieces[j - 1].end
        chunks.append(Chunk(text[start:end], start, end, used, len(chunks)))
        if j >= len(pieces):
            break
        back, overlap = j, 0  # the next chunk repeats the tail of this one
        while back - 1 > i and overlap + pieces[back - 1].tokens <= overlap_tokens:
            back -= 1
            overlap += pieces[back].tokens
        i = back
    return chunks


def _pieces(text: str, tok: Tokenizer, limit: int) -> list[_Piece]:
    out: list[_Piece] = []
    for unit in split_sentences(text):
        n = tok.count(unit.text)
        if n <= limit:
            out.append(_Piece(unit.start, unit.end, n))
            continue
        for word in split_words(unit.text):
            start, end = unit.start + word.start, unit.start + word.end
            n = tok.count(text[start:end])
            if n <= limit:
                out.append(_Piece(start, end, n))
            else:
                out.extend(_split_chars(text, start, end, tok, limit))
    return out


def _split_chars(text: str, start: int, end: int, tok: Tokenizer, limit: int) -> list[_Piece]:
    """A huge 'word' (base64, a minified line): cut it into pieces that fit."""
    out = []
    while start < end:
        size = min(end - start, limit * 4)
        while size > 1 and tok.count(text[start : start + size]) > limit:
            size //= 2
        out.append(_Piece(start, start + size, tok.count(text[start : start + size])))
        start += size
    return out
