"""`token-classification`: LLMLingua-2-style keep/drop per word from an encoder with a small head."""

from ctxzip.compressors.token_classification.compressor import (
    TokenClassificationCompressor,
    load_token_classifier,
)

__all__ = ["TokenClassificationCompressor", "load_token_classifier"]
