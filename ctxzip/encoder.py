"""The one sentence encoder: extractive scoring, faithfulness checks, LangChain embeddings
and the retrieval store all embed text through it, so they share one model load and one cache.

`get_encoder` returns the process-wide instance for a set of options; construct
`SentenceEncoder` directly only for a private cache.
"""

from __future__ import annotations

import copy
import hashlib
import threading
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np

from ctxzip.models import MINILM, load_sentence_transformer, pick_device

DEFAULT_ENCODER = MINILM

_QUANTIZE = ("none", "int8", "auto")


class SentenceEncoder:
    """A sentence-transformers bi-encoder with length-sorted batches and an LRU cache.

    Embeddings are unit-normalised float32, so a dot product is the cosine. The cache
    is keyed by a digest of the text and bounded (`cache_size` entries, 0 disables).
    `quantize="int8"` runs the linear layers in int8 on CPU (dynamic quantisation).
    """

    def __init__(
        self,
        model: str = DEFAULT_ENCODER,
        *,
        device: str = "auto",
        quantize: str = "none",
        batch_size: int = 64,
        cache_size: int = 100_000,
    ) -> None:
        if quantize not in _QUANTIZE:
            raise ValueError(f"quantize must be one of {_QUANTIZE}, got {quantize!r}")
        self.model_id = model
        self.device = pick_device(device)
        on_cpu = self.device == "cpu"
        self.quantize = ("int8" if on_cpu else "none") if quantize == "auto" else quantize
        if self.quantize == "int8" and not on_cpu:
            raise ValueError("quantize='int8' runs on CPU only; use half precision on GPU")
        self.batch_size = batch_size
        self.cache_size = cache_size
        self._model: Any = None
        self._cache: OrderedDict[bytes, np.ndarray] = OrderedDict()
        self._lock = threading.RLock()
        self.hits = 0
        self.misses = 0

    @property
    def model(self) -> Any:
        with self._lock:
            if self._model is None:
                st = load_sentence_transformer(self.model_id, self.device)
                if self.quantize == "int8":
                    st = _int8_copy(st)  # a private copy: the loader's instance is shared
                self._model = st
            return self._model

    def encode(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        """Embeddings of `texts` (rows in order); cached texts skip the model."""
        return self.encode_counted(texts, progress)[0]

    def encode_counted(
        self, texts: Sequence[str], progress: bool = False
    ) -> tuple[np.ndarray, int]:
        """`encode`, plus how many of `texts` came from the cache in this very call."""
        hits = 0
        keys = [_digest(t) for t in texts]
        out: list[np.ndarray | None] = [None] * len(texts)
        todo: dict[bytes, str] = {}
        with self._lock:
            for i, key in enumerate(keys):
                vec = self._cache.get(key)
                if vec is not None:
                    self._cache.move_to_end(key)
                    out[i] = vec
                    hits += 1
                elif key not in todo:
                    todo[key] = texts[i]
            self.hits += hits
        if todo:
            fresh = self._forward(list(todo.values()), progress)
            found = dict(zip(todo, fresh, strict=True))
            with self._lock:
                self.misses += len(todo)
                if self.cache_size > 0:
                    for key, vec in found.items():
                        self._cache[key] = vec
                        self._cache.move_to_end(key)
                    while len(self._cache) > self.cache_size:
                        self._cache.popitem(last=False)
            for i, key in enumerate(keys):
                if out[i] is None:
                    out[i] = found[key]
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32), 0
        return np.stack(out), hits  # type: ignore[arg-type]

    @property
    def dimension(self) -> int:
        model = self.model
        get = (
            getattr(model, "get_embedding_dimension", None)
            or model.get_sentence_embedding_dimension
        )
        return int(get())

    def cache_info(self) -> dict[str, int]:
        with self._lock:
            return {
                "size": len(self._cache),
                "max": self.cache_size,
                "hits": self.hits,
                "misses": self.misses,
            }

    def clear_cache(self) -> None:
        with self._lock:
            self._cache.clear()

    def _forward(self, texts: list[str], progress: bool) -> list[np.ndarray]:
        """One pass over `texts` in length-sorted batches (little padding), no grad."""
        import torch
        from sentence_transformers.util import batch_to_device
        from tqdm.auto import tqdm

        model = self.model
        prepare = getattr(model, "preprocess", None) or model.tokenize
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        result: list[np.ndarray] = [None] * len(texts)  # type: ignore[list-item]
        starts = range(0, len(order), self.batch_size)
        with torch.inference_mode():
            for b in tqdm(starts, disable=not progress, desc="encoding", unit="batch"):
                idx = order[b : b + self.batch_size]
                features = batch_to_device(prepare([texts[i] for i in idx]), model.device)
                emb = model.forward(features)["sentence_embedding"].float()
                emb = torch.nn.functional.normalize(emb, dim=-1).cpu().numpy()
                for row, i in enumerate(idx):
                    result[i] = emb[row]
        return result


def _digest(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


def _int8_copy(model: Any) -> Any:
    """A private copy of `model` with int8 dynamic quantisation of its Linear layers."""
    import torch

    quantized = copy.deepcopy(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.ao.quantization.quantize_dynamic(
            quantized, {torch.nn.Linear}, dtype=torch.qint8, inplace=True
        )
    return quantized


_encoders: dict[tuple[Any, ...], SentenceEncoder] = {}
_encoders_lock = threading.Lock()


def get_encoder(
    model: str = DEFAULT_ENCODER,
    *,
    device: str = "auto",
    quantize: str = "none",
    batch_size: int = 64,
    cache_size: int = 100_000,
) -> SentenceEncoder:
    """The process-wide encoder for these settings, so every user shares one cache."""
    key = (model, pick_device(device), quantize, batch_size, cache_size)
    with _encoders_lock:
        if key not in _encoders:
            _encoders[key] = SentenceEncoder(
                model,
                device=device,
                quantize=quantize,
                batch_size=batch_size,
                cache_size=cache_size,
            )
        return _encoders[key]
