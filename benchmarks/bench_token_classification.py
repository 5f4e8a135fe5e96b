"""`token-classification` against llmlingua 0.2.2 (LLMLingua-2 mode), same model, text, rate.

Both sides load the same checkpoint folder: the shipped all-MiniLM-L6-v2 keep/drop model
saved as an ordinary Hugging Face token classifier, in a folder whose name contains
``bert-base-multilingual-cased`` (llmlingua picks its WordPiece word-merging rule from
that name). Both count tokens with cl100k_base (llmlingua's own counter), so rates compare.

llmlingua runs in its own virtual environment (it needs transformers 4.46.3); make it once:

    python -m venv /tmp/ll-venv
    /tmp/ll-venv/bin/pip install llmlingua==0.2.2 transformers==4.46.3 torch

Runs, repeated and interleaved (ctxzip, llmlingua, ctxzip) so load on the machine hits
both; the ratio uses each side's best time (noise only ever adds time):

  llmlingua   PromptCompressor(use_llmlingua2=True).compress_prompt(text, rate)
  fp32        ctxzip, full precision, global budget (the default)
  per-chunk   ctxzip, full precision, LLMLingua-2's per-chunk rule (for word agreement)
  int8        ctxzip, CPU fast path (fast=True)

and, for the fp32 run, the share of time outside the model forward (post-processing).

    TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 .venv/bin/python \\
        benchmarks/bench_token_classification.py [--llmlingua-python /tmp/ll-venv/bin/python]
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import statistics
import subprocess
import sys
import time
import unicodedata
import warnings
from pathlib import Path
from typing import Any

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
warnings.filterwarnings("ignore")

import numpy as np  # noqa: E402
from ctxzip.compressors.token_classification import (  # noqa: E402
    TokenClassificationCompressor,
    load_token_classifier,
)
from ctxzip.compressors.token_labels import (  # noqa: E402
    codepoints,
    merge_words,
    space_mask,
    word_rule,
)

from ctxzip import Budget  # noqa: E402
from ctxzip.protect import Protect  # noqa: E402
from ctxzip.tokens import count_tokens, get_tokenizer  # noqa: E402

READER = "gpt-3.5-turbo"  # cl100k_base, what llmlingua counts with
FOLDER_NAME = "ctxzip-minilm-keep-drop-as-bert-base-multilingual-cased"

LLMLINGUA_RUNNER = r"""
import json, sys, time, warnings
warnings.filterwarnings("ignore")
from llmlingua import PromptCompressor
folder, text_file, rate, repeats = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
text = open(text_file, encoding="utf-8").read()
pc = PromptCompressor(model_name=folder, use_llmlingua2=True, device_map="cpu")
pc.compress_prompt(text, rate=rate)  # warm-up
seconds = []
for _ in range(repeats):
    t = time.perf_counter()
    out = pc.compress_prompt(text, rate=rate, return_word_label=True)
    seconds.append(time.perf_counter() - t)
pairs = [w.rsplit(" ", 1) for w in out["fn_labeled_original_prompt"].split("\t\t|\t\t")]
print(json.dumps({
    "seconds": seconds,
    "origin_tokens": out["origin_tokens"],
    "compressed_tokens": out["compressed_tokens"],
    "words": [p[0] for p in pairs],
    "labels": [int(p[1]) for p in pairs],
}))
"""


def build_text(tokens: int) -> str:
    """CPython's language reference (ships with Python), cut at a paragraph to ~`tokens`."""
    from pydoc_data.topics import topics

    paras: list[str] = []
    used = 0
    for key in sorted(topics):
        for para in topics[key].split("\n\n"):
            if not para.strip():
                continue
            n = count_tokens(para, READER)
            if used + n > tokens:
                return "\n\n".join(paras)
            paras.append(para.strip("\n"))
            used += n
    return "\n\n".join(paras)


def export_model(out: Path) -> Path:
    """The shipped model as a plain HF token-classification folder (label 1 = keep)."""
    folder = out / FOLDER_NAME
    if not (folder / "config.json").exists():
        lm = load_token_classifier()
        lm.model.config.id2label = {0: "drop", 1: "keep"}
        lm.model.config.label2id = {"drop": 0, "keep": 1}
        lm.model.save_pretrained(folder)
        lm.tokenizer.save_pretrained(folder)
    return folder


