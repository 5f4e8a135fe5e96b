"""Answer retention of the word-level methods against sentence baselines, on held-out QA.

Reader-free: an item counts when a gold answer string still occurs in the compressed
text (`ctxzip.evals.metrics.answer_retained`). Every system gets the same items and
the same budget (rate x gpt-4o tokens over all of an item's contexts, the question given
to the methods that take one); baselines are measured in the same run:

  truncate              the head of each context up to the budget
  random sentences      whole sentences dropped at random (seeded) until the budget fits
  extractive            the best sentences for the question (MiniLM bi-encoder)
  token-classification  the shipped keep/drop model without the question (plain), and
                        with it (+q: the default, question-aware, path when a query is given)
  coarse-to-fine        extractive to 2x the budget, then token-classification to it

Data the shipped model never trained on:

  pyref held-out   the bundled set's held-out topics (`train.heldout_topic`)
  synthetic        `ctxzip.evals.generate` items (invented entities; seed 0)

    TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 .venv/bin/python \\
        benchmarks/bench_token_classification_quality.py [--synthetic 60] [--out DIR]

Prints one table per data set and writes report.json and retention.png to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import warnings
from pathlib import Path
from typing import Any

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
warnings.filterwarnings("ignore")

import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

from ctxzip import Budget, get_compressor  # noqa: E402
from ctxzip.compressors.token_classification.train import (  # noqa: E402
    bundled_qa,
    read_qa,
    split_records,
)
from ctxzip.evals.baselines import RandomSentenceDrop  # noqa: E402
from ctxzip.evals.generate import generate  # noqa: E402
from ctxzip.evals.metrics import answer_retained  # noqa: E402
from ctxzip.result import CompressionRequest  # noqa: E402

RATES = (0.5, 0.33, 0.2, 0.1)


def datasets(n_synthetic: int, seed: int) -> dict[str, list[dict[str, Any]]]:
    """Held-out pyref items and generated items, as {question, answers, contexts}."""
    _, held = split_records(read_qa(bundled_qa()))
    pyref = [
        {"question": r["question"], "answers": r["golden_answers"], "contexts": r["contexts"]}
        for r in held
    ]
    syn = [
        {"question": it.question, "answers": it.answers, "contexts": it.contexts}
        for it in generate(n_items=n_synthetic, n_docs=5, seed=seed)
    ]
    return {"pyref held-out": pyref, "synthetic": syn}


def systems() -> dict[str, tuple[Any, bool]]:
    """name -> (compressor, whether it is given the question)."""
    return {
        "truncate": (get_compressor("truncate"), False),
        "random sentences": (RandomSentenceDrop(), False),
        "extractive": (get_compressor("extractive"), True),
        "token-classification": (get_compressor("token-classification"), False),
        "token-classification +q": (get_compressor("token-classification"), True),
        "coarse-to-fine": (get_compressor("coarse-to-fine"), True),
    }


def measure(
    items: list[dict[str, Any]], comp: Any, with_query: bool, rate: float
) -> tuple[float, float]:
    """(share of items with a gold answer retained, mean achieved rate)."""
    requests = [
        CompressionRequest(
            tuple(it["contexts"]), it["question"] if with_query else None, Budget(rate=rate)
        )
        for it in items
    ]
    results = comp.compress_batch(requests)
    hits = [
        answer_retained("\n".join(r.texts), it["answers"])
        for r, it in zip(results, items, strict=True)
    ]
    return float(np.mean(hits)), float(np.mean([r.rate for r in results]))


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(report)
    fig, axes = plt.subplots(1, len(names), figsize=(6 * len(names), 4.5), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        for system, cells in report[name].items():
            xs = [cells[str(r)]["achieved_rate"] for r in RATES]
            ys = [100 * cells[str(r)]["answer_retained"] for r in RATES]
            style = "--" if system in ("truncate", "random sentences") else "-"
            ax.plot(xs, ys, style, marker="o", label=system)
        ax.set_title(f"{name}")
        ax.set_xlabel("achieved rate (gpt-4o tokens kept)")
        ax.set_ylabel("answer retained (%)")
        ax.set_xlim(0, 0.6)
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--synthetic", type=int, default=60, help="generated items")
    ap.add_argument("--seed", type=int, default=0, help="seed of the generated items")
    ap.add_argument("--out", type=Path, default=Path("runs/bench_token_classification_quality"))
    ap.add_argument("--only", nargs="*", help="run only these systems (exploration; no summary)")
    args = ap.parse_args()
    data = datasets(args.synthetic, args.seed)
    comps = systems()
    if args.only:
        comps = {k: v for k, v in comps.items() if k in args.only}
    report: dict[str, Any] = {}
    for name, items in data.items():
        report[name] = {}
        for system, (comp, with_query) in tqdm(list(comps.items()), desc=name, unit="system"):
            report[name][system] = {}
            for rate in RATES:
                hit, achieved = measure(items, comp, with_query, rate)
                report[name][system][str(rate)] = {
                    "answer_retained": round(hit, 4),
                    "achieved_rate": round(achieved, 4),
                }
        print(f"\n{name}: {len(items)} items; answer retained (achieved rate)")
        print("| system | " + " | ".join(f"rate {r}" for r in RATES) + " |")
        print("|---|" + "---|" * len(RATES))
        for system, cells in report[name].items():
            row = [
                f"{100 * cells[str(r)]['answer_retained']:.0f} ({cells[str(r)]['achieved_rate']:.2f})"
                for r in RATES
            ]
            print(f"| {system} | " + " | ".join(row) + " |")
        if args.only:
            continue
        for rate in (0.5, 0.33):
            base = max(
                report[name][b][str(rate)]["answer_retained"]
                for b in ("truncate", "random sentences")
            )
            for system in ("token-classification", "token-classification +q"):
                gain = report[name][system][str(rate)]["answer_retained"] - base
                print(f"{system} @ {rate}: {100 * gain:+.0f} points over the best baseline")
        for rate in (0.2, 0.1):
            gain = (
                report[name]["coarse-to-fine"][str(rate)]["answer_retained"]
                - report[name]["extractive"][str(rate)]["answer_retained"]
            )
            print(f"coarse-to-fine @ {rate}: {100 * gain:+.0f} points over extractive")
    args.out.mkdir(parents=True, exist_ok=True)
    if args.only:
        return
    (args.out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    plot(report, args.out / "retention.png")
    print(f"\nwrote {args.out / 'report.json'} and {args.out / 'retention.png'}")


if __name__ == "__main__":
    main()
