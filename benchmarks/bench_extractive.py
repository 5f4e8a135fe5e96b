"""Speed and answer retention of `extractive` against LangChain's own recipe, same run.

Data: CPython's language reference (`pydoc_data.topics`, PSF licence, ships with
Python) cut into ~500-token documents. Each question of
tests/data/pyref_extractive_qa.jsonl gets its gold document plus the BM25-nearest
other documents as distractors (20 in all, gold at a seeded random position).

Systems, interleaved query by query so machine noise hits all alike:
  langchain   DocumentCompressorPipeline(sentence splitter, EmbeddingsFilter(k)) with
              HuggingFaceEmbeddings(all-MiniLM-L6-v2); k = rate x sentences
  fp32        ctxzip extractive, full precision, no coarse pass, cache cleared per query
  fast        ctxzip extractive, int8 encoder + BM25 coarse pass, cache cleared per query
  fast-seen   the same compressor again over documents it has seen before (cache warm)
The same sentence units (ctxzip.units) feed every system. Answer retention is the
share of questions whose gold answer string survives compression.

    TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_extractive.py
    ... --calibrate     # selective-augmentation threshold: score distributions + plot
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
import time
import warnings
from pathlib import Path
from typing import Any

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
warnings.filterwarnings("ignore")

from pydoc_data.topics import topics  # noqa: E402

import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

from ctxzip import Budget  # noqa: E402
from ctxzip.compressors.extractive import (  # noqa: E402
    DEFAULT_THRESHOLD,
    ExtractiveCompressor,
    bm25_scores,
)
from ctxzip.models import MINILM, resolve_model  # noqa: E402
from ctxzip.tokens import count_tokens  # noqa: E402
from ctxzip.units import split_sentences  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
QA = ROOT / "tests" / "data" / "pyref_extractive_qa.jsonl"
UNRELATED = Path(__file__).parent / "data" / "unrelated_queries.txt"
MODEL = MINILM


def norm(text: str) -> str:
    return re.sub(r"\s+", " ", text)


def corpus(doc_tokens: int = 500) -> list[tuple[str, str]]:
    """(topic, text) documents of about `doc_tokens` tokens, cut at paragraph breaks."""
    docs = []
    for name, text in sorted(topics.items()):
        parts, size = [], 0
        for para in re.split(r"\n\s*\n", text):
            n = count_tokens(para)
            if parts and size + n > doc_tokens:
                docs.append((name, "\n\n".join(parts)))
                parts, size = [], 0
            parts.append(para)
            size += n
        if parts:
            docs.append((name, "\n\n".join(parts)))
    return docs


def cases(n_docs: int, limit: int | None) -> list[dict[str, Any]]:
    docs = corpus()
    texts = [t for _, t in docs]
    rng = random.Random(13)
    out = []
    for line in QA.read_text().splitlines()[:limit]:
        case = json.loads(line)
        gold = next(
            i
            for i, (name, t) in enumerate(docs)
            if name == case["topic"] and norm(case["answer"]) in norm(t)
        )
        ranked = np.argsort(-bm25_scores(case["question"], texts), kind="stable")
        distractors = [texts[int(i)] for i in ranked if int(i) != gold][: n_docs - 1]
        contexts = list(distractors)
        contexts.insert(rng.randrange(n_docs), texts[gold])
        out.append({**case, "contexts": contexts, "distractors": distractors})
    return out


class SentenceSplitter:
    """LangChain transformer splitting documents into ctxzip sentences (same units)."""

    def __new__(cls) -> Any:
        from langchain_core.documents import BaseDocumentTransformer, Document

        class _Splitter(BaseDocumentTransformer):
            def transform_documents(self, documents: Any, **kwargs: Any) -> list[Document]:
                return [
                    Document(page_content=u.text, metadata=d.metadata)
                    for d in documents
                    for u in split_sentences(d.page_content)
                ]

            async def atransform_documents(self, documents: Any, **kwargs: Any) -> Any:
                return self.transform_documents(documents)

        return _Splitter()


def langchain_baseline(rate: float) -> Any:
    from langchain_classic.retrievers.document_compressors import (
        DocumentCompressorPipeline,
        EmbeddingsFilter,
    )
    from langchain_community.embeddings import HuggingFaceEmbeddings
    from langchain_core.documents import Document

    embeddings = HuggingFaceEmbeddings(
        model_name=resolve_model(MODEL), model_kwargs={"device": "cpu"}
    )
    splitter = SentenceSplitter()

    def run(contexts: list[str], query: str) -> str:
        docs = [Document(page_content=c) for c in contexts]
        n = len(splitter.transform_documents(docs))
        k = max(1, round(rate * n))
        pipe = DocumentCompressorPipeline(
            transformers=[splitter, EmbeddingsFilter(embeddings=embeddings, k=k)]
        )
        return "\n".join(d.page_content for d in pipe.compress_documents(docs, query))

    return run


def timed(fn: Any, *args: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - start


def benchmark(args: argparse.Namespace) -> None:
    data = cases(args.docs, args.limit)
    budget = Budget(rate=args.rate)
    lc = langchain_baseline(args.rate)
    fp32 = ExtractiveCompressor(threshold=None, quantize="none", device="cpu")
    fast = ExtractiveCompressor(threshold=None, quantize="int8", coarse=args.coarse, device="cpu")
    names = ["langchain", "fp32", "fast", "fast-seen"]
    secs: dict[str, list[float]] = {n: [] for n in names}
    kept: dict[str, int] = dict.fromkeys(names, 0)
    rates: dict[str, list[float]] = {n: [] for n in names}
    # warm up every model once (load, first-call allocations), then clear caches
    lc(data[0]["contexts"][:2], data[0]["question"])
    fp32.compress(data[0]["contexts"][:2], data[0]["question"], budget)
    fast.compress(data[0]["contexts"][:2], data[0]["question"], budget)
    sentences = 0
    tokens_total = 0
    for case in tqdm(data, desc="queries"):
        ctx, q, ans = case["contexts"], case["question"], norm(case["answer"])
        tokens_in = sum(count_tokens(c) for c in ctx)
        tokens_total += tokens_in
        sentences += sum(len(split_sentences(c)) for c in ctx)
        text, s = timed(lc, ctx, q)
        secs["langchain"].append(s)
        kept["langchain"] += ans in norm(text)
        rates["langchain"].append(count_tokens(text) / tokens_in)
        for name, comp in (("fp32", fp32), ("fast", fast)):
            comp.encoder.clear_cache()
            r, s = timed(comp.compress, ctx, q, budget)
            secs[name].append(s)
            kept[name] += ans in norm(r.text)
            rates[name].append(r.rate)
        r, s = timed(fast.compress, ctx, q, budget)  # same documents again: all cached
        secs["fast-seen"].append(s)
        kept["fast-seen"] += ans in norm(r.text)
        rates["fast-seen"].append(r.rate)
    n = len(data)
    base = statistics.median(secs["langchain"])
    print(
        f"\n{n} questions x {args.docs} documents (~{sentences / n:.0f} sentences, "
        f"~{tokens_total / n:.0f} tokens each), requested rate {args.rate}, coarse={args.coarse}"
    )
    print(
        f"{'system':<11} {'median s':>9} {'speedup':>8} {'sent/s':>8} "
        f"{'retention':>10} {'achieved':>9}"
    )
    rows = []
    for name in names:
        med = statistics.median(secs[name])
        row = (
            name,
            med,
            base / med,
            sentences / sum(secs[name]),
            100 * kept[name] / n,
            statistics.mean(rates[name]),
        )
        rows.append(row)
        print(
            f"{row[0]:<11} {row[1]:>9.3f} {row[2]:>7.1f}x {row[3]:>8.0f} {row[4]:>9.1f}% "
            f"{row[5]:>9.3f}"
        )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_extractive.json").write_text(
        json.dumps(
            {
                "rate": args.rate,
                "docs": args.docs,
                "questions": n,
                "coarse": args.coarse,
                "rows": [
                    dict(
                        zip(
                            [
                                "system",
                                "median_s",
                                "speedup",
                                "sentences_per_s",
                                "retention_pct",
                                "achieved_rate",
                            ],
                            r,
                            strict=True,
                        )
                    )
                    for r in rows
                ],
            },
            indent=2,
        )
    )
    plot_speed(rows, out / "bench_extractive.png", args)


def plot_speed(rows: list[tuple[Any, ...]], path: Path, args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.4))
    names = [r[0] for r in rows]
    a.bar(names, [r[2] for r in rows], color=["grey", "tab:blue", "tab:green", "tab:olive"])
    a.set_yscale("log")
    a.set_ylabel("speed-up vs LangChain (x, log)")
    b.bar(names, [r[4] for r in rows], color=["grey", "tab:blue", "tab:green", "tab:olive"])
    b.set_ylim(0, 100)
    b.set_ylabel("answer retention (%)")
    fig.suptitle(f"extractive vs EmbeddingsFilter, rate {args.rate}, {args.docs} docs/query")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


def calibrate(args: argparse.Namespace) -> None:
    """Best-sentence cosine for related, gold-less and unrelated queries."""
    data = cases(args.docs, args.limit)
    comp = ExtractiveCompressor(model=args.model, threshold=None, device="cpu")
    budget = Budget(rate=args.rate)
    rng = random.Random(5)
    pool = [c for case in data for c in case["contexts"]]
    groups: dict[str, list[float]] = {"related": [], "no gold doc": [], "unrelated": []}
    for case in tqdm(data, desc="related"):
        r = comp.compress(case["contexts"], case["question"], budget)
        groups["related"].append(r.extra["best_score"])
        r = comp.compress(case["distractors"], case["question"], budget)
        groups["no gold doc"].append(r.extra["best_score"])
    for query in tqdm(UNRELATED.read_text().splitlines(), desc="unrelated"):
        r = comp.compress(rng.sample(pool, args.docs), query, budget)
        groups["unrelated"].append(r.extra["best_score"])
    for name, values in groups.items():
        v = np.array(values)
        print(
            f"{name:<12} n={len(v):>3} min {v.min():.3f}  p5 {np.percentile(v, 5):.3f}  "
            f"median {np.median(v):.3f}  p95 {np.percentile(v, 95):.3f}  max {v.max():.3f}"
        )
    rel, unrel = np.array(groups["related"]), np.array(groups["unrelated"])
    for t in (0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45):
        print(
            f"threshold {t:.2f}: related kept {100 * (rel >= t).mean():5.1f}%  "
            f"unrelated skipped {100 * (unrel < t).mean():5.1f}%"
        )
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.2))
    bins = np.linspace(-0.1, 1.0, 45)
    for name, values in groups.items():
        ax.hist(values, bins=bins, alpha=0.55, label=f"{name} (n={len(values)})")
    ax.axvline(args.threshold, color="k", ls="--", label=f"default threshold {args.threshold}")
    ax.set_xlabel(f"best sentence cosine to the query ({args.model.split('/')[-1]})")
    ax.set_ylabel("queries")
    ax.legend(fontsize=8)
    fig.tight_layout()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    fig.savefig(out / "extractive_threshold.png", dpi=110)
    print(f"wrote {out / 'extractive_threshold.png'}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--limit", type=int, default=20, help="questions (of 45)")
    p.add_argument("--docs", type=int, default=20, help="documents per question")
    p.add_argument("--rate", type=float, default=0.33)
    p.add_argument("--coarse", type=float, default=2.0, help="coarse pass factor (fast)")
    p.add_argument("--calibrate", action="store_true")
    p.add_argument("--model", default=MODEL, help="encoder to calibrate (--calibrate)")
    p.add_argument(
        "--threshold", type=float, default=DEFAULT_THRESHOLD, help="line drawn on the plot"
    )
    p.add_argument(
        "--threads", type=int, default=0, help="torch threads for every system (0: default)"
    )
    p.add_argument("--out", default=str(ROOT / "docs" / "img"))
    args = p.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    calibrate(args) if args.calibrate else benchmark(args)


if __name__ == "__main__":
    main()
