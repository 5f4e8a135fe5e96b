"""Bundled QA data, file loaders (ours/FlashRAG, NQ-open, TriviaQA, HotpotQA), the generator."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ctxzip.errors import InputError
from ctxzip.evals import datasets
from ctxzip.evals.generate import generate, parse_generator_spec
from ctxzip.evals.metrics import answer_retained


def test_bundled_pyref_set() -> None:
    items = datasets.load_dataset("pyref")
    assert len(items) >= 150
    assert len({it.id for it in items}) == len(items)
    positions = set()
    for it in items:
        assert it.answers and all(a.strip() for a in it.answers)
        assert len(it.contexts) >= 3
        gold = it.contexts[it.gold_index]
        assert answer_retained(gold, it.answers), it.id
        others = [c for i, c in enumerate(it.contexts) if i != it.gold_index]
        assert not any(answer_retained(c, it.answers) for c in others), it.id
        assert "PSF License" in it.metadata["source"]
        positions.add(it.gold_index)
    assert positions == {0, 1, 2, 3}  # the answer is not always in the same slot


def test_flashrag_and_our_format(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    rows = [
        {"id": "a", "question": "Q1?", "golden_answers": ["x"], "contexts": ["x is here"]},
        {
            "id": "b",
            "question": "Q2?",
            "answers": ["y"],
            "contexts": [{"title": "T", "text": "y too"}],
        },
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    items = datasets.load_file(path)
    assert [it.id for it in items] == ["a", "b"]
    assert items[1].contexts == ["T\ny too"]
    assert items[0].to_dict()["golden_answers"] == ["x"]


def test_nq_open_triviaqa_hotpotqa_shapes(tmp_path: Path) -> None:
    nq = tmp_path / "nq.jsonl"
    nq.write_text(json.dumps({"question": "who wrote hamlet", "answer": ["Shakespeare"]}) + "\n")
    [item] = datasets.load_file(nq)
    assert item.answers == ["Shakespeare"] and item.contexts == []

    tqa = tmp_path / "tqa.json"
    tqa.write_text(
        json.dumps(
            {
                "Version": 1.0,
                "Data": [
                    {
                        "QuestionId": "tc_1",
                        "Question": "Which planet is red?",
                        "Answer": {"Value": "Mars", "Aliases": ["Mars", "The Red Planet"]},
                    }
                ],
            }
        )
    )
    [item] = datasets.load_file(tqa)
    assert item.id == "tc_1" and item.answers == ["Mars", "The Red Planet"]

    hp = tmp_path / "hotpot.json"
    hp.write_text(
        json.dumps(
            [
                {
                    "_id": "5a8b",
                    "question": "Which city?",
                    "answer": "Paris",
                    "type": "bridge",
                    "context": [
                        ["France", ["Paris is the capital. ", "It is big."]],
                        ["Spain", ["Madrid."]],
                    ],
                    "supporting_facts": [["France", 0]],
                }
            ]
        )
    )
    [item] = datasets.load_file(hp)
    assert item.contexts[0] == "France\nParis is the capital. It is big."
    assert item.metadata["supporting_facts"] == [["France", 0]]


def test_bad_files_fail_clearly(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q", "answers": ["a"]}\n{not json\n')
    with pytest.raises(InputError, match=r"bad.jsonl:2: malformed JSON"):
        datasets.load_file(bad)
    bad.write_text('{"question": "q"}\n')
    with pytest.raises(InputError, match="no gold answers"):
        datasets.load_file(bad)
    bad.write_bytes(b'{"question": "\xff"}\n')
    with pytest.raises(InputError, match="UTF-8"):
        datasets.load_file(bad)
    with pytest.raises(InputError, match="unknown dataset"):
        datasets.load_dataset("no-such-set")


def test_hugging_face_datasets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # `datasets` reads a local folder offline; the columnar HotpotQA context is regrouped
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "hotpot_local"
    folder.mkdir()
    record = {
        "id": "h1",
        "question": "Which country is Paris in?",
        "answer": "France",
        "context": {"title": ["Paris", "Lyon"], "sentences": [["Paris is in France."], ["No."]]},
    }
    (folder / "validation.jsonl").write_text(json.dumps(record) + "\n")
    (item,) = datasets.load_dataset(f"hf:{folder}")
    assert item.id == "h1" and item.answers == ["France"]
    assert item.contexts == ["Paris\nParis is in France.", "Lyon\nNo."]
    with pytest.raises(InputError, match="cannot load hf:"):
        datasets.load_dataset(f"hf:{folder}:train")  # no such split
    with pytest.raises(InputError, match="hf:NAME:CONFIG:SPLIT"):
        datasets.load_dataset("hf:a:b:c:d")


def test_corpus_retrieval(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.jsonl"
    docs = [
        {"id": "d1", "contents": "The Eiffel Tower is in Paris."},
        {"id": "d2", "contents": "Bananas are yellow fruit."},
        {"id": "d3", "contents": "Mount Fuji is in Japan."},
    ]
    corpus.write_text("\n".join(json.dumps(d) for d in docs))
    item = datasets.QAItem("q", "Where is the Eiffel Tower?", ["Paris"], gold_doc_ids=["d1"])
    for retriever in ("store", "bm25"):
        datasets.attach_retrieved([item], datasets.load_corpus(corpus), 2, retriever)
        assert item.contexts[0].startswith("The Eiffel Tower"), retriever
        assert len(item.contexts) == 2
        assert item.metadata["gold_retrieved"] is True


def test_generator_is_seeded_and_places_the_fact() -> None:
    a = generate(n_items=20, n_docs=6, doc_sentences=5, difficulty=2, seed=3)
    b = generate(n_items=20, n_docs=6, doc_sentences=5, difficulty=2, seed=3)
    assert [x.to_dict() for x in a] == [x.to_dict() for x in b]
    assert [x.to_dict() for x in a] != [x.to_dict() for x in generate(n_items=20, seed=4)]
    for it in a:
        assert len(it.contexts) == 6
        assert answer_retained(it.contexts[it.gold_index], it.answers)
    assert len({it.gold_index for it in a}) > 2
    ends = generate(n_items=5, n_docs=4, position="end", seed=1)
    assert all(it.gold_index == 3 for it in ends)
    longer = generate(n_items=5, doc_sentences=10, seed=1)
    assert sum(map(len, longer[0].contexts)) > sum(
        map(len, generate(n_items=5, seed=1)[0].contexts)
    )


def test_generator_spec() -> None:
    assert parse_generator_spec("synthetic:n_items=3,position=middle") == {
        "n_items": 3,
        "position": "middle",
    }
    items = datasets.load_dataset("synthetic:n_items=3,n_docs=2")
    assert len(items) == 3 and all(len(it.contexts) == 2 for it in items)
    with pytest.raises(InputError, match="unknown generator options"):
        parse_generator_spec("synthetic:size=3")
    with pytest.raises(InputError, match="integer"):
        parse_generator_spec("synthetic:n_items=many")
