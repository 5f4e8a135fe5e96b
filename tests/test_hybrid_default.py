"""Hybrid (dense + BM25, RRF) is the default in `ctxzip search`, LangChain and the eval harness."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ctxzip.cli import main
from ctxzip.evals.datasets import QAItem, attach_retrieved
from ctxzip.retrievers import FaissStore
from ctxzip.retrievers.langchain import CtxzipVectorStore, use_hybrid

TEXTS = {
    "rust": "Rust is a memory-safe systems programming language without a garbage collector.",
    "sahara": "The Sahara is the largest hot desert, with sand dunes and rocky plateaus.",
    "zx81": "The ZX81 home computer from Sinclair had 1 KB of memory.",
    "python": "Python was created by Guido van Rossum and uses reference counting.",
    "amazon": "The Amazon rainforest is the largest tropical rainforest on Earth.",
}


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("store")
    store = FaissStore()
    store.add_texts(list(TEXTS.values()), ids=list(TEXTS), progress=False)
    store.save(folder)
    return folder


def _search(store_dir: Path, capsys: Any, *args: str) -> list[dict[str, Any]]:
    assert main(["search", "--store", str(store_dir), "--json", "-k", "3", *args]) == 0
    return [json.loads(x) for x in capsys.readouterr().out.splitlines()]


def test_search_is_hybrid_unless_dense_only(store_dir: Path, capsys: Any) -> None:
    hybrid = _search(store_dir, capsys, "ZX81 memory")
    assert hybrid[0]["id"] == "zx81" and "bm25_rank" in hybrid[0] and "vector_rank" in hybrid[0]
    assert hybrid == _search(store_dir, capsys, "--hybrid", "ZX81 memory")  # the old flag
    dense = _search(store_dir, capsys, "--dense-only", "ZX81 memory")
    assert all("bm25_rank" not in h for h in dense) and dense[0]["score"] > 0.3
    # a threshold is a similarity: it means a dense search
    assert all("bm25_rank" not in h for h in _search(store_dir, capsys, "--threshold", "0", "x"))
    assert main(["search", "--store", str(store_dir), "--hybrid", "--dense-only", "q"]) == 2


def test_langchain_retriever_is_hybrid_by_default(store_dir: Path) -> None:
    vs = CtxzipVectorStore(FaissStore.load(store_dir))
    docs = vs.as_retriever(search_kwargs={"k": 2}).invoke("Guido")
    assert docs[0].id == "python"
    hybrid = vs.similarity_search_with_score("Guido", k=2)
    dense = vs.similarity_search_with_score("Guido", k=2, dense_only=True)
    assert hybrid[0][1] < 0.05 < dense[0][1]  # fused RRF scores vs cosine similarities
    assert vs.similarity_search_with_score("Guido", k=2, hybrid=False) == dense
    assert len(vs.similarity_search("Guido", k=2, ef_search=32, bm25_weight=0.5)) == 2
    assert vs.similarity_search("desert", k=1, dense_only=True, bm25_weight=2.0)[0].id == "sahara"
    relevance = vs.similarity_search_with_relevance_scores("desert", k=1)
    assert relevance[0][0].id == "sahara" and 0.0 <= relevance[0][1] <= 1.0


def test_use_hybrid_switches() -> None:
    assert use_hybrid({}) and not use_hybrid({"dense_only": True})
    assert not use_hybrid({"hybrid": False}) and use_hybrid({"hybrid": True})
    assert not use_hybrid({"score_threshold": 0.5})
    assert use_hybrid({"score_threshold": 0.01, "hybrid": True})
    kwargs = {"hybrid": True, "dense_only": False, "k": 3}
    use_hybrid(kwargs)
    assert kwargs == {"k": 3}


def test_eval_store_retriever_is_hybrid_unless_dense_only() -> None:
    def items() -> list[QAItem]:
        return [QAItem(id="q", question="Which ZX81 computer maker?", answers=["Sinclair"])]

    hybrid, dense = items(), items()
    attach_retrieved(hybrid, TEXTS, top_k=2)
    attach_retrieved(dense, TEXTS, top_k=2, dense_only=True)
    store = FaissStore()
    store.add_texts(list(TEXTS.values()), ids=list(TEXTS), progress=False)
    q = hybrid[0].question
    assert hybrid[0].metadata["retrieved_ids"] == [h.id for h in store.hybrid_search(q, 2)]
    assert dense[0].metadata["retrieved_ids"] == [h.id for h in store.search(q, 2)]
