"""`ctxzip index --engine ray`: chunking and embedding on Ray workers, the same store as local."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ctxzip.cli import main
from ctxzip.evals.datasets import load_dataset
from ctxzip.retrievers.backends import open_store
from ctxzip.retrievers.ingest import encoder_batches


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("docs")
    items = load_dataset("pyref")[:10]
    passages = list(dict.fromkeys(c for it in items for c in it.contexts))
    with (folder / "passages.jsonl").open("w") as fh:
        for n, text in enumerate(passages):
            fh.write(json.dumps({"id": f"p{n}", "text": text, "topic": "pyref"}) + "\n")
    (folder / "long.md").write_text("\n\n".join(passages[:12]))  # several chunks
    (folder / "dup.txt").write_text(passages[0])  # a text the JSONL holds too
    return folder


def assert_same_vectors(local: np.ndarray, remote: np.ndarray) -> None:
    """The same model on the same batches, equal to float32 noise: a GEMM split over another
    thread count (Ray workers run with OMP_NUM_THREADS=1, the suite's process with whatever
    the tests before it left) may round the last bit differently."""
    assert local.shape == remote.shape
    np.testing.assert_allclose(local, remote, rtol=0, atol=1e-6)


def test_encoder_batches_follow_the_encoder() -> None:
    texts = ["ccc", "a", "bb", "a", "dddd", "e"]
    assert encoder_batches(texts, 2) == [["a", "e"], ["bb", "ccc"], ["dddd"]]


@pytest.mark.slow
@pytest.mark.ray
def test_ray_index_holds_the_same_chunks_and_vectors(
    corpus: Path, tmp_path: Path, ray_local: Any
) -> None:
    local, remote = tmp_path / "local", tmp_path / "ray"
    args = ["--chunk-tokens", "64", "--overlap", "8"]
    assert main(["index", str(corpus), "--store", str(local), *args]) == 0
    assert main(["index", str(corpus), "--store", str(remote), *args,
                 "--engine", "ray", "--workers", "2"]) == 0  # fmt: skip
    a, b = open_store(local), open_store(remote)
    try:
        ids = sorted(a.ids_where())
        assert len(ids) > 20 and ids == sorted(b.ids_where())
        docs_a, docs_b = a.get(ids), b.get(ids)
        assert [(d.text, d.metadata) for d in docs_a if d] == [
            (d.text, d.metadata) for d in docs_b if d
        ]
        va, vb = a.get_vectors(ids), b.get_vectors(ids)
        assert va.dtype == vb.dtype == np.float32
        assert_same_vectors(va, vb)
        query = "How are underscores used in integer literals?"
        assert [h.id for h in a.search(query, 5)] == [h.id for h in b.search(query, 5)]
    finally:
        a.close()
        b.close()


@pytest.mark.slow
@pytest.mark.ray
def test_ray_ingest_into_the_qdrant_backend(corpus: Path, ray_local: Any) -> None:
    from ctxzip.retrievers.qdrant_backend import QdrantStore

    stores = [QdrantStore(collection="local"), QdrantStore(collection="ray")]
    try:
        stores[0].ingest([corpus], chunk_tokens=64, overlap_tokens=8)
        stores[1].ingest([corpus], chunk_tokens=64, overlap_tokens=8, engine="ray", workers=2)
        ids = sorted(stores[0].ids_where())
        assert ids == sorted(stores[1].ids_where()) and len(ids) > 20
        assert_same_vectors(stores[0].get_vectors(ids), stores[1].get_vectors(ids))
    finally:
        for store in stores:
            store.close()
