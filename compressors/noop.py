"""`noop`: returns the input unchanged; the full-context baseline."""

from __future__ import annotations

from ctxzip.compressor import BaseCompressor, Compressed
from ctxzip.result import CompressionRequest


class NoopCompressor(BaseCompressor):
    """Keeps everything, whatever the budget: measures the cost of the plumbing alone."""

    name = "noop"

    def _compress_requests(self, requests: list[CompressionRequest]) -> list[Compressed]:
        return [
            Compressed(
                kept=[[(0, len(c))] if c else [] for c in r.contexts], texts=list(r.contexts)
            )
            for r in requests
        ]
