"""The store API on real all-MiniLM-L6-v2 embeddings, the same tests for every backend."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ctxzip.errors import InputError
from ctxzip.retrievers import (
    Document,
    FaissStore,
    SentenceTransformerEmbedder,
    StoreCorruptError,
    StoreError,
    StoreMismatchError,
    open_store,
)
from ctxzip.retrievers.qdrant_backend import QdrantStore

DOCS = {
    "cats": (
        "Cats are small domesticated felines that purr and chase mice.",
        {"topic": "animals", "year": 2019},
    ),
    "dogs": (
        "Dogs are loyal canines, often kept as pets and trained to herd sheep.",
        {"topic": "animals", "year": 2021},
    ),
    "paris": (
        "Paris is the capital of France, famous for the Eiffel Tower.",
        {"topic": "geo", "year": 2020},
    ),
    "tokyo": (
        "Tokyo is the capital of Japan and its largest city.",
        {"topic": "geo", "year": 2022},
    ),
    "faiss": (
        "FAISS is a library for efficient similarity search of dense vectors.",
        {"topic": "tech", "year": 2017},
    ),
    "sqlite": (
        "SQLite is an embedded SQL database engine stored in a single file.",
        {"topic": "tech", "year": 2000},
    ),
    "kitten": (
        "A kitten is a young cat; kittens sleep a lot and play with yarn.",
        {"topic": "animals", "year": 2023},
    ),
    "zx81": (
        "The ZX81 home computer shipped with 1 KB of RAM in 1981.",
        {"topic": "tech", "year": 1981, "tags": {"era": "retro"}},
    ),
}


class CachedEmbedder(SentenceTransformerEmbedder):
    """The real model, remembering texts it has embedded (the tests repeat them a lot)."""

    def __init__(self) -> None:
        super().__init__()
        self.cache: dict[str, np.ndarray] = {}

    def embed(self, texts, progress=None):
        todo = [t for t in dict.fromkeys(texts) if t not in self.cache]
        if todo:
            self.cache.update(zip(todo, super().embed(todo, progress), strict=True))
        return np.stack([self.cache[t] for t in texts]) if len(texts) else super().embed([])


@pytest.fixture(scope="module")
def embedder() -> SentenceTransformerEmbedder:
    return CachedEmbedder()


@pytest.fixture(params=["flat", "hnsw", "ivfpq", "qdrant"])
def store(request, embedder):
    if request.param == "qdrant":
        s = QdrantStore(model=embedder, collection=f"t{id(request)}")
    else:
        s = FaissStore(model=embedder, index=request.param)
    s.add_texts([t for t, _ in DOCS.values()], [m for _, m in DOCS.values()], list(DOCS))
    yield s
    s.close()


def test_search_ranks_by_meaning(store):
    hits = store.search("Which city is Japan's capital?", k=3)
    assert hits[0].id == "tokyo"
    assert hits[0].score > hits[1].score >= hits[2].score
    assert {h.id for h in store.search("young cats", k=2)} == {"kitten", "cats"}


def test_filters_thresholds_and_operators(store):
    hits = store.search("pets", k=8, filter={"topic": "geo"})
    assert {h.id for h in hits} == {"paris", "tokyo"}
    hits = store.search("computer", k=8, filter={"year": {"$gte": 2017, "$lt": 2021}})
    assert {h.id for h in hits} == {"faiss", "cats", "paris"}
    assert {
        h.id
        for h in store.search("x", k=8, filter={"topic": ["geo", "tech"], "year": {"$ne": 2000}})
    } == {"paris", "tokyo", "faiss", "zx81"}
    assert [h.id for h in store.search("old computer", k=8, filter={"tags.era": "retro"})] == [
        "zx81"
    ]
    assert store.search("anything", k=8, filter={"missing": {"$ne": 1}}) == []
    top = store.search("capital of France", k=8)
    cut = top[0].score - 1e-6
    assert [h.id for h in store.search("capital of France", k=8, score_threshold=cut)] == ["paris"]
    with pytest.raises(InputError):
        store.search("x", filter={"topic": {"$regex": "g"}})
    with pytest.raises(InputError):
        store.search("x", filter={"bad key'": 1})


def test_add_upsert_delete_get(store, embedder):
    assert len(store) == len(DOCS)
    with pytest.raises(StoreError, match="already exists"):
        store.add_texts(["Cats again."], ids=["cats"])
    store.upsert_texts(["Berlin is the capital of Germany."], [{"topic": "geo"}], ids=["paris"])
    assert len(store) == len(DOCS)
    assert store.get(["paris"])[0] == Document(
        "paris", "Berlin is the capital of Germany.", {"topic": "geo"}
    )
    assert store.search("capital of Germany", k=1)[0].id == "paris"
    assert store.delete(["dogs", "nope"]) == 1
    assert store.get(["dogs", "cats"])[0] is None
    assert "dogs" not in {h.id for h in store.search("loyal canine pets", k=8)}
    assert len(store) == len(DOCS) - 1
    assert store.delete_where({"topic": "geo"}) == 2
    assert sorted(store.ids_where()) == sorted(set(DOCS) - {"dogs", "paris", "tokyo"})


def test_vectors_read_back_by_id(store, embedder):
    ids = ["faiss", "cats"]
    vecs = store.get_vectors(ids)
    assert vecs.shape == (2, 384) and vecs.dtype == np.float32
    expected = embedder.embed([DOCS[i][0] for i in ids])
    np.testing.assert_allclose(vecs, expected, atol=1e-5)
    with pytest.raises(KeyError, match="nope"):
        store.get_vectors(["cats", "nope"])


def test_mmr_diversifies(store):
    plain = [h.id for h in store.search("cats and kittens", k=2)]
    assert set(plain) == {"cats", "kitten"}
    diverse = [h.id for h in store.mmr_search("cats and kittens", k=2, fetch_k=8, lambda_mult=0.1)]
    assert diverse[0] in plain and diverse[1] not in plain


def test_hybrid_fuses_bm25_and_vectors(store):
    # "ZX81" is a rare exact term: BM25 finds it, and RRF keeps it on top.
    hits = store.hybrid_search("ZX81", k=3)
    assert hits[0].id == "zx81" and hits[0].extra["bm25_rank"] == 1
    expected = 1 / (60 + hits[0].extra["vector_rank"]) + 1 / (60 + 1)
    assert hits[0].score == pytest.approx(expected)
    only_bm25 = store.hybrid_search("embedded database engine", k=2, vector_weight=0.0)
    assert only_bm25[0].id == "sqlite" and "vector_rank" not in only_bm25[0].extra
    filtered = store.hybrid_search("capital", k=4, filter={"topic": "animals"})
    assert {h.metadata["topic"] for h in filtered} == {"animals"}


def test_bad_input_is_refused_and_nothing_is_lost(store):
    before = len(store)
    for texts, kwargs in [
        (["ok", "  "], {}),
        (["ok", b"\xff"], {}),
        (["a", "b"], {"ids": ["x", "x"]}),
        (["a"], {"metadatas": [{"f": object()}]}),
        (["a"], {"metadatas": [{"f": float("nan")}]}),
        ("a single string", {}),
        (["a"], {"vectors": np.zeros((1, 7))}),
    ]:
        with pytest.raises((InputError, StoreMismatchError)):
            store.add_texts(texts, **kwargs)
    assert len(store) == before
    with pytest.raises(InputError):
        store.search("x", k=0)
    with pytest.raises(InputError):
        store.search("   ")


def test_save_load_roundtrip_and_manifest(tmp_path, embedder):
    s = FaissStore(model=embedder, index="hnsw")
    s.add_texts([t for t, _ in DOCS.values()], [m for _, m in DOCS.values()], list(DOCS))
    s.delete(["dogs"])
    s.save(tmp_path / "st")
    manifest = json.loads((tmp_path / "st" / "manifest.json").read_text())
    assert manifest["embedding_model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert manifest["dim"] == 384 and manifest["index"]["kind"] == "hnsw"
    assert manifest["counts"] == {"documents": len(DOCS) - 1, "index_vectors": len(DOCS)}
    assert manifest["format_version"] == 1
    assert not list((tmp_path / "st").rglob("*.pkl"))
    loaded = FaissStore.load(tmp_path / "st", model=embedder)
    assert {h.id for h in loaded.search("young cats", k=2)} == {"kitten", "cats"}
    assert "dogs" not in loaded.ids_where()
    np.testing.assert_array_equal(loaded.get_vectors(["tokyo"]), s.get_vectors(["tokyo"]))
    loaded.add_texts(["Rome is the capital of Italy."], ids=["rome"])
    loaded.save()  # back to where it came from, as a new generation
    assert [p.name for p in (tmp_path / "st").glob("gen-*")] == ["gen-000002"]
    assert open_store(tmp_path / "st", model=embedder).search("Italy", k=1)[0].id == "rome"


class OtherModel:
    model_id = "some/other-model"
    dim = 384

    def embed(self, texts, progress=None):
        raise AssertionError("never called")


class OtherDim:
    model_id = "sentence-transformers/all-MiniLM-L6-v2"
    dim = 768

    def embed(self, texts, progress=None):
        raise AssertionError("never called")


def test_load_refuses_other_model_dimension_or_tampering(tmp_path, embedder):
    s = FaissStore(model=embedder)
    s.add_texts(["one text"], ids=["a"])
    s.save(tmp_path)
    with pytest.raises(StoreMismatchError, match="other-model"):
        FaissStore.load(tmp_path, model="some/other-model")
    with pytest.raises(StoreMismatchError, match="other-model"):
        FaissStore.load(tmp_path, model=OtherModel())
    with pytest.raises(StoreMismatchError, match="768"):
        FaissStore.load(tmp_path, model=OtherDim())
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    index_file = tmp_path / manifest["files"]["index"]["path"]
    index_file.write_bytes(index_file.read_bytes()[:-4] + b"oops")
    with pytest.raises(StoreCorruptError, match="checksum"):
        FaissStore.load(tmp_path, model=embedder)
    manifest["format_version"] = 99
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(StoreMismatchError, match="format version"):
        FaissStore.load(tmp_path)
    with pytest.raises(FileNotFoundError):
        FaissStore.load(tmp_path / "nothing-here")


def test_embedder_batches_and_warns_on_texts_longer_than_the_window(embedder, caplog):
    long_text = "word " * 600
    plain = SentenceTransformerEmbedder(batch_size=2)
    with caplog.at_level("WARNING", logger="ctxzip.retrievers"):
        vecs = plain.embed(["short", long_text, "another short one"], progress=False)
    assert vecs.shape == (3, 384)
    assert "exceed the 256-token window" in caplog.text
    # Sorting by length and batching must not change which vector goes with which text.
    np.testing.assert_allclose(vecs[2], plain.embed(["another short one"])[0], atol=1e-5)
