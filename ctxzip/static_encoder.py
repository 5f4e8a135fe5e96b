"""Static sentence embeddings distilled once from the packaged MiniLM: a fast first stage.

`model2vec` turns the packaged all-MiniLM-L6-v2 into a static model (one vector per
vocabulary token, PCA to 256 dimensions, mean-pooled): no transformer forward at all,
so scoring a sentence costs microseconds instead of milliseconds (about 150x the
MiniLM throughput on the 2-core machines here). It is distilled offline, once per
machine, into the ctxzip cache (`ctxzip.models.converted_once`), and loaded once per
process (`ctxzip.models.cached`).

Alone it ranks a little worse than MiniLM; as a first stage it keeps the best
candidates (a few times the token budget) and MiniLM re-scores only those
(`ExtractiveCompressor(first_stage="static")`).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ctxzip.models import MINILM, cached, converted_once, resolve_model

STATIC_DIMS = 256


def static_model_dir(model_id: str = MINILM, dims: int = STATIC_DIMS) -> Path:
    """The distilled static model's folder, distilling it on first use (about 20 s)."""

    def build(folder: Path) -> None:
        from model2vec.distill import distill

        model = distill(model_name=resolve_model(model_id), pca_dims=dims)
        model.save_pretrained(str(folder))

    return converted_once(f"static-{model_id}-{dims}", build)


class StaticEncoder:
    """Unit-normalised float32 static embeddings (a dot product is the cosine)."""

    def __init__(self, model_id: str = MINILM, dims: int = STATIC_DIMS) -> None:
        from model2vec import StaticModel

        self.model_id = model_id
        self.model: Any = StaticModel.from_pretrained(str(static_model_dir(model_id, dims)))
        self.dims = dims

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dims), dtype=np.float32)
        vecs = np.asarray(self.model.encode(list(texts), show_progress_bar=False),
                          dtype=np.float32)  # fmt: skip
        norms = np.linalg.norm(vecs, axis=1, keepdims=True)
        return vecs / np.maximum(norms, 1e-12)


def get_static_encoder(model_id: str = MINILM, dims: int = STATIC_DIMS) -> StaticEncoder:
    """The process-wide static encoder for `model_id`."""
    return cached(("static-encoder", model_id, dims), lambda: StaticEncoder(model_id, dims))


def survivors(
    scores: np.ndarray, costs: Sequence[int], protected: Sequence[bool], budget: int,
    factor: float,
) -> list[int]:  # fmt: skip
    """Indices (in order) of the candidates worth a second look: every protected one,
    then the best-scoring ones until they hold `factor` x `budget` tokens."""
    keep = [i for i, p in enumerate(protected) if p]
    allowance = factor * budget
    held = 0
    for i in np.argsort(-scores, kind="stable"):
        i = int(i)
        if protected[i]:
            continue
        if held >= allowance:
            break
        keep.append(i)
        held += costs[i]
    return sorted(keep)


class CostMeter:
    """Seconds per item of some model work, as a moving average (thread-safe)."""

    def __init__(self, initial: float, weight: float = 0.2) -> None:
        self.per_item = initial
        self.weight = weight
        self._lock = threading.Lock()

    def record(self, items: int, seconds: float) -> None:
        if items <= 0:
            return
        with self._lock:
            self.per_item += self.weight * (seconds / items - self.per_item)

    def estimate(self, items: int) -> float:
        return items * self.per_item
