"""QA datasets: one JSONL format, loaders for common files, and the bundled sets.

The format is FlashRAG's (``id``, ``question``, ``golden_answers``) plus the passages:

    {"id": "q1", "question": "...", "golden_answers": ["..."],
     "contexts": ["passage", ...], "gold_index": 2, "metadata": {...}}

``answers`` is accepted for ``golden_answers``; ``contexts`` may be strings or
``{"title", "text"}`` objects. Without ``contexts``, a ``corpus`` (JSONL of
``{"id", "contents"|"text", "title"}``) is searched for each question instead, and
``gold_doc_ids`` says which documents hold the answer.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Iterator
from importlib import resources
from pathlib import Path
from typing import Any

from ctxzip.compressors.vision.reader.model import easy_vqa_records
from ctxzip.errors import InputError
from ctxzip.evals.generate import generate, parse_generator_spec
from ctxzip.evals.items import QAItem

BUNDLED = {
    "pyref": "pyref_qa.jsonl",
}
"""Bundled data sets by name (files in ctxzip.evals.data)."""


def _context_text(ctx: Any) -> str:
    if isinstance(ctx, str):
        return ctx
    if isinstance(ctx, dict):
        text = ctx.get("text") or ctx.get("contents") or ""
        if isinstance(text, list):
            text = " ".join(text)
        title = ctx.get("title")
        return f"{title}\n{text}" if title and not str(text).startswith(str(title)) else str(text)
    if isinstance(ctx, (list, tuple)) and len(ctx) == 2:  # HotpotQA [title, [sentences]]
        title, sents = ctx
        body = "".join(sents) if isinstance(sents, list) else str(sents)
        return f"{title}\n{body}"
    raise InputError(f"a context must be a string or an object, got {type(ctx).__name__}")


def _as_answers(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):  # TriviaQA {"Value", "Aliases", ...}
        keys = ("value", "Value", "aliases", "Aliases", "normalized_aliases", "NormalizedAliases")
        out: list[str] = []
        for key in keys:
            out.extend(_as_answers(value.get(key)))
        return list(dict.fromkeys(out))
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value if isinstance(v, (str, int, float)) and str(v).strip()]
    return [str(value)]


def item_from_record(record: dict[str, Any], index: int) -> QAItem:
    """Map one record of any supported shape (ours/FlashRAG, NQ-open, TriviaQA, HotpotQA)."""
    if not isinstance(record, dict):
        raise InputError(f"record {index}: expected a JSON object, got {type(record).__name__}")
    question = record.get("question", record.get("Question"))
    if not isinstance(question, str) or not question.strip():
        raise InputError(f"record {index}: no question")
    answers: list[str] = []
    for key in ("golden_answers", "answers", "answer", "Answer"):
        if key in record:
            answers = _as_answers(record[key])
            break
    if not answers:
        raise InputError(f"record {index}: no gold answers")
    raw_contexts = record.get("contexts", record.get("context", record.get("ctxs")))
    if raw_contexts is None and "search_results" in record:  # TriviaQA web
        sr = record["search_results"]
        raw_contexts = sr.get("search_context", []) if isinstance(sr, dict) else sr
    if isinstance(raw_contexts, str):
        raw_contexts = [raw_contexts]
    if isinstance(raw_contexts, dict) and "sentences" in raw_contexts:  # HF HotpotQA, by column
        titles, sentences = raw_contexts.get("title") or [], raw_contexts["sentences"]
        if len(titles) != len(sentences):
            raise InputError(f"record {index}: {len(titles)} titles for {len(sentences)} contexts")
        raw_contexts = list(zip(titles, sentences, strict=True))
    contexts = [_context_text(c) for c in raw_contexts or []]
    gold_index = record.get("gold_index")
    metadata = dict(record.get("metadata") or {})
    if "supporting_facts" in record:
        metadata["supporting_facts"] = record["supporting_facts"]
    for key in ("type", "level"):
        if key in record:
            metadata[key] = record[key]
    ident = record.get("id", record.get("_id", record.get("question_id", record.get("QuestionId"))))
    return QAItem(
        id=str(ident if ident is not None else index),
        question=question.strip(),
        answers=answers,
        contexts=contexts,
        gold_index=gold_index if isinstance(gold_index, int) else None,
        gold_doc_ids=[str(d) for d in record.get("gold_doc_ids", [])],
        metadata=metadata,
    )


def _read_records(path: Path) -> Iterator[dict[str, Any]]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not valid UTF-8 ({exc})") from None
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None
    stripped = text.lstrip()
    if stripped.startswith(("[", "{")):
        try:
            data = json.loads(text)  # HotpotQA / TriviaQA ship one JSON document
        except json.JSONDecodeError as exc:
            if stripped.startswith("["):
                raise InputError(f"{path}: malformed JSON ({exc})") from None
            data = None  # JSON Lines
        if isinstance(data, dict) and ("data" in data or "Data" in data):
            data = data.get("data") or data.get("Data") or []
        if isinstance(data, list):
            yield from data
            return
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            yield json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}:{n}: malformed JSON ({exc.msg})") from None


def load_file(path: str | Path) -> list[QAItem]:
    """Items from a JSONL/JSON file in our, FlashRAG, NQ-open, TriviaQA or HotpotQA shape."""
    p = Path(path)
    items = [item_from_record(r, i) for i, r in enumerate(_read_records(p))]
    if not items:
        raise InputError(f"{p}: no questions")
    seen: set[str] = set()
    for item in items:
        if item.id in seen:
            raise InputError(f"{p}: duplicate id {item.id!r}")
        seen.add(item.id)
    return items


def load_hf(name: str, split: str = "validation", config: str | None = None) -> list[QAItem]:
    """Items from a Hugging Face `datasets` data set (needs the package and a local cache)."""
    try:
        import datasets
    except ImportError:
        raise InputError(
            f"hf:{name} needs the `datasets` package (pip install datasets) and a local copy"
        ) from None
    try:
        ds = datasets.load_dataset(name, config, split=split)
    except Exception as exc:
        raise InputError(f"cannot load hf:{name} ({type(exc).__name__}: {exc})") from None
    return [item_from_record(dict(r), i) for i, r in enumerate(ds)]


def bundled_path(name: str) -> Path:
    """The file of a bundled data set."""
    ref = resources.files("ctxzip.evals") / "data" / BUNDLED[name]
    return Path(str(ref))


IMAGE_KEY = "image"
"""`QAItem.metadata` key of an image question's image file (its one context is that path)."""


