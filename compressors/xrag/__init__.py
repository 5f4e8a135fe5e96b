"""`xrag`: each context becomes one soft token, a projected retriever embedding (xRAG-style).

`XragCompressor` is the method (registered as `xrag`, `kind = "soft-token"`); the projector
(`projector`), the input-embedding injection (`inject`) and the trainer (`train`, run by
`ctxzip train xrag`, never imported by the runtime modules) are submodules.
"""

from ctxzip.compressors.xrag.compressor import XragCompressor, XragUnavailableError, soft_tokens
from ctxzip.compressors.xrag.projector import PairMismatchError, register_pair

__all__ = [
    "PairMismatchError",
    "XragCompressor",
    "XragUnavailableError",
    "register_pair",
    "soft_tokens",
]
