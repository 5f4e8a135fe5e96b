"""`content`: the content-routed compressor for tool results (JSON, logs, search results,
diffs, code, tables; prose through an existing text method).

Deterministic: the same text, query and budget always give the same output, markers
and keys included, so a conversation's history compresses the same way every turn.
Each result's `extra["contexts"]` lists, per context, the content type, units omitted
and seen, the pass-through reason (if any) and `originals` (marker key -> omitted text).
"""

from __future__ import annotations

from typing import Any

from ctxzip.compressor import BaseCompressor, Compressed, Compressor
from ctxzip.compressors.content.router import route
from ctxzip.registry import get_compressor
from ctxzip.result import CompressionRequest, Span
from ctxzip.tokens import DEFAULT_TOKENIZER


class ContentCompressor(BaseCompressor):
    """Routes each context to the compressor for its content type.

    Options: `prose_method` (a registered text method for prose/markdown/HTML, default
    ``extractive``; ``none`` passes prose through), `prose_options` (its options).
    """

    name = "content"
    kind = "text"

    def __init__(self, *, prose_method: str = "extractive",
                 prose_options: dict[str, Any] | None = None,
                 tokenizer: str = DEFAULT_TOKENIZER) -> None:  # fmt: skip
        super().__init__(tokenizer=tokenizer)
        self.prose_method = prose_method
        self.prose_options = dict(prose_options or {})
        self._prose: Compressor | None = None

    def prose(self) -> Compressor | None:
        """The text method for prose, loaded on first use (None: pass prose through)."""
        if self.prose_method in ("", "none"):
            return None
        if self._prose is None:
            self._prose = get_compressor(
                self.prose_method, tokenizer=self.tokenizer_name, **self.prose_options
            )
        return self._prose

    def _compress_requests(self, requests: list[CompressionRequest]) -> list[Compressed]:
        out = []
        for request in requests:
            texts: list[str] = []
            kept: list[list[Span]] = []
            infos: list[dict[str, Any]] = []
            for context in request.contexts:
                rate = self._rate(request, context)
                shrunk = route(context, request.query, rate, self.prose)
                texts.append(shrunk.text)
                kept.append([] if shrunk.changed else [(0, len(context))] if context else [])
                infos.append({
                    "content_type": shrunk.content_type, "omitted": shrunk.omitted,
                    "total": shrunk.total, "reason": shrunk.reason,
                    "originals": shrunk.originals,
                })  # fmt: skip
            out.append(Compressed(kept=kept, texts=texts, extra={"contexts": infos}))
        return out

    def _rate(self, request: CompressionRequest, context: str) -> float:
        budget = request.budget
        if budget.rate is not None:
            return budget.rate
        tokens = max(1, self.tokenizer.count(context))
        return min(1.0, budget.tokens_for(tokens) / tokens)