def run_llmlingua(python: str, folder: Path, text_file: Path, rate: float, repeats: int) -> dict:
    get_tokenizer(READER)  # seeds tiktoken's offline cache, which the child shares
    env = dict(os.environ, TIKTOKEN_CACHE_DIR=_tiktoken_dir(), HF_HUB_OFFLINE="1")
    proc = subprocess.run(
        [python, "-c", LLMLINGUA_RUNNER, str(folder), str(text_file), str(rate), str(repeats)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if proc.returncode != 0:
        sys.exit(f"llmlingua run failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _tiktoken_dir() -> str:
    from ctxzip.tokens import _tiktoken_cache_dir

    return _tiktoken_cache_dir()


def time_ctxzip(comp: TokenClassificationCompressor, text: str, rate: float, repeats: int):
    """Best-of and median seconds, the last result, and the model-forward seconds of each run."""
    lm = comp.loaded
    forward = lm.model.forward
    spent: list[float] = []

    def timed(*args: Any, **kwargs: Any) -> Any:
        t = time.perf_counter()
        try:
            return forward(*args, **kwargs)
        finally:
            spent.append(time.perf_counter() - t)

    comp.compress(text, budget=Budget(rate=rate))  # warm-up (tokenizer tables, threads)
    seconds, forwards = [], []
    lm.model.forward = timed
    try:
        for _ in range(repeats):
            spent.clear()
            t = time.perf_counter()
            res = comp.compress(text, budget=Budget(rate=rate))
            seconds.append(time.perf_counter() - t)
            forwards.append(sum(spent))
    finally:
        del lm.model.forward
    return seconds, forwards, res


def _norm(word: str) -> str:
    word = unicodedata.normalize("NFD", word.lower())
    return "".join(ch for ch in word if unicodedata.category(ch) != "Mn")


def word_agreement(text: str, res: Any, ll_words: list[str], ll_labels: list[int]) -> float:
    """Share of ctxzip's words whose keep/drop matches llmlingua's (unaligned words count as
    disagreements). Both use the same WordPiece word units; llmlingua's are lower-cased."""
    lm = load_token_classifier()
    enc = lm.backend.encode(text, add_special_tokens=False)
    cps = codepoints(text)
    rule = word_rule(lm.tokenizer)
    ids = np.asarray(enc.ids, dtype=np.int64)
    words = merge_words(ids, np.asarray(enc.offsets).reshape(-1, 2), rule, cps, space_mask(cps))
    covered = np.zeros(len(text) + 1, dtype=np.int64)
    for s, e in res.kept[0]:
        covered[s] += 1
        covered[e] -= 1
    inside = np.concatenate(([0], np.cumsum(np.cumsum(covered)[:-1] > 0)))
    ours = (inside[words.end] - inside[words.start]) > 0
    mine = [_norm(text[s:e]) for s, e in zip(words.start, words.end, strict=True)]
    theirs = [_norm(w) for w in ll_words]
    matcher = difflib.SequenceMatcher(None, mine, theirs, autojunk=False)
    agree = 0
    for a, b, size in matcher.get_matching_blocks():
        agree += int((ours[a : a + size] == np.asarray(ll_labels[b : b + size], bool)).sum())
    return agree / max(len(mine), 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tokens", type=int, default=10_000)
    ap.add_argument("--rate", type=float, default=0.33)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--llmlingua-python", default="/tmp/ll-venv/bin/python")
    ap.add_argument("--out", type=Path, default=Path("runs/bench_token_classification"))
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if not Path(args.llmlingua_python).exists():
        sys.exit(f"no llmlingua environment at {args.llmlingua_python}; see this file's docstring")

    import torch

    text = build_text(args.tokens)
    text_file = args.out / "text.txt"
    text_file.write_text(text, encoding="utf-8")
    folder = export_model(args.out)
    n_in = count_tokens(text, READER)
    print(f"text: {n_in} cl100k tokens, {len(text)} chars; rate {args.rate}; model {folder.name}")
    print(f"torch threads: {torch.get_num_threads()}; cpu count: {os.cpu_count()}")

    # llmlingua's settings: 512-token windows, batches of 50, nothing protected
    opts = {"tokenizer": READER, "max_length": 512, "batch_size": 50, "protect": Protect()}
    systems = {
        "fp32": TokenClassificationCompressor(str(folder), **opts),
        "per-chunk": TokenClassificationCompressor(str(folder), per_chunk=True, **opts),
        "int8": TokenClassificationCompressor(str(folder), fast=True, **opts),
    }
    times: dict[str, list[float]] = {k: [] for k in [*systems, "llmlingua"]}
    fwd: dict[str, list[float]] = {k: [] for k in systems}
    results: dict[str, Any] = {}
    ll: dict[str, Any] = {}
    for round_ in range(2):  # ctxzip, llmlingua, ctxzip: drift hits both sides
        for name, comp in systems.items():
            secs, fws, res = time_ctxzip(comp, text, args.rate, args.repeats)
            times[name] += secs
            fwd[name] += fws
            results[name] = res
        if round_ == 0:
            ll = run_llmlingua(args.llmlingua_python, folder, text_file, args.rate, args.repeats)
            times["llmlingua"] += ll["seconds"]

    best = {k: min(v) for k, v in times.items()}
    med = {k: statistics.median(v) for k, v in times.items()}
    ll_rate = ll["compressed_tokens"] / ll["origin_tokens"]
    agree = word_agreement(text, results["per-chunk"], ll["words"], ll["labels"])
    agree_global = word_agreement(text, results["fp32"], ll["words"], ll["labels"])
    fp_words = _kept_words(text, results["fp32"])
    int8_agree = float((fp_words == _kept_words(text, results["int8"])).mean())

    rows = [
        ("llmlingua 0.2.2", "llmlingua", ll_rate, ll["origin_tokens"]),
        ("ctxzip fp32 (global)", "fp32", results["fp32"].rate, results["fp32"].tokens_in),
        (
            "ctxzip per-chunk",
            "per-chunk",
            results["per-chunk"].rate,
            results["per-chunk"].tokens_in,
        ),
        ("ctxzip int8 (global)", "int8", results["int8"].rate, results["int8"].tokens_in),
    ]
    print()
    print(
        "| system | best s | median s | speed vs llmlingua (best / median) | tokens in | "
        f"achieved rate (asked {args.rate}) | post-processing share |"
    )
    print("|---|---|---|---|---|---|---|")
    report: dict[str, Any] = {"tokens_in": n_in, "rate": args.rate, "systems": {}}
    for label, key, rate, tin in rows:
        post = ""
        if key in fwd:
            shares = [(t - f) / f for t, f in zip(times[key], fwd[key], strict=True)]
            post = f"{min(shares):.1%} of forward"
        speed = f"{best['llmlingua'] / best[key]:.2f}x / {med['llmlingua'] / med[key]:.2f}x"
        print(
            f"| {label} | {best[key]:.2f} | {med[key]:.2f} | {speed} | {tin} | {rate:.3f} | {post} |"
        )
        report["systems"][key] = {
            "seconds": times[key],
            "best": best[key],
            "median": med[key],
            "speedup_best": best["llmlingua"] / best[key],
            "speedup_median": med["llmlingua"] / med[key],
            "achieved_rate": rate,
            "forward_seconds": fwd.get(key),
        }
    print()
    print(f"word agreement with llmlingua, ctxzip per-chunk rule: {agree:.1%} (target >= 95%)")
    print(f"word agreement with llmlingua, ctxzip global rule:    {agree_global:.1%}")
    print(f"word agreement int8 vs fp32 (global rule):           {int8_agree:.1%} (target >= 98%)")
    report.update(agreement_per_chunk=agree, agreement_global=agree_global, int8_vs_fp32=int8_agree)
    (args.out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {args.out / 'report.json'}")


def _kept_words(text: str, res: Any) -> np.ndarray:
    covered = np.zeros(len(text) + 1, dtype=np.int64)
    for s, e in res.kept[0]:
        covered[s] += 1
        covered[e] -= 1
    inside = np.cumsum(covered)[:-1] > 0
    import re

    return np.asarray([inside[m.start() : m.end()].any() for m in re.finditer(r"\S+", text)])


if __name__ == "__main__":
    main()
