"""Static sentence embeddings distilled once from the packaged MiniLM: a fast first stage.

`model2vec` turns the packaged all-MiniLM-L6-v2 into a static model (one vector per
vocabulary token, PCA to 256 dimensions, mean-pooled): no transformer forward at all,
so scoring a sentence costs microseconds instead of milliseconds (about 150x the
MiniLM throughput on the 2-core machines here). It is distilled offline, once per
machine, into the ctxzip cache (`ctxzip.models.converted_once`), and loaded once per
process (`ctxzip.models.cached`).

Against a query, its cosine is fused with a token-by-token match on the same static
vectors and with BM25 (`Fusion`): alone it then keeps answers about as often as
MiniLM (docs/proxy.md, "The fast text path"). As a first stage it keeps the best
candidates (a few times the token budget) and MiniLM re-scores only those, when time
allows (`ExtractiveCompressor(first_stage="static")`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ctxzip.lexical import bm25_scores
from ctxzip.models import MINILM, cached, converted_once, resolve_model
from ctxzip.result import CompressionRequest

STATIC_DIMS = 256


@dataclass(frozen=True)
class Fusion:
    """Weights of the first stage's static score of a sentence against a query, every
    part standardised over the request's sentences: the semantic side, the static
    cosine plus `tokens` x the token match (`StaticEncoder.token_match`), standardised
    again as one; plus `lexical` x the sentence's BM25; plus `document` x its context's
    BM25 against the other contexts. All 0: the cosine alone (the first stage as it was).

    The defaults were chosen on the `tune` half of `benchmarks/bench_static_stage.py`
    (tokens 0-2, lexical 0-2, document 0-1; also tried and dropped: rank fusion,
    neighbour smoothing, a bonus from the preceding sentence, a token match weighted by
    the distilled token weights), and are reported on the `test` half (docs/proxy.md),
    where the gain over the cosine alone is small."""

    tokens: float = 1.0
    lexical: float = 1.0
    document: float = 0.5

    def __post_init__(self) -> None:
        if min(self.tokens, self.lexical, self.document) < 0:
            raise ValueError(f"fusion weights must be >= 0, got {self}")


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
        table = np.asarray(self.model.embedding, dtype=np.float32)
        norms = np.linalg.norm(table, axis=1, keepdims=True)
        self._tokens = table / np.maximum(norms, 1e-12)  # unit token vectors

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dims), dtype=np.float32)
        vecs = np.asarray(self.model.encode(list(texts), show_progress_bar=False),
                          dtype=np.float32)  # fmt: skip
        norms = np.linalg.norm(vecs, axis=1, keepdims=True)
        return vecs / np.maximum(norms, 1e-12)

    def token_match(self, query: str, texts: Sequence[str]) -> np.ndarray:
        """Per text: the mean, over the query's tokens, of each one's best cosine with
        any of the text's tokens (late interaction on the static token vectors). Unlike
        the mean-pooled cosine, one query term matched well counts in full however
        long the sentence is."""
        ids = self.model.tokenize([query, *texts])
        out = np.zeros(len(texts))
        lengths = np.array([len(t) for t in ids[1:]])
        if not ids[0] or not lengths.sum():
            return out
        sims = self._tokens[ids[0]] @ self._tokens[np.concatenate(ids[1:])].T
        starts = np.r_[0, np.cumsum(lengths)[:-1]]
        full = lengths > 0
        out[full] = np.maximum.reduceat(sims, starts[full], axis=1).mean(axis=0)
        return out


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


Narrowed = tuple[list[int], np.ndarray, "np.ndarray | None", np.ndarray, bool]


def standardised(x: np.ndarray) -> np.ndarray:
    """(x - mean) / std; zeros where every value is the same."""
    std = float(x.std()) if x.size else 0.0
    return (x - x.mean()) / std if std > 0 else np.zeros_like(x, dtype=np.float64)


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

    With a query, a piece's static score fuses its static cosine with a token match and
    BM25 of the sentence and of its context (`Fusion`): the static model averages token
    vectors, so a rare query term (an identifier, a number, a name) weighs little in
    it; matching tokens one by one and BM25 restore that, and an answer sentence that
    repeats none of the question's words still gains from sitting in the document that
    does.
    `survivors`: how many budgets' worth of tokens survive (protected pieces always do).
    `second_stage_s`: the most encoder time one batch may spend (estimated from the
    measured seconds per sentence); requests past it are selected on static scores
    alone (None: the encoder always runs on survivors). While `busy` (a server with
    work queued behind this batch says so), the encoder does not run at all.
    """

    def __init__(self, survivors: float = 2.0, second_stage_s: float | None = 0.3,
                 fusion: Fusion | None = None) -> None:  # fmt: skip
        if survivors < 1.0:
            raise ValueError(f"survivors must be >= 1 (budgets), got {survivors}")
        self.factor = survivors
        self.fusion = fusion or Fusion()
        self.second_stage_s = second_stage_s
        self.meter = CostMeter(1 / 150)  # MiniLM on this kind of CPU, until measured
        self.busy = False  # set by a caller with work waiting: static scores only

    @classmethod
    def make(cls, kind: str | None, survivors: float = 2.0, second_stage_s: float | None = 0.3,
             fusion: Fusion | None = None) -> FirstStage | None:  # fmt: skip
        if kind in (None, "none"):
            return None
        if kind != "static":
            raise ValueError(f"first_stage must be 'static' or None, got {kind!r}")
        return cls(survivors, second_stage_s, fusion)

    def scores(self, query: str | None, pieces: Sequence[_Piece], emb: np.ndarray,
               q: np.ndarray | None) -> np.ndarray:  # fmt: skip
        """Static scores of one request's pieces (`emb` their vectors, `q` the query's;
        see `Fusion`); with no query, each piece's closeness to its context's centroid."""
        if q is None:
            return centrality([p.ctx for p in pieces], emb)
        cosine = (emb @ q).astype(np.float64)
        w = self.fusion
        if not query or not (w.tokens or w.lexical or w.document):
            return cosine
        texts = [p.text for p in pieces]
        out = standardised(cosine)
        if w.tokens:  # the semantic side, cosine and token match, standardised as one
            match = get_static_encoder().token_match(query, texts)
            out = standardised(out + w.tokens * standardised(match))
        if w.lexical:
            out += w.lexical * standardised(bm25_scores(query, texts))
        ctx = np.array([p.ctx for p in pieces])
        ids = np.unique(ctx)
        if w.document and len(ids) > 1:
            docs = [" ".join(p.text for p in pieces if p.ctx == c) for c in ids]
            doc = standardised(bm25_scores(query, docs))
            out += w.document * doc[np.searchsorted(ids, ctx)]
        return out

    def narrow(
        self,
        requests: Sequence[CompressionRequest],
        plans: Sequence[tuple[Sequence[_Piece], Any, int]],
        encoder: _Encoder,
    ) -> list[Narrowed]:
        """Per request: surviving piece indices, their vectors, the query vector, their
        static scores, and whether the vectors came from `encoder` (else static)."""
        static = get_static_encoder()
        texts: list[str] = []
        for r, (pieces, _, _) in zip(requests, plans, strict=True):
            texts += ([r.query] if r.query is not None else []) + [p.text for p in pieces]
        vecs = static.encode(texts)
        staged: list[tuple[list[int], np.ndarray, np.ndarray | None]] = []
        static_scores: list[np.ndarray] = []
        row = 0
        for r, (pieces, _, budget) in zip(requests, plans, strict=True):
            q = None
            if r.query is not None:
                q, row = vecs[row], row + 1
            emb, row = vecs[row : row + len(pieces)], row + len(pieces)
            scores = self.scores(r.query, pieces, emb, q)
            kept = survivors(scores, [p.cost for p in pieces], [p.protected for p in pieces],
                             budget, self.factor)  # fmt: skip
            staged.append((kept, emb[kept], q))
            static_scores.append(scores[kept])
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
        return [
            (k, e, q, s, f) for (k, e, q), s, f in zip(staged, static_scores, full, strict=True)
        ]
