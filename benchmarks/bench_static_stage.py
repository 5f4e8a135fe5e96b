"""The static first stage of `extractive` against the MiniLM path: speed and answer retention.

Held-out questions, none used to build the static model; three slices, each with its own
distractors:

  pyref-x    tests/data/pyref_extractive_qa.jsonl (45): CPython language-reference questions,
             each with its gold ~500-token document among the BM25-nearest others (`--docs`)
  pyref      the bundled `pyref` set (171): shorter reference passages, the gold one among 3
             distractors (one from the same topic)
  synthetic  `--synthetic` generated questions about invented entities, with look-alike
             distractors stating the same relation for other entities (difficulty 2)

Every question falls in the `tune` or the `test` split by a hash of its id; settings of
the static stage were chosen on `tune` only, and `--split test` reports the other half.

Systems, interleaved question by question, each at every rate:

  minilm      ExtractiveCompressor(threshold=None): MiniLM scores every sentence
  static      first_stage="static", second_stage_s=0: static scores alone (the proxy under load)
  two-stage   first_stage="static", second_stage_s=None: static narrows to `survivors` x
              the budget, MiniLM re-scores the survivors (the proxy's default when idle)
  random      whole sentences dropped at random to the budget (evals' seeded baseline)
  truncate    the head of each context up to the budget

Retention: the share of questions whose gold answer survives compression (the evals'
`answer_retained`: normalised, whole tokens). The achieved rate (tokens out / tokens in)
is reported for every system, so the baselines are read at the rate they really kept.
The MiniLM sentence cache is kept across systems and rates (it changes no result), so the
throughput line at the top, caches cleared, is the speed to read.

    HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false \
        .venv/bin/python benchmarks/bench_static_stage.py          # all slices, both splits
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_extractive import ROOT, cases
from tqdm import tqdm

from ctxzip import Budget
from ctxzip.compressors.extractive import ExtractiveCompressor
from ctxzip.compressors.truncate import TruncateCompressor
from ctxzip.evals.baselines import RandomSentenceDrop
from ctxzip.evals.datasets import load_dataset
from ctxzip.evals.metrics import answer_retained
from ctxzip.result import CompressionRequest
from ctxzip.static_encoder import FirstStage, Fusion, get_static_encoder

SYSTEMS = ("minilm", "static", "two-stage", "random", "truncate")


def split_of(qid: str) -> str:
    """`tune` or `test`, stable across runs and machines."""
    return "tune" if hashlib.sha256(qid.encode()).digest()[0] % 2 == 0 else "test"


def questions(docs: int, synthetic: int, split: str) -> list[dict[str, Any]]:
    """Every held-out question as {slice, id, question, answers, contexts}."""
    out = [
        {"slice": "pyref-x", "id": c["id"], "question": c["question"],
         "answers": [c["answer"]], "contexts": c["contexts"]}
        for c in cases(docs, None)
    ]  # fmt: skip
    out += [
        {"slice": "pyref", "id": it.id, "question": it.question, "answers": it.answers,
         "contexts": it.contexts}
        for it in load_dataset("pyref")
    ]  # fmt: skip
    if synthetic:
        out += [
            {"slice": "synthetic", "id": f"syn-{it.id}", "question": it.question,
             "answers": it.answers, "contexts": it.contexts}
            for it in load_dataset("synthetic", n_items=synthetic, n_docs=5, doc_sentences=6,
                                   difficulty=2, seed=7)
        ]  # fmt: skip
    for q in out:
        q["split"] = split_of(q["id"])
    return [q for q in out if split in ("all", q["split"])]


def systems(survivors: float, fusion: Fusion) -> dict[str, Any]:
    out: dict[str, Any] = {
        "minilm": ExtractiveCompressor(threshold=None, device="cpu"),
        "static": ExtractiveCompressor(threshold=None, device="cpu", first_stage="static",
                                       second_stage_s=0.0, survivors=survivors),
        "two-stage": ExtractiveCompressor(threshold=None, device="cpu", first_stage="static",
                                          second_stage_s=None, survivors=survivors),
        "random": RandomSentenceDrop(),
        "truncate": TruncateCompressor(),
    }  # fmt: skip
    for name in ("static", "two-stage"):
        out[name].stage.fusion = fusion
    return out


def throughput(data: list[dict[str, Any]], minilm: ExtractiveCompressor,
               stage: FirstStage) -> tuple[float, float]:  # fmt: skip
    """Sentences per second scored against a query: MiniLM (vectors and cosine), and the
    static first stage (vectors, token match, BM25: `FirstStage.scores`)."""
    query = data[0]["question"]
    plans = [minilm._plan(CompressionRequest.of(q["contexts"], q["question"], Budget(rate=0.2)))
             for q in data[:20]]  # fmt: skip
    pieces = [p for plan in plans for p in plan[0]][:400]
    sentences = [p.text for p in pieces]
    enc = minilm.encoder
    enc.clear_cache()
    t = time.perf_counter()
    vecs = enc.encode([query, *sentences])
    _ = vecs[1:] @ vecs[0]
    minilm_sps = len(sentences) / (time.perf_counter() - t)
    static = get_static_encoder()
    t = time.perf_counter()
    for _ in range(5):
        vecs = static.encode([query, *sentences])
        stage.scores(query, pieces, vecs[1:], vecs[0])
    return minilm_sps, 5 * len(sentences) / (time.perf_counter() - t)


def share(kept: dict[str, bool], data: list[dict[str, Any]], key: str) -> dict[str, float]:
    """Retention (%) within each group of questions by `key` (slice or split)."""
    groups = sorted({q[key] for q in data})
    return {
        g: round(100 * sum(kept[q["id"]] for q in data if q[key] == g)
                 / sum(q[key] == g for q in data), 1)
        for g in groups
    }  # fmt: skip


def run(data: list[dict[str, Any]], comps: dict[str, Any], rates: list[float]) -> dict[str, Any]:
    """Per rate and system: questions kept (by slice) and the achieved rate."""
    hits = {r: {s: {} for s in comps} for r in rates}  # rate -> system -> id -> kept
    ratio: dict[float, dict[str, list[float]]] = {r: {s: [] for s in comps} for r in rates}
    for q in tqdm(data, desc="questions", mininterval=5):
        for rate in rates:
            for name, comp in comps.items():
                res = comp.compress(q["contexts"], q["question"], Budget(rate=rate))
                hits[rate][name][q["id"]] = bool(answer_retained(res.text, q["answers"]))
                ratio[rate][name].append(res.tokens_out / max(res.tokens_in, 1))
    table: dict[str, Any] = {}
    for rate in rates:
        rows: dict[str, Any] = {}
        for name in comps:
            kept = hits[rate][name]
            row: dict[str, Any] = {
                "retention_pct": round(100 * sum(kept.values()) / len(data), 1),
                "achieved_rate": round(sum(ratio[rate][name]) / len(data), 3),
                "by_slice": share(kept, data, "slice"),
                "by_split": share(kept, data, "split"),
            }
            if name != "minilm":  # discordant pairs against MiniLM
                ref = hits[rate]["minilm"]
                row["lost"] = sorted(i for i in kept if ref[i] and not kept[i])
                row["gained"] = sorted(i for i in kept if kept[i] and not ref[i])
            rows[name] = row
        table[str(rate)] = rows
    return table


def markdown(table: dict[str, Any], n: int) -> str:
    rates = list(table)
    head = "| system | " + " | ".join(f"rate {r}" for r in rates) + " |"
    lines = [head, "|---" * (len(rates) + 1) + "|"]
    for name in SYSTEMS:
        cells = []
        for r in rates:
            row = table[r][name]
            delta = row["retention_pct"] - table[r]["minilm"]["retention_pct"]
            sign = f" ({delta:+.1f})" if name != "minilm" else ""
            cells.append(f"{row['retention_pct']:.1f}%{sign} @ {row['achieved_rate']:.2f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append(f"\n{n} questions; cells: retention (points against MiniLM) @ achieved rate")
    return "\n".join(lines)


def plot(table: dict[str, Any], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    style = {"minilm": ("C0", "-", "o"), "static": ("C1", "-", "D"),
             "two-stage": ("C2", "-", "^"), "random": ("0.65", ":", "v"),
             "truncate": ("0.45", "--", "s")}  # fmt: skip
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for name in SYSTEMS:
        xs = [table[r][name]["achieved_rate"] for r in table]
        ys = [table[r][name]["retention_pct"] for r in table]
        colour, line, marker = style[name]
        ax.plot(xs, ys, color=colour, linestyle=line, marker=marker, label=name)
    ax.set_xlabel("achieved rate (tokens kept / tokens in)")
    ax.set_ylabel("answer retention (%)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--docs", type=int, default=5, help="documents per pyref-x question")
    p.add_argument("--synthetic", type=int, default=60, help="generated questions (0: none)")
    p.add_argument("--split", default="all", choices=["all", "tune", "test"])
    p.add_argument("--rates", default="0.5,0.33,0.2,0.1")
    p.add_argument("--survivors", type=float, default=2.0)
    p.add_argument(
        "--fusion",
        default=None,
        metavar="TOKENS,LEXICAL,DOCUMENT",
        help="weights of the static score (default: Fusion(); 0,0,0: cosine alone)",
    )
    p.add_argument("--out", default=str(ROOT / "docs" / "img" / "bench_static_stage.json"))
    args = p.parse_args()
    data = questions(args.docs, args.synthetic, args.split)
    fusion = Fusion(*map(float, args.fusion.split(","))) if args.fusion else Fusion()
    comps = systems(args.survivors, fusion)
    for name in ("minilm", "static", "two-stage"):  # load every model once
        comps[name].compress(data[0]["contexts"][:2], data[0]["question"], Budget(rate=0.5))
    minilm_sps, static_sps = throughput(data, comps["minilm"], comps["static"].stage)
    print(f"scoring throughput: MiniLM {minilm_sps:.0f} sentences/s, static {static_sps:.0f} "
          f"({static_sps / minilm_sps:.0f}x)", flush=True)  # fmt: skip
    table = run(data, comps, [float(r) for r in args.rates.split(",")])
    by_slice = {s: sum(q["slice"] == s for q in data) for s in sorted({q["slice"] for q in data})}
    print(markdown(table, len(data)) + f" ({by_slice}, split {args.split})")
    report = {
        "questions": len(data), "slices": by_slice, "split": args.split, "docs": args.docs,
        "survivors": args.survivors, "fusion": vars(fusion), "minilm_sentences_per_s": round(minilm_sps),
        "static_sentences_per_s": round(static_sps), "rates": table,
    }  # fmt: skip
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    title = f"{len(data)} held-out questions ({args.split}), static vs MiniLM first stage"
    plot(table, out.with_suffix(".png"), title)
    print(f"wrote {out} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
