"""`xrag`: each context becomes one soft token, a projected retriever embedding (xRAG-style)."""

from ctxzip.compressors.xrag.compressor import XragCompressor, XragUnavailableError, soft_tokens

__all__ = ["XragCompressor", "XragUnavailableError", "soft_tokens"]
