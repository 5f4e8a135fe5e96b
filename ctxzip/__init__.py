"""ctxzip: compress what you send to an LLM, keep what the answer needs.

from ctxzip import Budget, get_compressor
result = get_compressor("truncate").compress(docs, query="...", budget=Budget(rate=0.3))
result.texts, result.tokens_in, result.tokens_out, result.ratio
"""

from ctxzip.budget import Budget
from ctxzip.compressor import BaseCompressor, Compressed, Compressor
from ctxzip.errors import CtxzipError, InputError, ModelNotFoundError, PluginError
from ctxzip.protect import Protect
from ctxzip.registry import available_compressors, compressor_names, get_compressor
from ctxzip.result import CompressionRequest, CompressionResult, Span
from ctxzip.tokens import count_tokens, get_tokenizer
from ctxzip.units import Unit, split_sentences, split_whitespace_words, split_words

__version__ = "0.1.0"

__all__ = [
    "BaseCompressor",
    "Budget",
    "Compressed",
    "CompressionRequest",
    "CompressionResult",
    "Compressor",
    "CtxzipError",
    "InputError",
    "ModelNotFoundError",
    "PluginError",
    "Protect",
    "Span",
    "Unit",
    "available_compressors",
    "compressor_names",
    "count_tokens",
    "get_compressor",
    "get_tokenizer",
    "split_sentences",
    "split_whitespace_words",
    "split_words",
]
