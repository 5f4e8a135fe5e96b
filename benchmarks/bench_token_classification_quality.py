"""How good is the shipped keep/drop head? Answer retention against random and the teacher.

Data: the bundled `pyref` QA set (evals/data/pyref_qa.jsonl: questions on CPython's
language reference, 4 contexts each, one holding the answer). The head was trained on
standard-library docstrings, not on this text. For each item and rate, every system
keeps words of all 4 contexts up to the same budget (rate x gpt-4o tokens, one budget
over the item) and we check whether a gold answer string survives (reader-independent):

  random     random word scores (mean of 5 seeds)
  teacher    SmolLM2-135M self-information per word given the preceding text (the
             signal the head was distilled from; 135M parameters, ~6x the student)
  ctxzip     token-classification with the shipped MiniLM head (global budget)
  ctxzip+q   the same, question-aware (query words favoured)
  full       no compression (upper bound; answers cut from contexts are already missing)

    TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 .venv/bin/python \\
        benchmarks/bench_token_classification_quality.py [--limit 60]

Teacher scores are cached (numpy, keyed by the texts), so re-runs are quick.
"""

from __future__ import annotations

import argparse
import json
import os
import warnings
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
warnings.filterwarnings("ignore")

import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

from ctxzip import Budget  # noqa: E402
from ctxzip.compressors.token_classification import (  # noqa: E402
    BASE_MODEL,
    TokenClassificationCompressor,
)
from ctxzip.compressors.token_classification.costs import word_costs  # noqa: E402
from ctxzip.compressors.token_classification.train import (  # noqa: E402
    cached_teacher_scores,
    student_words,
)
from ctxzip.compressors.token_classification.words import codepoints  # noqa: E402
from ctxzip.evals.metrics import answer_retained  # noqa: E402
from ctxzip.models import load_tokenizer  # noqa: E402
from ctxzip.spans import join_spans  # noqa: E402
from ctxzip.tokens import get_tokenizer  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
QA = ROOT / "evals" / "data" / "pyref_qa.jsonl"
RATES = (0.5, 0.33, 0.2)


def keep_by_scores(texts, words, costs, scores, budget: int) -> list[str]:
    """Best-scored words of all texts until `budget` reader tokens (estimated per word)."""
    owner = np.concatenate([np.full(len(w), i) for i, w in enumerate(words)])
    index = np.concatenate([np.arange(len(w)) for w in words])
    order = np.argsort(-np.concatenate(scores), kind="stable")
    k = int(np.searchsorted(np.cumsum(np.concatenate(costs)[order]), budget, side="right"))
    chosen = order[:k]
    out = []
    for i, (text, w) in enumerate(zip(texts, words, strict=True)):
        mask = np.zeros(len(w), dtype=bool)
        mask[index[chosen][owner[chosen] == i]] = True
        spans = zip(w.start[mask].tolist(), w.end[mask].tolist(), strict=True)
        out.append(join_spans(text, list(spans)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--limit", type=int, default=60, help="QA items (171 in the set)")
    ap.add_argument("--out", type=Path, default=Path("runs/bench_token_classification_quality"))
    args = ap.parse_args()
    items = [json.loads(line) for line in QA.read_text().splitlines() if line.strip()]
    items = items[: args.limit]
    reader = get_tokenizer("gpt-4o")
    tokenizer = load_tokenizer(BASE_MODEL)

    flat = [c for it in items for c in it["contexts"]]
    sw = student_words(flat, tokenizer)
    words = [w for w, _ in sw]
    costs = [word_costs(reader, t, codepoints(t), w) for t, w in zip(flat, words, strict=True)]
    teacher = cached_teacher_scores(flat, words)

    plain = TokenClassificationCompressor()
    aware = TokenClassificationCompressor(question_aware=True)
    systems = ("full", "random", "teacher", "ctxzip", "ctxzip+q")
    hits = {(s, r): [] for s in systems for r in RATES}
    rates = {(s, r): [] for s in systems for r in RATES}
    pos = 0
    for it in tqdm(items, desc="items", unit="item"):
        n = len(it["contexts"])
        texts, w, c, t = (
            it["contexts"],
            words[pos : pos + n],
            costs[pos : pos + n],
            teacher[pos : pos + n],
        )
        pos += n
        golds = it["golden_answers"]
        total = int(sum(x.sum() for x in c))
        for rate in RATES:
            budget = Budget(rate=rate).tokens_for(total)
            outs = {"full": texts, "teacher": keep_by_scores(texts, w, c, t, budget)}
            rand = []
            for seed in range(5):
                rng = np.random.default_rng(seed)
                scores = [rng.random(len(x)) for x in w]
                rand.append(keep_by_scores(texts, w, c, scores, budget))
            for name, comp in (("ctxzip", plain), ("ctxzip+q", aware)):
                res = comp.compress(texts, it["question"], Budget(rate=rate))
                outs[name] = res.texts
            for name, out in outs.items():
                hits[(name, rate)].append(answer_retained("\n".join(out), golds))
                rates[(name, rate)].append(reader.count("\n".join(out)) / max(total, 1))
            hits[("random", rate)].append(
                float(np.mean([answer_retained("\n".join(o), golds) for o in rand]))
            )
            rates[("random", rate)].append(
                float(np.mean([reader.count("\n".join(o)) / max(total, 1) for o in rand]))
            )

    print(f"\n{len(items)} pyref items; answer retained (share of items), achieved rate")
    print("| system | " + " | ".join(f"rate {r}" for r in RATES) + " |")
    print("|---|" + "---|" * len(RATES))
    report = {}
    for s in systems:
        cells = []
        for r in RATES:
            h, a = float(np.mean(hits[(s, r)])), float(np.mean(rates[(s, r)]))
            cells.append(f"{h:.1%} (rate {a:.2f})")
            report[f"{s}@{r}"] = {"answer_retained": h, "achieved_rate": a}
        print(f"| {s} | " + " | ".join(cells) + " |")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {args.out / 'report.json'}")


if __name__ == "__main__":
    main()
