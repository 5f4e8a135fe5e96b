"""Content compressors for tool results: one module per content type, a router, and the
`content` compressor that ties them together."""

from ctxzip.compressors.content.compressor import ContentCompressor

__all__ = ["ContentCompressor"]
