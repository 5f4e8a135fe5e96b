"""`token-classification`: LLMLingua-2-style keep/drop per word from an encoder with a small head.

Modules, each importing only the ones before it: `words` (sub-tokens to words, stopwords),
`costs` (reader-token cost per word), `onnx_smoothing` and `onnx` (the ONNX Runtime
backend), `model` (loading checkpoints, the shipped adapters and head, int8), `compressor` (the
compressor). `train` (rebuilds the shipped model) imports the runtime modules; none of
them imports it.
"""

from ctxzip.compressors.token_classification.compressor import TokenClassificationCompressor
from ctxzip.compressors.token_classification.model import (
    BASE_MODEL,
    DEFAULT_MODEL,
    LoadedModel,
    load_token_classifier,
    weights_path,
)

__all__ = [
    "BASE_MODEL",
    "DEFAULT_MODEL",
    "LoadedModel",
    "TokenClassificationCompressor",
    "load_token_classifier",
    "weights_path",
]