def load_easy_vqa(split: str = "test") -> list[QAItem]:
    """easy-vqa's shape/colour questions; the context is the image file, which only the
    vision methods' image reader can read (see `ctxzip.compressors.vision.reader.model`)."""
    return [
        QAItem(r.id, r.question, [r.answer], [r.image], metadata={IMAGE_KEY: r.image})
        for r in easy_vqa_records(split)
    ]


def load_dataset(spec: str, *, seed: int = 0, **generator_options: Any) -> list[QAItem]:
    """`pyref` (bundled), `synthetic[:key=value,...]`, `easy-vqa[:test|train]` (images),
    `hf:NAME[[:CONFIG]:SPLIT]`, or a path."""
    if spec in BUNDLED:
        return load_file(bundled_path(spec))
    if spec == "synthetic" or spec.startswith("synthetic:"):
        options = {**parse_generator_spec(spec), **generator_options}
        options.setdefault("seed", seed)
        return generate(**options)
    if spec == "easy-vqa" or spec.startswith("easy-vqa:"):
        return load_easy_vqa(spec.partition(":")[2] or "test")
    if spec.startswith("hf:"):  # hf:NAME, hf:NAME:SPLIT or hf:NAME:CONFIG:SPLIT
        _, name, *rest = spec.split(":")
        if len(rest) > 2:
            raise InputError(f"{spec!r}: use hf:NAME, hf:NAME:SPLIT or hf:NAME:CONFIG:SPLIT")
        config = rest[0] if len(rest) == 2 else None
        return load_hf(name, split=rest[-1] if rest else "validation", config=config)
    if not Path(spec).exists():
        known = ", ".join([*BUNDLED, "synthetic", "easy-vqa[:SPLIT]", "hf:NAME", "a file path"])
        raise InputError(f"unknown dataset {spec!r} (use one of: {known})")
    return load_file(spec)


def load_corpus(path: str | Path) -> dict[str, str]:
    """Documents by id from a FlashRAG-style corpus JSONL (`id`, `contents` or `title`+`text`)."""
    docs: dict[str, str] = {}
    for i, record in enumerate(_read_records(Path(path))):
        if not isinstance(record, dict) or "id" not in record:
            raise InputError(f"{path}: corpus record {i} has no id")
        docs[str(record["id"])] = _context_text(record)
    return docs


def attach_retrieved(
    items: Iterable[QAItem],
    corpus: dict[str, str],
    top_k: int = 5,
    retriever: str = "store",
    dense_only: bool = False,
) -> None:
    """Fill each item's contexts with the corpus's top-k documents for its question.

    `store` indexes the corpus in a ctxzip retrieval store (MiniLM vectors + BM25 fused by
    reciprocal rank; vectors alone with `dense_only`); `bm25` uses BM25 alone (no model). `gold_retrieved` records whether a
    gold document made the top k.
    """
    items = list(items)
    ids = list(corpus)
    k = min(top_k, len(ids))
    if retriever == "store":
        # Imported here, not above: the store needs the `store` extra (faiss), which an
        # eval on contexts that ship with the data set (pyref, synthetic, files) does not.
        from ctxzip.retrievers import FaissStore

        store = FaissStore()
        store.add_texts([corpus[i] for i in ids], ids=ids, progress=False)
        search = store.search if dense_only else store.hybrid_search
        ranked = [[h.document.id for h in search(it.question, k)] for it in items]
    elif retriever == "bm25":
        import bm25s

        bm = bm25s.BM25()
        bm.index(
            bm25s.tokenize([corpus[i] for i in ids], stopwords="en", show_progress=False),
            show_progress=False,
        )
        queries = bm25s.tokenize([it.question for it in items], stopwords="en", show_progress=False)
        hits, _ = bm.retrieve(queries, k=k, show_progress=False)
        ranked = [[ids[int(j)] for j in row] for row in hits]
    else:
        raise InputError(f"retriever must be store or bm25, not {retriever!r}")
    for item, row in zip(items, ranked, strict=True):
        item.contexts = [corpus[i] for i in row]
        item.metadata["retrieved_ids"] = row
        if item.gold_doc_ids:
            item.metadata["gold_retrieved"] = bool(set(item.gold_doc_ids) & set(row))


def sample(items: list[QAItem], limit: int | None, seed: int) -> list[QAItem]:
    """The first `limit` items of a seeded shuffle (all, in file order, with no limit).

    A smaller limit picks a prefix of a larger one's items, in the same order, so a sweep
    interrupted after its first N questions is exactly the sweep with ``limit=N``.
    """
    if limit is None or limit >= len(items):
        return items
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    return [items[i] for i in order[:limit]]
