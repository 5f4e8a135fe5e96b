"""Index mechanics without a model: HNSW tombstones and IVF-PQ exact re-ranking."""

from __future__ import annotations

import numpy as np
import pytest

from ctxzip.errors import InputError
from ctxzip.retrievers import FaissStore

DIM = 32


def _clustered(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(40, DIM)) * 3
    return (centers[rng.integers(0, 40, n)] + rng.normal(size=(n, DIM))).astype(np.float32)


def _exact_top(base: np.ndarray, query: np.ndarray, k: int) -> list[int]:
    b = base / np.linalg.norm(base, axis=1, keepdims=True)
    return list(np.argsort(-(b @ (query / np.linalg.norm(query))), kind="stable")[:k])


def test_hnsw_hides_deleted_ids_keeps_k_results_and_reloads(tmp_path):
    vecs = _clustered(3000)
    ids = [f"d{i}" for i in range(3000)]
    store = FaissStore(dim=DIM, index="hnsw")
    store.add_texts([f"text {i}" for i in ids], ids=ids, vectors=vecs)
    gone = set(ids[:900])
    store.delete(ids[:900])
    assert store.stats()["index_vectors"] == 3000  # tombstones, not yet compacted
    for q in vecs[:20]:
        hits = store.search_by_vector(q, k=10)
        assert len(hits) == 10 and not gone & {h.id for h in hits}
    assert store.search_by_vector(vecs[1500], k=1)[0].id == "d1500"
    store.save(tmp_path / "s")
    loaded = FaissStore.load(tmp_path / "s")
    assert loaded.stats()["index_vectors"] == 3000
    hits = loaded.search_by_vector(vecs[0], k=10)
    assert len(hits) == 10 and not gone & {h.id for h in hits}
    loaded.delete(ids[900:2000])  # past a quarter of the index: compacted
    assert loaded.stats()["index_vectors"] == 1000
    assert loaded.search_by_vector(vecs[2500], k=1)[0].id == "d2500"


def test_ivfpq_reranks_candidates_with_exact_scores():
    base = _clustered(4000, seed=1)
    ids = [str(i) for i in range(len(base))]
    store = FaissStore(dim=DIM, index="ivfpq", train_min=2000, pq_m=8, pq_bits=6)
    store.add_texts([f"t{i}" for i in ids], ids=ids, vectors=base)
    assert store.stats()["index_active"] == "ivfpq"
    queries = _clustered(30, seed=2)
    recall = {}
    for rerank in (1, 8):
        found = 0
        for q in queries:
            hits = store.search_by_vector(q, k=10, rerank=rerank, nprobe=16)
            found += len({int(h.id) for h in hits} & set(_exact_top(base, q, 10)))
            if rerank > 1:  # exact cosine scores from the stored vectors, best first
                exact = [
                    float(base[int(h.id)] @ q / np.linalg.norm(base[int(h.id)]) / np.linalg.norm(q))
                    for h in hits
                ]
                np.testing.assert_allclose([h.score for h in hits], exact, atol=1e-5)
                assert exact == sorted(exact, reverse=True)
        recall[rerank] = found / (10 * len(queries))
    assert recall[8] > recall[1] and recall[8] >= 0.9, recall
    with pytest.raises(InputError):
        store.search_by_vector(queries[0], k=3, rerank=0)


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_inner_product_metric_scores_raw_dot_products(kind):
    rng = np.random.default_rng(3)
    vecs = (rng.normal(size=(200, DIM)) * rng.uniform(0.5, 3, size=(200, 1))).astype(np.float32)
    ids = [str(i) for i in range(200)]
    store = FaissStore(dim=DIM, index=kind, metric="ip")
    store.add_texts([f"t{i}" for i in ids], ids=ids, vectors=vecs)
    q = rng.normal(size=DIM).astype(np.float32)
    hits = store.search_by_vector(q, k=5)
    dots = vecs @ q
    assert [int(h.id) for h in hits] == list(np.argsort(-dots)[:5])
    np.testing.assert_allclose([h.score for h in hits], np.sort(dots)[::-1][:5], rtol=1e-4)
    np.testing.assert_array_equal(store.get_vectors(["7"])[0], vecs[7])  # stored as given
