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
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ctxzip.models import MINILM, cached, converted_once, resolve_model
from ctxzip.result import CompressionRequest

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


class _Piece(Protocol):
    text: str
    cost: int
    protected: bool
    ctx: int


class _Encoder(Protocol):
    def encode(self, texts: Sequence[str], progress: bool = False) -> np.ndarray: ...


Narrowed = tuple[list[int], np.ndarray, "np.ndarray | None", bool]


def centrality(ctx: Sequence[int], emb: np.ndarray) -> np.ndarray:
    """Cosine of each row to its own context's centroid (the no-query score)."""
    ids = np.asarray(ctx)
    scores = np.zeros(len(ids))
    for c in np.unique(ids):
        rows = ids == c
        centroid = emb[rows].mean(axis=0)
        norm = np.linalg.norm(centroid)
        scores[rows] = emb[rows] @ (centroid / norm) if norm > 0 else 0.0
    return scores


class FirstStage:
    """Static scoring of every piece, then the encoder on the survivors.

    `survivors`: how many budgets' worth of tokens survive (protected pieces always do).
    `second_stage_s`: the most encoder time one batch may spend (estimated from the
    measured seconds per sentence); requests past it are selected on static scores
    alone (None: the encoder always runs on survivors). While `busy` (a server with
    work queued behind this batch says so), the encoder does not run at all.
    """

    def __init__(self, survivors: float = 2.0, second_stage_s: float | None = 0.3) -> None:
        if survivors < 1.0:
            raise ValueError(f"survivors must be >= 1 (budgets), got {survivors}")
        self.factor = survivors
        self.second_stage_s = second_stage_s
        self.meter = CostMeter(1 / 150)  # MiniLM on this kind of CPU, until measured
        self.busy = False  # set by a caller with work waiting: static scores only

    @classmethod
    def make(cls, kind: str | None, survivors: float = 2.0,
             second_stage_s: float | None = 0.3) -> FirstStage | None:  # fmt: skip
        if kind in (None, "none"):
            return None
        if kind != "static":
            raise ValueError(f"first_stage must be 'static' or None, got {kind!r}")
        return cls(survivors, second_stage_s)

    def narrow(
        self,
        requests: Sequence[CompressionRequest],
        plans: Sequence[tuple[Sequence[_Piece], Any, int]],
        encoder: _Encoder,
    ) -> list[Narrowed]:
        """Per request: surviving piece indices, their vectors, the query vector, and
        whether those came from `encoder` (else static)."""
        static = get_static_encoder()
        texts: list[str] = []
        for r, (pieces, _, _) in zip(requests, plans, strict=True):
            texts += ([r.query] if r.query is not None else []) + [p.text for p in pieces]
        vecs = static.encode(texts)
        staged: list[tuple[list[int], np.ndarray, np.ndarray | None]] = []
        row = 0
        for r, (pieces, _, budget) in zip(requests, plans, strict=True):
            q = None
            if r.query is not None:
                q, row = vecs[row], row + 1
            emb, row = vecs[row : row + len(pieces)], row + len(pieces)
            scores = emb @ q if q is not None else centrality([p.ctx for p in pieces], emb)
            kept = survivors(scores, [p.cost for p in pieces], [p.protected for p in pieces],
                             budget, self.factor)  # fmt: skip
            staged.append((kept, emb[kept], q))
        # the encoder re-scores survivors, request by request, while the time allows
        full: list[bool] = []
        planned = 0
        for r, (kept, _, _) in zip(requests, staged, strict=True):
            n = len(kept) + (r.query is not None)
            ok = not self.busy and (
                self.second_stage_s is None
                or self.meter.estimate(planned + n) <= self.second_stage_s
            )
            full.append(ok and n > 0)
            planned += n if ok else 0
        chosen = [i for i, f in enumerate(full) if f]
        if chosen:
            batch: list[str] = []
            for i in chosen:
                r, (kept, _, _), pieces = requests[i], staged[i], plans[i][0]
                batch += ([r.query] if r.query is not None else []) + [pieces[k].text for k in kept]
            start = time.perf_counter()
            encoded = encoder.encode(batch)
            self.meter.record(len(batch), time.perf_counter() - start)
            row = 0
            for i in chosen:
                kept, _, _ = staged[i]
                q = None
                if requests[i].query is not None:
                    q, row = encoded[row], row + 1
                staged[i] = (kept, encoded[row : row + len(kept)], q)
                row += len(kept)
        return [(k, e, q, f) for (k, e, q), f in zip(staged, full, strict=True)]
