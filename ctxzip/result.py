"""What every compressor returns."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ctxzip.budget import Budget

Span = tuple[int, int]
"""A half-open character range ``[start, end)`` in an original context."""


@dataclass(frozen=True)
class CompressionRequest:
    """One call's worth of input, so many calls can share one batched model pass."""

    contexts: tuple[str, ...]
    query: str | None = None
    budget: Budget = field(default_factory=lambda: Budget(rate=0.5))

    @classmethod
    def of(
        cls, contexts: str | Sequence[str], query: str | None = None, budget: Budget | None = None
    ) -> CompressionRequest:
        """Build a request from loose arguments, validating them (see `ctxzip.validate`)."""
        from ctxzip.validate import check_budget, check_contexts, check_query

        return cls(
            contexts=check_contexts(contexts),
            query=check_query(query),
            budget=check_budget(budget),
        )


class Accounting:
    """Rate, ratio and the stats every result kind reports (text, vision tokens, images).

    Mixed into the result dataclasses, which declare these fields themselves."""

    tokens_in: int
    tokens_out: int
    tokenizer: str
    requested_rate: float
    seconds: float
    method: str
    budget: Budget
    reason: str | None

    @property
    def rate(self) -> float:
        """Achieved kept fraction: tokens_out / tokens_in."""
        return self.tokens_out / self.tokens_in if self.tokens_in else 1.0

    @property
    def ratio(self) -> float:
        """Compression ratio tokens_in / tokens_out (inf when nothing is left)."""
        if self.tokens_out == 0:
            return math.inf if self.tokens_in else 1.0
        return self.tokens_in / self.tokens_out

    def stats(self, **fields: Any) -> dict[str, Any]:
        """The JSON-ready accounting, with a result kind's own `fields` after `method`."""
        return {
            "method": self.method,
            **fields,
            "tokens_in": self.tokens_in,
            "tokens_out": self.tokens_out,
            "tokenizer": self.tokenizer,
            "budget": str(self.budget),
            "requested_rate": round(self.requested_rate, 6),
            "rate": round(self.rate, 6),
            "ratio": None if math.isinf(self.ratio) else round(self.ratio, 4),
            "seconds": round(self.seconds, 6),
            "reason": self.reason,
        }


@dataclass
class CompressionResult(Accounting):
    """Compressed contexts plus honest accounting of what was kept.

    `texts[i]` is the compressed form of context ``i`` (empty when it was dropped);
    `kept[i]` lists the character spans of the original context that survive, so a
    caller can highlight or recover them. Token counts use `tokenizer`.
    """

    texts: list[str]
    kept: list[list[Span]]
    tokens_in: int
    tokens_out: int
    tokenizer: str
    requested_rate: float
    seconds: float
    method: str
    budget: Budget
    reason: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def text(self) -> str:
        """All non-empty compressed contexts joined by blank lines, ready for a prompt."""
        return "\n\n".join(t for t in self.texts if t)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (used by the CLI's --json and the proxy's /v1/compress)."""
        return self.stats(texts=self.texts, kept=[[list(s) for s in spans] for spans in self.kept])
