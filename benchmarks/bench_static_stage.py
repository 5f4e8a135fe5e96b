"""The static first stage of `extractive` against the MiniLM path: speed and answer retention.

Same data as bench_extractive.py (CPython language-reference questions, each with its
gold document among BM25-nearest distractors; tests/data/pyref_extractive_qa.jsonl,
never used to build or tune the static model). Systems, interleaved question by question:

  minilm      ExtractiveCompressor(threshold=None): MiniLM scores every sentence
  static      first_stage="static", second_stage_s=0: static scores alone
  two-stage   first_stage="static", second_stage_s=None: static narrows to `survivors` x
              the budget, MiniLM re-scores the survivors (the proxy's default when idle)

Retention: the share of questions whose gold answer string survives compression.
The MiniLM sentence cache is kept across systems and rates (it changes no result, and
each sentence is encoded once), so per-call times here are not speeds: the throughput
line at the top compares the two encoders on the same sentences, caches cleared.

    TOKENIZERS_PARALLELISM=false .venv/bin/python benchmarks/bench_static_stage.py --docs 10
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_extractive import ROOT, cases, norm

from ctxzip import Budget
from ctxzip.compressors.extractive import ExtractiveCompressor
from ctxzip.static_encoder import get_static_encoder
from ctxzip.units import split_sentences


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--limit", type=int, default=45, help="questions (of 45)")
    p.add_argument("--docs", type=int, default=10, help="documents per question")
    p.add_argument("--rates", default="0.33,0.2")
    p.add_argument("--survivors", type=float, default=2.0)
    p.add_argument("--out", default=str(ROOT / "docs" / "img" / "bench_static_stage.json"))
    args = p.parse_args()
    data = cases(args.docs, args.limit)
    systems = {
        "minilm": ExtractiveCompressor(threshold=None, device="cpu"),
        "static": ExtractiveCompressor(threshold=None, device="cpu", first_stage="static",
                                       second_stage_s=0.0, survivors=args.survivors),
        "two-stage": ExtractiveCompressor(threshold=None, device="cpu", first_stage="static",
                                          second_stage_s=None, survivors=args.survivors),
    }  # fmt: skip
    for comp in systems.values():  # load every model once
        comp.compress(data[0]["contexts"][:2], data[0]["question"], Budget(rate=0.5))
    # raw scoring throughput, same sentences
    sentences = [u.text for c in data[0]["contexts"] for u in split_sentences(c)][:400]
    enc = systems["minilm"].encoder
    enc.clear_cache()
    t = time.perf_counter()
    enc.encode(sentences)
    minilm_sps = len(sentences) / (time.perf_counter() - t)
    static = get_static_encoder()
    t = time.perf_counter()
    for _ in range(5):
        static.encode(sentences)
    static_sps = 5 * len(sentences) / (time.perf_counter() - t)
    print(f"scoring throughput: MiniLM {minilm_sps:.0f} sentences/s, static {static_sps:.0f} "
          f"({static_sps / minilm_sps:.0f}x)")  # fmt: skip
    report: dict[str, object] = {
        "questions": len(data), "docs": args.docs, "survivors": args.survivors,
        "minilm_sentences_per_s": round(minilm_sps), "static_sentences_per_s": round(static_sps),
        "rates": {},
    }  # fmt: skip
    for rate in [float(r) for r in args.rates.split(",")]:
        budget = Budget(rate=rate)
        kept = dict.fromkeys(systems, 0)
        secs: dict[str, list[float]] = {n: [] for n in systems}
        for k, case in enumerate(data):
            if k % 15 == 0:
                print(f"  rate {rate}: question {k}/{len(data)}", flush=True)
            ctx, q, ans = case["contexts"], case["question"], norm(case["answer"])
            for name, comp in systems.items():
                t = time.perf_counter()
                r = comp.compress(ctx, q, budget)
                secs[name].append(time.perf_counter() - t)
                kept[name] += ans in norm(r.text)
        n = len(data)
        rows = {
            name: {"retention_pct": round(100 * kept[name] / n, 1),
                   "median_s": round(statistics.median(secs[name]), 4)}
            for name in systems
        }  # fmt: skip
        report["rates"][str(rate)] = rows  # type: ignore[index]
        print(f"rate {rate}: " + "; ".join(
            f"{k} {v['retention_pct']}% in {v['median_s']}s" for k, v in rows.items()))  # fmt: skip
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
