"""Chunking, ingest of files / folders / JSONL, and the `ctxzip index` / `ctxzip search` CLI."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from ctxzip.cli import main
from ctxzip.errors import InputError
from ctxzip.retrievers import FaissStore
from ctxzip.retrievers.chunking import chunk_text
from ctxzip.tokens import get_tokenizer

MODEL = "sentence-transformers/all-MiniLM-L6-v2"
ARTICLE = (
    "The Eiffel Tower was completed in 1889 for the World's Fair. It is 330 metres tall. "
    "Gustave Eiffel's company designed and built it.\n\n"
    "Photosynthesis turns light, water and carbon dioxide into sugar and oxygen. "
    "Chlorophyll absorbs mostly blue and red light.\n\n"
    + " ".join(f"Filler sentence number {i} talks about nothing in particular." for i in range(40))
)


def test_chunks_respect_the_token_limit_overlap_and_offsets():
    tok = get_tokenizer(MODEL)
    chunks = chunk_text(ARTICLE, tok, chunk_tokens=60, overlap_tokens=20)
    assert len(chunks) > 5
    for c in chunks:
        assert ARTICLE[c.start : c.end] == c.text
        assert tok.count(c.text) <= 60 + 2  # counts of joined pieces may differ by a token
    assert chunks[0].start == 0 and chunks[-1].end == len(ARTICLE.rstrip())
    overlaps = [b.start < a.end for a, b in itertools.pairwise(chunks)]
    assert all(overlaps)  # sentences here are short enough to overlap every time
    covered = set()
    for c in chunks:
        covered.update(range(c.start, c.end))
    assert all(i in covered for i, ch in enumerate(ARTICLE) if not ch.isspace())


def test_words_longer_than_a_chunk_are_cut_and_bad_settings_refused():
    blob = "x" * 5000
    chunks = chunk_text(f"Intro. {blob} outro.", MODEL, chunk_tokens=50, overlap_tokens=0)
    assert "".join(c.text for c in chunks).replace(" ", "") == f"Intro.{blob}outro."
    assert max(c.tokens for c in chunks) <= 50
    with pytest.raises(InputError):
        chunk_text("x", MODEL, chunk_tokens=10, overlap_tokens=10)


@pytest.fixture
def corpus(tmp_path):
    root = tmp_path / "corpus"
    (root / "sub").mkdir(parents=True)
    (root / "article.md").write_text(ARTICLE, encoding="utf-8")
    (root / "sub" / "notes.txt").write_text("Qdrant is a vector database written in Rust.")
    (root / "sub" / "records.jsonl").write_text(
        json.dumps(
            {
                "id": "r1",
                "text": "Mount Everest is 8,849 metres high.",
                "metadata": {"lang": "en"},
                "year": 2020,
            }
        )
        + "\n\n"
        + json.dumps({"text": "Le Mont Blanc culmine à 4 806 mètres.", "lang": "fr"})
        + "\n",
        encoding="utf-8",
    )
    (root / "sub" / "bad.txt").write_bytes(b"caf\xe9 latin-1 text")
    (root / "image.png").write_bytes(b"\x89PNG\x00\x00binary")  # not a text extension: ignored
    (root / ".hidden").mkdir()
    (root / ".hidden" / "secret.txt").write_text("never indexed")
    return root


def test_ingest_records_source_offsets_and_skips_bad_files(corpus):
    store = FaissStore(model=MODEL)
    report = store.ingest([corpus], chunk_tokens=64, overlap_tokens=16)
    assert report.files == 3
    assert [p.endswith("bad.txt") for p, _ in report.skipped] == [True]
    assert "UTF-8" in report.skipped[0][1]
    docs = [d for d in store.get(store.ids_where()) if d is not None]
    for d in docs:
        source = d.metadata["source"]
        if source.endswith(".jsonl"):
            continue
        original = Path(source).read_text(encoding="utf-8")
        assert original[d.metadata["start"] : d.metadata["end"]] == d.text
    everest = store.get(["r1#0"])[0]
    assert everest.metadata["lang"] == "en" and everest.metadata["year"] == 2020
    assert everest.metadata["line"] == 1 and everest.metadata["doc_id"] == "r1"
    assert store.search("How tall is Mount Everest?", k=1)[0].id == "r1#0"
    assert store.search("tower built for the 1889 fair", k=1)[0].metadata["chunk"] == 0
    assert not store.ids_where({"source": str(corpus / ".hidden" / "secret.txt")})
    n = len(store)
    (corpus / "sub" / "notes.txt").write_text("Short now.")
    again = store.ingest([corpus], chunk_tokens=64, overlap_tokens=16)
    assert len(store) == n and again.chunks == n  # re-ingest replaces, never duplicates
    assert store.search("vector database written in Rust", k=1)[0].text != (
        "Qdrant is a vector database written in Rust."
    )


def test_malformed_jsonl_names_the_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"text": 3}\n')
    store = FaissStore(model=MODEL)
    report = store.ingest([bad])
    assert report.chunks == 0 and "line 2" in report.skipped[0][1]
    with pytest.raises(InputError, match="does not exist"):
        store.ingest([tmp_path / "missing"])


def test_cli_index_then_search(corpus, tmp_path, capsys):
    store_dir = tmp_path / "st"
    rc = main(
        [
            "index",
            str(corpus / "article.md"),
            str(corpus / "sub" / "records.jsonl"),
            "--store",
            str(store_dir),
            "--index",
            "hnsw",
            "--chunk-tokens",
            "64",
        ]
    )
    assert rc == 0, capsys.readouterr().err
    assert "indexed" in capsys.readouterr().err
    assert json.loads((store_dir / "manifest.json").read_text())["index"]["kind"] == "hnsw"

    assert main(["search", "--store", str(store_dir), "-k", "2", "--json", "Everest height"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert lines[0]["id"] == "r1#0" and lines[0]["rank"] == 1 and len(lines) == 2

    assert main(["search", "--store", str(store_dir), "--hybrid", "--k", "1", "chlorophyll"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("1. ") and "Chlorophyll" in out and "article.md[" in out

    assert main(["search", "--store", str(store_dir), "--json", "-f", "lang=fr", "mountain"]) == 0
    assert [json.loads(x)["metadata"]["lang"] for x in capsys.readouterr().out.splitlines()] == [
        "fr"
    ]

    # A folder with an unreadable file: the rest is indexed and saved, exit status 1.
    rc = main(["index", str(corpus), "--store", str(store_dir)])
    err = capsys.readouterr().err
    assert rc == 1 and "bad.txt" in err and "skipped" in err
    assert FaissStore.load(store_dir).ids_where(
        {"source": str((corpus / "sub" / "notes.txt").resolve())}
    )

    assert main(["search", "--store", str(tmp_path / "none"), "q"]) == 1
    assert "no store" in capsys.readouterr().err
    assert main(["search", "--store", str(store_dir), "--hybrid", "--mmr", "q"]) == 2
    assert main(["index", str(corpus), "--store", str(store_dir), "--model", "other/model"]) == 1
    assert "refusing" in capsys.readouterr().err
