"""The store as a LangChain VectorStore and retriever, inside a ContextualCompressionRetriever."""

from __future__ import annotations

import pytest
from langchain_core.documents import Document
from langchain_core.vectorstores import VectorStore

from ctxzip.retrievers import FaissStore, SentenceTransformerEmbedder
from ctxzip.retrievers.langchain import CtxzipVectorStore, EmbedderEmbeddings

TEXTS = [
    "The Amazon is the largest rainforest on Earth.",
    "The Sahara is the largest hot desert in the world.",
    "Antarctica is the coldest continent and a polar desert.",
    "Python is a programming language created by Guido van Rossum.",
    "Rust guarantees memory safety without a garbage collector.",
]
META = [{"kind": "geo"}, {"kind": "geo"}, {"kind": "geo"}, {"kind": "code"}, {"kind": "code"}]


@pytest.fixture(scope="module")
def embeddings() -> EmbedderEmbeddings:
    return EmbedderEmbeddings(SentenceTransformerEmbedder())


@pytest.fixture
def vs(embeddings) -> CtxzipVectorStore:
    return CtxzipVectorStore.from_texts(
        TEXTS,
        embeddings,
        META,
        ids=[f"t{i}" for i in range(5)],
        model_id="sentence-transformers/all-MiniLM-L6-v2",
        index="hnsw",
    )


def test_vectorstore_interface(vs):
    assert isinstance(vs, VectorStore)
    docs = vs.similarity_search("hottest sandy place", k=1)
    assert docs[0].id == "t1" and docs[0].metadata == {"kind": "geo"}
    scored = vs.similarity_search_with_relevance_scores("memory-safe systems language", k=2)
    assert scored[0][0].id == "t4" and 0.0 <= scored[1][1] <= scored[0][1] <= 1.0
    assert [d.id for d in vs.similarity_search("language", k=5, filter={"kind": "geo"})] != []
    assert {
        d.metadata["kind"] for d in vs.similarity_search("language", k=5, filter={"kind": "geo"})
    } == {"geo"}
    vec = vs.embeddings.embed_query("cold polar continent")
    assert vs.similarity_search_by_vector(vec, k=1)[0].id == "t2"
    assert len(vs.max_marginal_relevance_search("desert", k=2, fetch_k=5)) == 2
    assert vs.similarity_search("Guido", k=1, hybrid=True)[0].id == "t3"

    ids = vs.add_documents(
        [Document(page_content="Go has goroutines.", metadata={"kind": "code"}, id="go")]
    )
    assert (
        ids == ["go"] and vs.get_by_ids(["go", "missing"])[0].page_content == "Go has goroutines."
    )
    vs.add_texts(["Go has goroutines and channels."], ids=["go"])  # LangChain add = upsert
    assert vs.get_by_ids(["go"])[0].page_content.endswith("channels.")
    assert vs.delete(["go"]) is True and vs.get_by_ids(["go"]) == []


def test_as_retriever_search_types(vs):
    assert vs.as_retriever(search_kwargs={"k": 1}).invoke("rainforest")[0].id == "t0"
    mmr = vs.as_retriever(search_type="mmr", search_kwargs={"k": 2, "fetch_k": 5}).invoke("desert")
    assert len(mmr) == 2 and len({d.id for d in mmr}) == 2
    thresholded = vs.as_retriever(
        search_type="similarity_score_threshold", search_kwargs={"score_threshold": 0.75, "k": 5}
    ).invoke("rainforest")
    assert [d.id for d in thresholded] == ["t0"]
    hybrid = vs.as_retriever(search_kwargs={"k": 2, "hybrid": True, "filter": {"kind": "code"}})
    assert {d.metadata["kind"] for d in hybrid.invoke("garbage collector")} == {"code"}


def test_save_load_without_pickle(vs, embeddings, tmp_path):
    vs.save(tmp_path / "vs")
    assert not list((tmp_path / "vs").rglob("*.pkl"))
    again = CtxzipVectorStore.load(
        tmp_path / "vs", embeddings, model_id="sentence-transformers/all-MiniLM-L6-v2"
    )
    assert again.similarity_search("rainforest", k=1)[0].id == "t0"


def test_contextual_compression_retriever_with_the_ctxzip_compressor(vs):
    lc = pytest.importorskip("ctxzip.middleware.langchain")
    from langchain_classic.retrievers import ContextualCompressionRetriever

    retriever = ContextualCompressionRetriever(
        base_compressor=lc.CtxzipDocumentCompressor(method="truncate", rate=0.5),
        base_retriever=vs.as_retriever(search_kwargs={"k": 2}),
    )
    docs = retriever.invoke("largest desert")
    assert docs and {d.id for d in docs} <= {"t0", "t1", "t2"}
    originals = {d.id: d.page_content for d in vs.get_by_ids([d.id for d in docs])}
    assert sum(len(d.page_content) for d in docs) < sum(len(t) for t in originals.values())


def test_store_built_natively_is_usable_from_langchain():
    store = FaissStore()
    store.add_texts(TEXTS, META)
    assert CtxzipVectorStore(store).similarity_search("Rossum", k=1)[0].metadata == {"kind": "code"}
