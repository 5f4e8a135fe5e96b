"""Dense vs hybrid (dense + BM25, reciprocal rank fusion) recall@k on the bundled QA set.

The corpus is every distinct passage of `pyref` (the Python reference QA set shipped in
ctxzip.evals: 171 questions, each with its gold passage and three distractors); each
question searches all of them. Recall@k: the share of questions whose gold passage is in
the top k. Run:

    TOKENIZERS_PARALLELISM=false .venv/bin/python benchmarks/bench_hybrid_recall.py [--k 3]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, default=3)
    args = parser.parse_args()

    from ctxzip.evals.datasets import load_dataset
    from ctxzip.retrievers import FaissStore

    items = load_dataset("pyref")
    passages = list(dict.fromkeys(c for it in items for c in it.contexts))
    ids = {p: f"p{n}" for n, p in enumerate(passages)}
    gold = [ids[it.contexts[it.gold_index or 0]] for it in items]
    t0 = time.perf_counter()
    store = FaissStore()
    store.add_texts(passages, ids=[ids[p] for p in passages], progress=False)
    print(f"{len(passages)} passages indexed in {time.perf_counter() - t0:.1f}s; "
          f"{len(items)} questions; recall@{args.k}")  # fmt: skip
    for name, search in (("dense", store.search), ("hybrid", store.hybrid_search)):
        t0 = time.perf_counter()
        found = sum(
            g in [h.id for h in search(it.question, args.k)]
            for it, g in zip(items, gold, strict=True)
        )
        print(f"  {name:<7} {found}/{len(items)} = {found / len(items):.3f} "
              f"({time.perf_counter() - t0:.1f}s)")  # fmt: skip


if __name__ == "__main__":
    main()
