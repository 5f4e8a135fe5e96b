"""The one compressor interface, and a base class that does the bookkeeping.

A compressor subclass implements `_compress_requests`: given many requests, return
for each context the character spans to keep (and optionally a replacement text).
The base class validates input, counts tokens in the reader's tokenizer, times the
call and builds `CompressionResult`s, so every method reports the same way.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

from ctxzip.budget import Budget
from ctxzip.result import CompressionRequest, CompressionResult, Span
from ctxzip.spans import join_spans
from ctxzip.tokens import DEFAULT_TOKENIZER, Tokenizer, get_tokenizer


@runtime_checkable
class Compressor(Protocol):
    """What callers rely on; `BaseCompressor` is one way to satisfy it.

    `kind` says what the method produces, so consumers (the eval sweep, the proxy) never
    guess it: "text" (compressed text), "soft-token" (vectors a white-box reader takes in
    place of text), "vision" (a reduced visual-token tensor), "image" (a resized image for
    an API model).
    """

    name: ClassVar[str]
    kind: ClassVar[str]

    def compress(
        self, contexts: str | Sequence[str], query: str | None = None, budget: Budget | None = None
    ) -> CompressionResult: ...

    async def acompress(
        self, contexts: str | Sequence[str], query: str | None = None, budget: Budget | None = None
    ) -> CompressionResult: ...

    def compress_batch(self, requests: Sequence[CompressionRequest]) -> list[CompressionResult]: ...


@dataclass
class Compressed:
    """One request's outcome as a method sees it, before accounting."""

    kept: list[list[Span]]
    texts: list[str] | None = None  # None: the texts are the kept spans joined
    reason: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class BaseCompressor:
    """Shared plumbing for compressors. Subclasses set `name` and `_compress_requests`.

    `tokenizer` names the model that reads the output: budgets and counts use it.
    """

    name: ClassVar[str] = "base"
    kind: ClassVar[str] = "text"

    def __init__(self, *, tokenizer: str = DEFAULT_TOKENIZER) -> None:
        self.tokenizer_name = tokenizer

    @property
    def tokenizer(self) -> Tokenizer:
        return get_tokenizer(self.tokenizer_name)

    def compress(
        self, contexts: str | Sequence[str], query: str | None = None, budget: Budget | None = None
    ) -> CompressionResult:
        """Compress one request's contexts to fit `budget` (default: keep half)."""
        return self.compress_batch([CompressionRequest.of(contexts, query, budget)])[0]

    async def acompress(
        self, contexts: str | Sequence[str], query: str | None = None, budget: Budget | None = None
    ) -> CompressionResult:
        """`compress` in a worker thread, so model work never blocks the event loop."""
        request = CompressionRequest.of(contexts, query, budget)
        results = await asyncio.to_thread(self.compress_batch, [request])
        return results[0]

    async def acompress_batch(
        self, requests: Sequence[CompressionRequest]
    ) -> list[CompressionResult]:
        return await asyncio.to_thread(self.compress_batch, requests)

    def compress_batch(self, requests: Sequence[CompressionRequest]) -> list[CompressionResult]:
        """Many requests in one call, so model-based methods batch one forward pass.

        Each result's `seconds` is the batch's wall time shared evenly among requests.
        """
        requests = list(requests)
        if not requests:
            return []
        start = time.perf_counter()
        outcomes = self._compress_requests(requests)
        seconds = (time.perf_counter() - start) / len(requests)
        return [self._account(r, o, seconds) for r, o in zip(requests, outcomes, strict=True)]

    def _compress_requests(self, requests: list[CompressionRequest]) -> list[Compressed]:
        raise NotImplementedError

    def _account(
        self, request: CompressionRequest, outcome: Compressed, seconds: float
    ) -> CompressionResult:
        texts = outcome.texts
        if texts is None:
            texts = [join_spans(c, k) for c, k in zip(request.contexts, outcome.kept, strict=True)]
        tokens_in = self.count(request.contexts)
        return CompressionResult(
            texts=texts,
            kept=outcome.kept,
            tokens_in=tokens_in,
            tokens_out=self.count(texts),
            tokenizer=self.tokenizer.name,
            requested_rate=request.budget.requested_rate(tokens_in),
            seconds=seconds,
            method=self.name,
            budget=request.budget,
            reason=outcome.reason,
            extra=outcome.extra,
        )

    def count(self, texts: Sequence[str]) -> int:
        """Tokens of all `texts` in the reader's tokenizer."""
        tok = self.tokenizer
        return sum(tok.count(t) for t in texts if t)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(tokenizer={self.tokenizer_name!r})"
