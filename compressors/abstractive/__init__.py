"""`abstractive`: query-focused summaries written by a local or remote generator, checked for support."""

from ctxzip.compressors.abstractive.compressor import AbstractiveCompressor

__all__ = ["AbstractiveCompressor"]
