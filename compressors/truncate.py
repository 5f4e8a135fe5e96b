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
        ids = [tok.encode(c) if c else [] for c in request.contexts]
        total = sum(len(i) for i in ids)
        budget = request.budget.tokens_for(total)
        shares = _proportional_shares([len(i) for i in ids], budget)
        kept: list[list[Span]] = []
        for context, token_ids, share in zip(request.contexts, ids, shares, strict=True):
            if share >= len(token_ids):
                kept.append([(0, len(context))] if context else [])
                continue
            limit, head = share, tok.decode(token_ids[:share]) if share else ""
            # back off a cut inside a character, or a prefix that re-tokenises longer
            while head and (not context.startswith(head) or tok.count(head) > limit):
                share -= 1
                head = tok.decode(token_ids[:share])
            kept.append([(0, len(head))] if head else [])
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
