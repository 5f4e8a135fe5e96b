"""`truncate`: the head of each context up to the budget; the simplest baseline."""

from __future__ import annotations

from ctxzip.compressor import BaseCompressor, Compressed
from ctxzip.result import CompressionRequest, Span


class TruncateCompressor(BaseCompressor):
    """Keeps each context's first tokens, the budget shared in proportion to length.

    Cuts fall on token boundaries of the reader's tokenizer, so the kept text is
    exactly the counted tokens (a cut inside a multi-byte character backs off).
    """

    name = "truncate"

    def _compress_requests(self, requests: list[CompressionRequest]) -> list[Compressed]:
        return [self._one(r) for r in requests]

    def _one(self, request: CompressionRequest) -> Compressed:
        tok = self.tokenizer
        starts = [tok.token_starts(c) if c else [] for c in request.contexts]
        total = sum(len(s) for s in starts)
        budget = request.budget.tokens_for(total)
        shares = _proportional_shares([len(s) for s in starts], budget)
        kept: list[list[Span]] = []
        for context, token_starts, share in zip(request.contexts, starts, shares, strict=True):
            if share >= len(token_starts):
                kept.append([(0, len(context))] if context else [])
                continue
            # cut where token `share` starts; back off if the prefix re-tokenises longer
            limit = share
            end = len(context[: token_starts[share]].rstrip()) if share else 0
            while end and tok.count(context[:end]) > limit:
                share -= 1
                end = len(context[: token_starts[share]].rstrip()) if share else 0
            kept.append([(0, end)] if end else [])
        reason = "budget too small for any context" if budget == 0 and total else None
        return Compressed(kept=kept, reason=reason)


def _proportional_shares(lengths: list[int], budget: int) -> list[int]:
    """Split `budget` tokens across contexts in proportion to length, summing to <= budget."""
    total = sum(lengths)
    if total <= budget:
        return list(lengths)
    shares = [length * budget // total for length in lengths]
    # hand out the rounding remainder to the longest contexts first
    remainder = budget - sum(shares)
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i])[:remainder]:
        shares[i] += 1
    return shares
