"""The int8 fast path's recipe: kept-word agreement with fp32 on several texts, and speed.

`fast=True` runs an int8 graph in which the classifier and the first and last encoder
layers stay fp32 and every other matrix product is smoothed, then quantised (see
`ctxzip.compressors.token_classification.onnx`). This script compares that recipe with
two variants built the same way in a scratch folder: every layer int8 with smoothing, and
every layer int8 without it. For each graph it reports the kept-word agreement with the
fp32 graph (global rule, whitespace words) on four ~10k-token texts at rates 0.33 and 0.5,
and the median wall time of whole `compress` calls on the first text, with all graphs
timed in interleaved rounds (so load from other jobs hits them alike).

    TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 .venv/bin/python \\
        benchmarks/bench_token_classification_int8.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).parent))

import numpy as np
from bench_token_classification import READER, _kept_words, build_text
from tqdm import tqdm

from ctxzip import Budget
from ctxzip.compressors.token_classification import TokenClassificationCompressor
from ctxzip.compressors.token_classification.model import calibration_feeds
from ctxzip.compressors.token_classification.onnx import (
    OnnxTokenClassifier,
    _quantise,
)
from ctxzip.protect import Protect

RATES = (0.33, 0.5)


def texts() -> dict[str, str]:
    docs = Path(__file__).resolve().parent.parent / "docs"
    prose = "\n\n".join(p.read_text(encoding="utf-8") for p in sorted(docs.glob("*.md")))
    return {
        "reference 0-10k": build_text(10_000),
        "reference 10-20k": build_text(10_000, skip=10_000),
        "reference 30-40k": build_text(10_000, skip=30_000),
        "ctxzip docs": prose[:45_000],
    }


def only_classifier(nodes: Any) -> list[str]:
    return [n.name for n in nodes if "classifier" in n.name]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    opts: dict[str, Any] = {"tokenizer": READER, "max_length": 512, "protect": Protect()}
    full = TokenClassificationCompressor(**opts)
    fast = TokenClassificationCompressor(fast=True, **opts)
    lm = fast.loaded
    shipped = lm.model
    fp32_folder = full.loaded.model.path.parent

    def calibration() -> list[dict[str, np.ndarray]]:
        return calibration_feeds(lm.backend, lm.prefix, lm.suffix, lm.max_length)

    scratch = Path(tempfile.mkdtemp(prefix="ctxzip-int8-"))
    graphs: dict[str, Any] = {"shipped: first and last layers fp32, smoothed": shipped}
    for name, alpha in (("every layer int8, smoothed", 0.75), ("every layer int8, plain", None)):
        out = scratch / name.replace(" ", "-").replace(",", "")
        out.mkdir()
        _quantise(fp32_folder, out, calibration, alpha=alpha, keep_fp32=only_classifier)
        graphs[name] = OnnxTokenClassifier(out / "model.onnx", shipped.threads, shipped.config)

    samples = texts()
    cases = [(t, r) for t in samples for r in RATES]
    reference = {
        (t, r): _kept_words(samples[t], full.compress(samples[t], budget=Budget(rate=r)))
        for t, r in tqdm(cases, desc="fp32 reference")
    }
    agreement: dict[str, list[float]] = {}
    seconds: dict[str, list[float]] = {name: [] for name in graphs}
    first = next(iter(samples.values()))
    try:
        for name, model in graphs.items():
            lm.model = model
            agreement[name] = [
                float(
                    np.mean(
                        _kept_words(samples[t], fast.compress(samples[t], budget=Budget(rate=r)))
                        == reference[t, r]
                    )
                )
                for t, r in tqdm(cases, desc=name)
            ]
            fast.compress(first, budget=Budget(rate=0.33))  # warm
        seconds["fp32"] = []
        for _ in tqdm(range(args.rounds), desc="interleaved timing rounds"):
            start = time.perf_counter()
            full.compress(first, budget=Budget(rate=0.33))
            seconds["fp32"].append(time.perf_counter() - start)
            for name, model in graphs.items():
                lm.model = model
                start = time.perf_counter()
                fast.compress(first, budget=Budget(rate=0.33))
                seconds[name].append(time.perf_counter() - start)
    finally:
        lm.model = shipped

    heads = " | ".join(f"{t}, {r}" for t, r in cases)
    print(f"\n| int8 graph | {heads} | mean | worst | median s | speed vs fp32 |")
    print("|---|" + "---|" * (len(cases) + 4))
    base = statistics.median(seconds["fp32"])
    print(f"| fp32 | {' | '.join('-' for _ in cases)} | - | - | {base:.2f} | 1.00x |")
    for name, values in agreement.items():
        med = statistics.median(seconds[name])
        cells = " | ".join(f"{v:.1%}" for v in values)
        print(
            f"| {name} | {cells} | {np.mean(values):.1%} | {min(values):.1%} | "
            f"{med:.2f} | {base / med:.2f}x |"
        )
    print(f"\nload average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
