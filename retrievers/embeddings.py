"""Text -> vectors: the default sentence-transformers embedder, batched, with a progress bar.

Anything with `model_id`, `dim` and `embed(texts)` works as an embedder (see `Embedder`);
the store records `model_id` and `dim` in its manifest and refuses to mix models.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
log = logging.getLogger("ctxzip.retrievers")


@runtime_checkable
class Embedder(Protocol):
    """What the store needs to turn text into vectors."""

    model_id: str

    @property
    def dim(self) -> int: ...

    def embed(self, texts: Sequence[str], progress: bool | None = None) -> np.ndarray: ...


class SentenceTransformerEmbedder:
    """A sentence-transformers bi-encoder (loaded once per process, CUDA in fp16 when present).

    Texts are sorted by length and embedded `batch_size` at a time (less padding), with a
    tqdm bar for long jobs. Texts longer than the model window are embedded from their
    first window of tokens (a warning says how many); chunk long documents with
    `ctxzip.retrievers.chunking` instead.
    """

    def __init__(
        self,
        model_id: str = DEFAULT_MODEL,
        device: str = "auto",
        batch_size: int = 64,
        normalize: bool = True,
    ) -> None:
        self.model_id = model_id
        self.device = device
        self.batch_size = batch_size
        self.normalize = normalize
        self._model: Any = None

    @property
    def model(self) -> Any:
        if self._model is None:
            from ctxzip.models import load_sentence_transformer

            self._model = load_sentence_transformer(self.model_id, device=self.device)
        return self._model

    @property
    def dim(self) -> int:
        get = (
            getattr(self.model, "get_embedding_dimension", None)
            or self.model.get_sentence_embedding_dimension
        )
        return int(get())

    @property
    def max_tokens(self) -> int | None:
        value = getattr(self.model, "max_seq_length", None)
        return int(value) if value else None

    def embed(self, texts: Sequence[str], progress: bool | None = None) -> np.ndarray:
        """Vectors of shape (len(texts), dim), float32, in input order."""
        if not len(texts):
            return np.empty((0, self.dim), dtype=np.float32)
        from tqdm.auto import tqdm

        self._warn_long(texts)
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        show = len(texts) > 4 * self.batch_size if progress is None else progress
        bar = tqdm(
            total=len(texts),
            unit="text",
            desc="embedding",
            disable=not show,
            file=sys.stderr,
            leave=False,
        )
        try:
            for start in range(0, len(order), self.batch_size):
                idx = order[start : start + self.batch_size]
                vecs = self.model.encode(
                    [texts[i] for i in idx],
                    batch_size=len(idx),
                    convert_to_numpy=True,
                    normalize_embeddings=self.normalize,
                    show_progress_bar=False,
                )
                out[idx] = np.asarray(vecs, dtype=np.float32)
                bar.update(len(idx))
        finally:
            bar.close()
        return out

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
