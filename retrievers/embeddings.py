"""Text -> vectors: the default sentence-transformers embedder, batched, with a progress bar.

Anything with `model_id`, `dim` and `embed(texts)` works as an embedder (see `Embedder`);
the store records `model_id` and `dim` in its manifest and refuses to mix models.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ctxzip.encoder import DEFAULT_ENCODER, get_encoder
from ctxzip.static_encoder import STATIC_DIMS, get_static_encoder

DEFAULT_MODEL = DEFAULT_ENCODER
STATIC_PREFIX = "static:"  # model="static:" (or "static:<hub id>"): static embeddings
log = logging.getLogger("ctxzip.retrievers")


@runtime_checkable
class Embedder(Protocol):
    """What the store needs to turn text into vectors."""

    model_id: str

    @property
    def dim(self) -> int: ...

    def embed(self, texts: Sequence[str], progress: bool | None = None) -> np.ndarray: ...


class SentenceTransformerEmbedder:
    """The store's default embedder: the process-wide `ctxzip.encoder` for `model_id`.

    Sharing that encoder means one model load and one cache with the `extractive`
    method and the LangChain embeddings. Texts longer than the model window are embedded
    from their first window of tokens (a warning says how many); chunk long documents
    with `ctxzip.retrievers.chunking` instead.
    """

    def __init__(
        self,
        model_id: str = DEFAULT_MODEL,
        device: str = "auto",
        batch_size: int = 64,
    ) -> None:
        self.model_id = model_id
        self.device = device
        self.batch_size = batch_size
        self.encoder = get_encoder(model_id, device=device, batch_size=batch_size)

    @property
    def model(self) -> Any:
        return self.encoder.model

    @property
    def dim(self) -> int:
        return self.encoder.dimension

    @property
    def max_tokens(self) -> int | None:
        value = getattr(self.model, "max_seq_length", None)
        return int(value) if value else None

    def embed(self, texts: Sequence[str], progress: bool | None = None) -> np.ndarray:
        """Unit-normalised vectors of shape (len(texts), dim), float32, in input order."""
        if not len(texts):
            return np.empty((0, self.dim), dtype=np.float32)
        self._warn_long(texts)
        show = len(texts) > 4 * self.batch_size if progress is None else progress
        return self.encoder.encode(list(texts), progress=show)

    def _warn_long(self, texts: Sequence[str]) -> None:
        limit = self.max_tokens
        if not limit:
            return
        suspects = [
            t for t in texts if len(t) > limit
        ]  # fewer chars than the limit cannot exceed it
        if not suspects:
            return
        lengths = [len(ids) for ids in self.model.tokenizer(suspects)["input_ids"]]
        over = sum(n > limit for n in lengths)
        if over:
            log.warning(
                "%d of %d texts exceed the %d-token window of %s and are embedded from their "
                "start only; chunk them (ctxzip.retrievers.chunking) to search all of them",
                over,
                len(texts),
                limit,
                self.model_id,
            )


class StaticEmbedder:
    """Static embeddings distilled from `source` (`ctxzip.static_encoder`): about 150x
    MiniLM's speed for somewhat lower retrieval quality. Picked with
    ``FaissStore(model="static:")``; the manifest records ``static:<source>``."""

    def __init__(self, source: str = DEFAULT_MODEL) -> None:
        self.source = source or DEFAULT_MODEL
        self.model_id = STATIC_PREFIX + self.source
        self.encoder = get_static_encoder(self.source)

    @property
    def dim(self) -> int:
        return STATIC_DIMS

    def embed(self, texts: Sequence[str], progress: bool | None = None) -> np.ndarray:
        """Unit-normalised vectors of shape (len(texts), dim), float32, in input order."""
        return self.encoder.encode(list(texts))
