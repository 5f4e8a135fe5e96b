"""Answer accuracy against kept visual tokens, with the trained easy-vqa image reader.

Runs the same sweep as

    ctxzip eval -d easy-vqa -m vision-merge,vision-select --rates 1,0.5,0.25,0.1 -n 160 \\
        --max-new-tokens 4

(the reader: the real ViT-S, the projector `ctxzip train llava` ships, the eval's frozen
SmolLM2-135M-Instruct; compression happens inside it), then adds the majority-answer
baseline (the most frequent answer of the train split) and the accuracy per question kind
(shape / colour / yes-no), and writes a table, JSON and a PNG for docs/vision.md.

    TOKENIZERS_PARALLELISM=false nice -n 10 .venv/bin/python benchmarks/bench_vision_reader.py
"""

from __future__ import annotations

import argparse
import json
import os
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from ctxzip.compressors.vision.reader.model import easy_vqa_records
from ctxzip.evals import metrics
from ctxzip.evals.run import run_eval

SHAPES = {"circle", "rectangle", "triangle"}


def kind(answer: str) -> str:
    if answer in ("yes", "no"):
        return "yes/no"
    return "shape" if answer in SHAPES else "colour"


def summarise(records: list[dict[str, Any]], majority: str) -> list[dict[str, Any]]:
    groups: dict[tuple[str, Any], list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        groups[(r["method"], r["rate"])].append(r)
    rows = []
    first = next(iter(groups.values()))
    rows.append(_row("majority answer", None, [(majority, r["answers"]) for r in first], 0))
    for (method, rate), rs in groups.items():
        kept = sum(r["tokens_out"] for r in rs) / len(rs)
        name = "no image (same reader)" if method == "no-context" else method
        rows.append(_row(name, rate, [(r["prediction"], r["answers"]) for r in rs], kept))
    return rows


def _row(name: str, rate: Any, pairs: list[tuple[str, list[str]]], kept: float) -> dict[str, Any]:
    row: dict[str, Any] = {"method": name, "rate": rate, "kept_tokens": kept, "n": len(pairs)}
    em = [metrics.exact_match(p, golds) for p, golds in pairs]
    row["em"] = sum(em) / len(em)
    row["em_lo"], row["em_hi"] = metrics.bootstrap_ci(em)
    by_kind: dict[str, list[float]] = defaultdict(list)
    for (_, golds), hit in zip(pairs, em, strict=True):
        by_kind[kind(golds[0])].append(hit)
    row["by_kind"] = {k: sum(v) / len(v) for k, v in sorted(by_kind.items())}
    return row


def plot(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for row, style in zip(rows[:2], (":", "-."), strict=True):
        ax.axhline(
            row["em"], color="black", linestyle=style, label=f"{row['method']} ({row['em']:.2f})"
        )
    for n, method in enumerate(("vision-merge", "vision-select")):
        rs = sorted((r for r in rows if r["method"] == method), key=lambda r: r["kept_tokens"])
        if not rs:
            continue
        xs = [r["kept_tokens"] for r in rs]
        ax.errorbar(
            xs,
            [r["em"] for r in rs],
            yerr=[[r["em"] - r["em_lo"] for r in rs], [r["em_hi"] - r["em"] for r in rs]],
            marker="o",
            capsize=3,
            color=f"C{n}",
            label=method,
        )
    ax.set_xscale("log", base=2)
    ax.set_xticks([6, 16, 32, 64], ["6\n(10%)", "16\n(25%)", "32\n(50%)", "64\n(100%)"])
    ax.set_xlabel("visual tokens kept per image (of 64)")
    ax.set_ylabel("exact-match accuracy")
    ax.set_ylim(0, 1)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--limit", type=int, default=160)
    parser.add_argument("--rates", default="1,0.5,0.25,0.1")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="runs/eval-easy-vqa")
    parser.add_argument("--docs", default="docs/img")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    settings = {
        "dataset": "easy-vqa",
        "methods": ["vision-merge", "vision-select"],
        "rates": [float(r) for r in args.rates.split(",")],
        "reader": "local",
        "limit": args.limit,
        "out": args.out,
        "seed": 0,
        "batch_size": 8,
        "max_new_tokens": 4,
        "method_options": {},
    }
    result = run_eval(settings, progress=True)
    if result["failed"]:
        raise SystemExit(f"failed: {result['failed']}")
    majority = Counter(r.answer for r in easy_vqa_records("train")).most_common(1)[0][0]
    rows = summarise(result["records"], majority)
    print(f"majority answer (train split): {majority!r}")
    print("| reader | kept tokens | exact match (95% CI) | shape | colour | yes/no |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        k = r["by_kind"]
        print(
            f"| {r['method']}{'' if r['rate'] is None else ' @ ' + format(r['rate'], 'g')} "
            f"| {r['kept_tokens']:.0f} | {r['em']:.3f} ({r['em_lo']:.2f}-{r['em_hi']:.2f}) "
            f"| {k.get('shape', 0):.2f} | {k.get('colour', 0):.2f} | {k.get('yes/no', 0):.2f} |"
        )
    docs = Path(args.docs)
    docs.mkdir(parents=True, exist_ok=True)
    n = rows[0]["n"]
    plot(
        rows,
        docs / "vision_reader.png",
        f"easy-vqa test, n={n}: ViT-S + trained projector + SmolLM2-135M",
    )
    (docs / "vision_reader.json").write_text(
        json.dumps({"majority": majority, "rows": rows}, indent=1)
    )
    print(f"wrote {docs / 'vision_reader.png'} and {docs / 'vision_reader.json'}")


if __name__ == "__main__":
    main()
