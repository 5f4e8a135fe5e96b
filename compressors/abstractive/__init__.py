"""`abstractive`: query-focused summaries written by a local or remote generator, checked for support.

`AbstractiveCompressor` is the method (registered as `abstractive`); its generators are in
`backends` (the remote one through `ctxzip.chat_client`) and the support check in
`faithfulness`.
"""

from ctxzip.compressors.abstractive.compressor import AbstractiveCompressor

__all__ = ["AbstractiveCompressor"]
