"""Retrieval store benchmark: Flat vs HNSW vs IVF-PQ vs LangChain's FAISS wrapper.

Two datasets, measured in the same run:
  synthetic  100,000 384-d vectors (clustered: 2,000 Gaussian blobs in a 96-d subspace
             plus isotropic noise, L2-normalised) and 500 held-out queries;
  real       all-MiniLM-L6-v2 embeddings of real text (the Python language reference in
             `pydoc_data.topics`, plus every installed package's description), chunked
             to 128 tokens; queries are the first sentence of held-out chunks.
For each index: build time (through the public add API, docstore included), queries/s
(one query at a time through the public search API, k=10), recall@10 against exact
search, and index bytes per vector (the serialized index: the part held in RAM that
grows with n; ctxzip's docstore, raw vectors included, lives in an SQLite file with a
bounded page cache, LangChain's in a Python dict). Times are process CPU seconds with
faiss and torch on one thread (`--threads 1`, the default), so other jobs on a shared
machine do not distort them; wall-clock figures are printed next to them. Run:

    TOKENIZERS_PARALLELISM=false .venv/bin/python benchmarks/bench_store.py \
        [--n 100000] [--real-n 4000] [--threads 1]

Writes a table to stdout and benchmarks/results/store.md + store.png.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def synthetic(
    n: int, n_queries: int, dim: int = 384, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.normal(size=(dim, 96)))[0]  # a 96-d subspace, like real embeddings
    centers = rng.normal(size=(2000, 96)) * 2.0

    def draw(m: int) -> np.ndarray:
        low = centers[rng.integers(0, len(centers), m)] + rng.normal(size=(m, 96))
        x = low @ basis.T + 0.3 * rng.normal(size=(m, dim))
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

    return draw(n), draw(n_queries)


def real_corpus(n: int) -> list[str]:
    import pydoc_data.topics as topics

    from ctxzip.retrievers.chunking import chunk_text
    from ctxzip.tokens import get_tokenizer

    texts = list(topics.topics.values())
    for dist in importlib.metadata.distributions():
        body = dist.metadata.get_payload() if hasattr(dist.metadata, "get_payload") else None
        body = body or dist.metadata.get("Description") or ""
        if isinstance(body, str) and len(body) > 200:
            texts.append(body)
    tok = get_tokenizer("sentence-transformers/all-MiniLM-L6-v2")
    chunks: list[str] = []
    for text in texts:
        chunks += [c.text for c in chunk_text(text, tok, 128, 0) if len(c.text) > 80]
        if len(chunks) >= n * 3:
            break
    rng = np.random.default_rng(0)
    picked = rng.choice(len(chunks), min(n, len(chunks)), replace=False)
    return [chunks[i] for i in sorted(picked)]


class Clock:
    """CPU and wall seconds of a block."""

    def __enter__(self) -> Clock:
        self.cpu0, self.wall0 = time.process_time(), time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.cpu = time.process_time() - self.cpu0
        self.wall = time.perf_counter() - self.wall0


def exact_topk(base: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    import faiss

    index = faiss.IndexFlatIP(base.shape[1])
    index.add(base)
    return index.search(queries, k)[1]


def recall(found: list[list[int]], truth: np.ndarray, k: int) -> float:
    return float(
        np.mean([len(set(f[:k]) & set(t[:k])) / k for f, t in zip(found, truth, strict=True)])
    )


def bench_ctxzip(
    kind: str,
    base: np.ndarray,
    queries: np.ndarray,
    truth: np.ndarray,
    k: int,
    options: dict,
    settings: list[tuple[str, dict]],
) -> list[dict]:
    """Build one store, then time the queries once per search setting (same index)."""
    from ctxzip.retrievers import FaissStore

    store = FaissStore(dim=base.shape[1], index=kind, **options)
    ids = [str(i) for i in range(len(base))]
    with Clock() as build:
        for s in range(0, len(base), 10_000):
            store.add_texts(
                [f"doc {i}" for i in ids[s : s + 10_000]],
                ids=ids[s : s + 10_000],
                vectors=base[s : s + 10_000],
            )
    stats = store.stats()
    rows = []
    for label, search_options in settings:
        store.search_by_vector(queries[0], k=k, **search_options)  # warm up
        with Clock() as search:
            found = [
                [int(h.id) for h in store.search_by_vector(q, k=k, **search_options)]
                for q in queries
            ]
        rows.append(
            {
                "setting": label,
                "build_s": build.cpu,
                "build_wall_s": build.wall,
                "qps": len(queries) / search.cpu,
                "qps_wall": len(queries) / search.wall,
                "recall": recall(found, truth, k),
                "bytes_per_vector": stats["index_bytes"] / len(base),
                "active": stats["index_active"],
            }
        )
    store.close()
    return rows


def bench_langchain(base: np.ndarray, queries: np.ndarray, truth: np.ndarray, k: int) -> dict:
    from langchain_community.vectorstores import FAISS
    from langchain_community.vectorstores.utils import DistanceStrategy

    from ctxzip.retrievers import SentenceTransformerEmbedder
    from ctxzip.retrievers.langchain import EmbedderEmbeddings

    pairs = [(f"doc {i}", v.tolist()) for i, v in enumerate(base)]
    with Clock() as build:
        vs = FAISS.from_embeddings(
            pairs,
            EmbedderEmbeddings(SentenceTransformerEmbedder()),
            ids=[str(i) for i in range(len(base))],
            distance_strategy=DistanceStrategy.MAX_INNER_PRODUCT,
        )
    vs.similarity_search_with_score_by_vector(queries[0].tolist(), k=k)  # warm up
    with Clock() as search:
        found = [
            [int(d.id) for d, _ in vs.similarity_search_with_score_by_vector(q.tolist(), k=k)]
            for q in queries
        ]
    import faiss

    nbytes = faiss.serialize_index(vs.index).nbytes
    return {
        "build_s": build.cpu,
        "build_wall_s": build.wall,
        "qps": len(queries) / search.cpu,
        "qps_wall": len(queries) / search.wall,
        "recall": recall(found, truth, k),
        "bytes_per_vector": nbytes / len(base),
        "active": "IndexFlatIP (+ pickle docstore)",
    }


CONFIGS = [  # (label, index type, search settings: label and per-call options)
    ("ctxzip Flat", "flat", [("exact", {})]),
    (
        "ctxzip HNSW",
        "hnsw",
        [("ef_search=64 (default)", {}), ("ef_search=128", {"ef_search": 128})],
    ),
    ("ctxzip IVF-PQ", "ivfpq", [("rerank=8 (default)", {}), ("PQ scores only", {"rerank": 1})]),
]


def run(name: str, base: np.ndarray, queries: np.ndarray, k: int, ivf_options: dict) -> list[dict]:
    truth = exact_topk(base, queries, k)
    rows = []
    for label, kind, settings in CONFIGS:
        print(f"[{name}] {label} ...", file=sys.stderr, flush=True)
        opts = ivf_options if kind == "ivfpq" else {}
        for row in bench_ctxzip(kind, base, queries, truth, k, opts, settings):
            rows.append({"dataset": name, "index": label, **row})
            print(f"  {row}", file=sys.stderr, flush=True)
    print(f"[{name}] LangChain FAISS ...", file=sys.stderr, flush=True)
    row = {"dataset": name, "index": "LangChain FAISS", "setting": "exact (IndexFlatIP)"}
    rows.append({**row, **bench_langchain(base, queries, truth, k)})
    print(f"  {rows[-1]}", file=sys.stderr, flush=True)
    flat = rows[0]
    for r in rows:
        r["qps_vs_flat"] = r["qps"] / flat["qps"]
        r["memory_vs_flat"] = r["bytes_per_vector"] / flat["bytes_per_vector"]
    return rows


def table(rows: list[dict]) -> str:
    head = (
        "| dataset | index | search | build CPU s (wall) | queries/CPU-s (wall q/s) | "
        "x Flat q/s | recall@10 | index B/vector | x Flat memory |\n"
        "|---|---|---|---|---|---|---|---|---|\n"
    )
    return head + "\n".join(
        f"| {r['dataset']} | {r['index']} | {r['setting']} | {r['build_s']:.1f} "
        f"({r['build_wall_s']:.0f}) | {r['qps']:.0f} ({r['qps_wall']:.0f}) | "
        f"{r['qps_vs_flat']:.1f} | {r['recall']:.3f} | {r['bytes_per_vector']:.0f} | "
        f"{r['memory_vs_flat']:.3f} |"
        for r in rows
    )


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = sorted(
        {r["dataset"] for r in rows}, key=lambda d: [r["dataset"] for r in rows].index(d)
    )
    fig, axes = plt.subplots(1, len(datasets), figsize=(6 * len(datasets), 4.5), squeeze=False)
    for ax, ds in zip(axes[0], datasets, strict=True):
        for r in (r for r in rows if r["dataset"] == ds):
            ax.scatter(
                r["qps"],
                r["recall"],
                s=30 + r["bytes_per_vector"] / 10,
                alpha=0.8,
                label=f"{r['index']}, {r['setting']} ({r['bytes_per_vector']:.0f} B/vector)",
            )
        ax.legend(fontsize=7, loc="lower left")
        ax.set_xscale("log")
        ax.set_xlabel("queries per CPU-second (one at a time, k=10; log)")
        ax.set_ylabel("recall@10 vs exact")
        ax.set_title(ds)
        ax.axhline(0.95, ls=":", c="grey")
        ax.axhline(0.8, ls=":", c="grey")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def docstore_memory(rows: int, dim: int = 384) -> str:
    """RSS growth while the docstore takes `rows` vectors: the scratch database should
    level off near its page cache (`docstore.CACHE_MB`); the baseline, the same docstore
    on an in-memory SQLite database (the old working copy), grows with the data. Each
    runs in a fresh process so one does not reuse memory the other freed."""
    import subprocess

    lines = []
    for variant in ("scratch", "memory"):
        out = subprocess.run(
            [sys.executable, __file__, "--docstore-child", variant, "--docstore-rows", str(rows)],
            capture_output=True,
            text=True,
            check=True,
        )
        lines.append(out.stdout.rstrip())
    return "\n".join(lines)


def _docstore_child(variant: str, rows: int, dim: int = 384) -> None:
    import sqlite3

    import psutil

    from ctxzip.retrievers.docstore import CACHE_MB, DocStore

    proc = psutil.Process()
    if variant == "scratch":
        store = DocStore.new(dim)
        print(f"docstore on a scratch file, {CACHE_MB} MB page cache (ctxzip):")
    else:
        store = DocStore(sqlite3.connect(":memory:", check_same_thread=False), dim)
        print("baseline: the same docstore on an in-memory SQLite database:")
    vecs = np.random.default_rng(0).normal(size=(10_000, dim)).astype(np.float32)
    base = proc.memory_info().rss
    for b in range(rows // 10_000):
        ids = [f"{b}-{i}" for i in range(10_000)]
        store.insert(ids, ["x" * 100] * 10_000, [{}] * 10_000, vecs)
        if (b + 1) % max(1, rows // 40_000) == 0 or b + 1 == rows // 10_000:
            data = (b + 1) * 10_000 * (dim * 4 + 100) / 2**20
            grown = (proc.memory_info().rss - base) / 2**20
            print(f"  {(b + 1) * 10_000:>8,} rows ({data:4.0f} MB of data): RSS +{grown:.0f} MB")
    store.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=500)
    ap.add_argument("--real-n", type=int, default=4000, help="real chunks to embed (0 skips)")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--docstore-rows", type=int, default=200_000, help="0 skips")
    ap.add_argument("--threads", type=int, default=1, help="faiss/torch threads (0: theirs)")
    ap.add_argument("--docstore-child", choices=["scratch", "memory"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.docstore_child:
        _docstore_child(args.docstore_child, args.docstore_rows)
        return
    import faiss
    import torch

    if args.threads:  # on a shared box, 1 avoids OpenMP spin-waiting against other jobs
        faiss.omp_set_num_threads(args.threads)
        torch.set_num_threads(args.threads)

    print(
        f"faiss {faiss.__version__}, {faiss.omp_get_max_threads()} OpenMP threads, "
        f"torch threads {torch.get_num_threads()}, cpus {os.cpu_count()}",
        file=sys.stderr,
    )
    memory = docstore_memory(args.docstore_rows) if args.docstore_rows else ""
    print(memory, file=sys.stderr)
    rows = []
    if args.n:
        base, queries = synthetic(args.n, args.queries)
        rows += run(f"synthetic {args.n:,} x 384", base, queries, args.k, {})
    if args.real_n:
        from ctxzip.retrievers import SentenceTransformerEmbedder

        texts = real_corpus(args.real_n + args.queries)
        held = texts[: args.queries]
        docs = texts[args.queries :]
        emb = SentenceTransformerEmbedder()
        t0 = time.perf_counter()
        doc_vecs = emb.embed(docs, progress=True)
        embed_s = time.perf_counter() - t0
        q_texts = [t.split(". ")[0][:300] for t in held]
        q_vecs = emb.embed(q_texts)
        print(
            f"embedded {len(docs)} real chunks in {embed_s:.1f}s ({len(docs) / embed_s:.0f}/s)",
            file=sys.stderr,
        )
        n_real = len(docs)
        # IVF-PQ needs enough vectors to train; on a few thousand use fewer, smaller centroids.
        rows += run(
            f"real MiniLM {n_real:,} chunks",
            doc_vecs,
            q_vecs,
            args.k,
            {"train_min": min(10_000, n_real), "pq_bits": 8 if n_real >= 10_000 else 6},
        )
    out = (table(rows) if rows else "") + ("\n\n" + memory if memory else "")
    print(out)
    results = Path(__file__).parent / "results"
    results.mkdir(exist_ok=True)
    (results / "store.md").write_text(out + "\n")
    (results / "store.json").write_text(json.dumps(rows, indent=1) + "\n")
    print(f"wrote {results / 'store.md'}", file=sys.stderr)
    if rows:
        plot(rows, results / "store.png")
        print(f"wrote {results / 'store.png'}", file=sys.stderr)


if __name__ == "__main__":
    main()
