"""`token-classification` against llmlingua 0.2.2 (LLMLingua-2 mode), same model, text, rate.

Both sides load the same checkpoint folder: the shipped all-MiniLM-L6-v2 keep/drop model
saved as an ordinary Hugging Face token classifier, in a folder whose name contains
``bert-base-multilingual-cased`` (llmlingua picks its WordPiece word-merging rule from
that name). Both count tokens with cl100k_base (llmlingua's own counter), so rates compare.

llmlingua runs in its own virtual environment (it needs transformers 4.46.3); make it once:

    python -m venv /tmp/ll-venv
    /tmp/ll-venv/bin/pip install llmlingua==0.2.2 transformers==4.46.3 torch

llmlingua runs as a worker process that stays loaded, so each round times one call of
every system back to back (llmlingua, then each ctxzip system): load from other jobs
hits all sides alike. Medians of wall and of CPU seconds (CPU time is far less
sensitive to a shared machine) are reported, with the load average per round:

  llmlingua   PromptCompressor(use_llmlingua2=True).compress_prompt(text, rate)
  fp32        ctxzip, full precision, global budget (the default: ONNX Runtime on CPU)
  fast        ctxzip, CPU fast path (fast=True: int8 ONNX Runtime graph)
  torch fp32  ctxzip on plain torch (--torch)

then, untimed: ctxzip's per-chunk rule (LLMLingua-2's) for word agreement with
llmlingua, kept-word agreement of fast vs fp32, achieved vs requested rates, and the
time outside the model forward (post-processing). About 3-4 minutes on 2 busy cores.

    TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 .venv/bin/python \\
        benchmarks/bench_token_classification.py [--rounds 5] [--torch] \\
        [--llmlingua-python /tmp/ll-venv/bin/python]
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import re
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
from tqdm import tqdm  # noqa: E402

from ctxzip import Budget  # noqa: E402
from ctxzip.compressors.token_classification import (  # noqa: E402
    TokenClassificationCompressor,
    load_token_classifier,
)
from ctxzip.compressors.token_classification.words import (  # noqa: E402
    codepoints,
    space_mask,
    whitespace_words,
)
from ctxzip.protect import Protect  # noqa: E402
from ctxzip.spans import join_spans, overlapping  # noqa: E402
from ctxzip.tokens import count_tokens, get_tokenizer  # noqa: E402

READER = "gpt-3.5-turbo"  # cl100k_base, what llmlingua counts with
FOLDER_NAME = "ctxzip-minilm-keep-drop-as-bert-base-multilingual-cased"

LLMLINGUA_WORKER = r"""
import json, sys, time, warnings
warnings.filterwarnings("ignore")
from llmlingua import PromptCompressor
folder, text_file, rate = sys.argv[1], sys.argv[2], float(sys.argv[3])
text = open(text_file, encoding="utf-8").read()
pc = PromptCompressor(model_name=folder, use_llmlingua2=True, device_map="cpu")
pc.compress_prompt(text, rate=rate)  # warm-up
print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:  # one timed call per line: the parent interleaves these with its own
    t, c = time.perf_counter(), time.process_time()
    out = pc.compress_prompt(text, rate=rate, return_word_label=True)
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    pairs = [w.rsplit(" ", 1) for w in out["fn_labeled_original_prompt"].split("\t\t|\t\t")]
    print(json.dumps({
        "seconds": wall, "cpu": cpu,
        "origin_tokens": out["origin_tokens"],
        "compressed_tokens": out["compressed_tokens"],
        "words": [p[0] for p in pairs],
        "labels": [int(p[1]) for p in pairs],
    }), flush=True)
"""


def build_text(tokens: int, skip: int = 0) -> str:
    """CPython's language reference (ships with Python), cut at paragraphs to ~`tokens`,
    starting after its first ~`skip` tokens."""
    from pydoc_data.topics import topics

    paras: list[str] = []
    used = 0
    for key in sorted(topics):
        for para in topics[key].split("\n\n"):
            if not para.strip():
                continue
            n = count_tokens(para, READER)
            if used + n > skip + tokens:
                return "\n\n".join(paras)
            if used >= skip:
                paras.append(para.strip("\n"))
            used += n
    return "\n\n".join(paras)


def export_model(out: Path) -> Path:
    """The shipped model as a plain HF token-classification folder (label 1 = keep)."""
    folder = out / FOLDER_NAME
    if not (folder / "config.json").exists():
        lm = load_token_classifier(backend="torch")
        lm.model.config.id2label = {0: "drop", 1: "keep"}
        lm.model.config.label2id = {"drop": 0, "keep": 1}
        lm.model.save_pretrained(folder)
        lm.tokenizer.save_pretrained(folder)
    return folder


class LLMLinguaWorker:
    """llmlingua in its own venv, kept running so its calls interleave with ctxzip's."""

    def __init__(self, python: str, folder: Path, text_file: Path, rate: float) -> None:
        get_tokenizer(READER)  # seeds tiktoken's offline cache, which the child shares
        env = dict(os.environ, TIKTOKEN_CACHE_DIR=_tiktoken_dir(), HF_HUB_OFFLINE="1")
        self.proc = subprocess.Popen(
            [python, "-c", LLMLINGUA_WORKER, str(folder), str(text_file), str(rate)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self._read()  # loaded and warmed up

    def _read(self) -> dict:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            err = self.proc.stderr.read() if self.proc.stderr else ""
            sys.exit(f"llmlingua worker failed:\n{err[-3000:]}")
        return json.loads(line)

    def call(self) -> dict:
        assert self.proc.stdin is not None
        self.proc.stdin.write("run\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        self.proc.wait(timeout=60)


def _tiktoken_dir() -> str:
    from ctxzip.tokens import _tiktoken_cache_dir

    return _tiktoken_cache_dir()


class Timed:
    """One ctxzip system: wall, CPU and model-forward seconds of each call."""

    def __init__(self, comp: TokenClassificationCompressor, text: str, rate: float) -> None:
        self.comp, self.text, self.rate = comp, text, rate
        self.wall: list[float] = []
        self.cpu: list[float] = []
        self.forward: list[float] = []
        comp.compress(text, budget=Budget(rate=rate))  # load, export once, warm up
        self.result: Any = None

    def call(self) -> None:
        model = self.comp.loaded.model
        inner = model.forward
        spent: list[float] = []

        def timed(*args: Any, **kwargs: Any) -> Any:
            t = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                spent.append(time.perf_counter() - t)

        model.forward = timed
        try:
            t, c = time.perf_counter(), time.process_time()
            self.result = self.comp.compress(self.text, budget=Budget(rate=self.rate))
            self.wall.append(time.perf_counter() - t)
            self.cpu.append(time.process_time() - c)
            self.forward.append(sum(spent))
        finally:
            del model.forward


def _norm(word: str) -> str:
    word = unicodedata.normalize("NFD", word.lower())
    return "".join(ch for ch in word if unicodedata.category(ch) != "Mn")


def _our_words(text: str, lm: Any) -> Any:
    """ctxzip's words of `text`: whitespace-delimited (llmlingua's are WordPiece words,
    so "--ascii" is one word here and "-", "-", "ascii" there; `_aligned` matches them)."""
    enc = lm.backend.encode(text, add_special_tokens=False)
    offsets = np.asarray(enc.offsets).reshape(-1, 2)
    return whitespace_words(offsets, space_mask(codepoints(text)))


def _aligned(text: str, words: Any, ll_words: list[str], ll_labels: list[int]) -> np.ndarray:
    """llmlingua's keep label on each of our words (-1 where its words do not align)."""
    mine = [_norm(text[s:e]) for s, e in zip(words.start, words.end, strict=True)]
    theirs = [_norm(w) for w in ll_words]
    out = np.full(len(mine), -1, dtype=np.int64)
    matcher = difflib.SequenceMatcher(None, mine, theirs, autojunk=False)
    for a, b, size in matcher.get_matching_blocks():
        out[a : a + size] = ll_labels[b : b + size]
    return out


def _kept_on_words(text: str, words: Any, res: Any) -> np.ndarray:
    covered = np.zeros(len(text) + 1, dtype=np.int64)
    for s, e in res.kept[0]:
        covered[s] += 1
        covered[e] -= 1
    inside = np.concatenate(([0], np.cumsum(np.cumsum(covered)[:-1] > 0)))
    return (inside[words.end] - inside[words.start]) > 0


def _rate_on_original(text: str, words: Any, keep: np.ndarray) -> float:
    """Tokens of the original text's kept words (runs joined as ctxzip joins them)."""
    m = keep.astype(bool)
    prev = np.concatenate(([False], m[:-1]))
    nxt = np.concatenate((m[1:], [False]))
    spans = list(zip(words.start[m & ~prev].tolist(), words.end[m & ~nxt].tolist(), strict=True))
    return count_tokens(join_spans(text, spans), READER) / count_tokens(text, READER)


def _kept_words(text: str, res: Any) -> np.ndarray:
    """Keep flag per whitespace-separated word (the fp32-vs-fast agreement unit)."""
    starts, ends = np.asarray([m.span() for m in re.finditer(r"\S+", text)]).T
    return overlapping(starts, ends, res.kept[0])


def _load() -> str:
    return f"load {os.getloadavg()[0]:.2f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tokens", type=int, default=10_000)
    ap.add_argument("--rate", type=float, default=0.33)
    ap.add_argument("--rounds", type=int, default=5, help="interleaved timed calls per system")
    ap.add_argument("--torch", action="store_true", help="also time the plain torch backend")
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
    print(f"torch threads: {torch.get_num_threads()}; cpu count: {os.cpu_count()}; {_load()}")

    # llmlingua's settings: 512-token windows, batches of 50, nothing protected
    opts: dict[str, Any] = {
        "tokenizer": READER,
        "max_length": 512,
        "batch_size": 50,
        "protect": Protect(),
    }
    configs: dict[str, dict[str, Any]] = {"fp32": {}, "fast": {"fast": True}}
    if args.torch:
        configs["torch fp32"] = {"backend": "torch"}
    t0 = time.perf_counter()
    timed = {
        name: Timed(TokenClassificationCompressor(str(folder), **opts, **o), text, args.rate)
        for name, o in configs.items()
    }
    print(f"ctxzip systems loaded and warmed in {time.perf_counter() - t0:.1f} s")
    worker = LLMLinguaWorker(args.llmlingua_python, folder, text_file, args.rate)
    ll_wall: list[float] = []
    ll_cpu: list[float] = []
    ll: dict[str, Any] = {}
    for round_ in tqdm(range(args.rounds), desc="interleaved rounds"):
        ll = worker.call()
        ll_wall.append(ll["seconds"])
        ll_cpu.append(ll["cpu"])
        for t in timed.values():
            t.call()
        tqdm.write(
            f"round {round_}: llmlingua {ll_wall[-1]:.2f} s, "
            + ", ".join(f"{k} {t.wall[-1]:.2f} s" for k, t in timed.items())
            + f"; {_load()}"
        )
    worker.close()
    per_chunk = TokenClassificationCompressor(str(folder), per_chunk=True, **opts)
    pc_res = per_chunk.compress(text, budget=Budget(rate=args.rate))

    words = _our_words(text, per_chunk.loaded)
    theirs = _aligned(text, words, ll["words"], ll["labels"])
    agree_pc = float((_kept_on_words(text, words, pc_res) == (theirs == 1)).mean())
    agree_gl = float((_kept_on_words(text, words, timed["fp32"].result) == (theirs == 1)).mean())
    fast_agree = float(
        (_kept_words(text, timed["fp32"].result) == _kept_words(text, timed["fast"].result)).mean()
    )
    ll_rate = ll["compressed_tokens"] / ll["origin_tokens"]
    ll_rate_orig = _rate_on_original(text, words, theirs == 1)

    print()
    print(
        "| system | wall s (median / best) | CPU s (median) | speed vs llmlingua "
        f"(median wall / CPU) | achieved rate (asked {args.rate}) | post-processing |"
    )
    print("|---|---|---|---|---|---|")
    ll_med, ll_cpu_med = statistics.median(ll_wall), statistics.median(ll_cpu)
    print(
        f"| llmlingua 0.2.2 | {ll_med:.2f} / {min(ll_wall):.2f} | {ll_cpu_med:.2f} | 1.00x / "
        f"1.00x | {ll_rate:.3f} own count; {ll_rate_orig:.3f} on the original text | |"
    )
    report: dict[str, Any] = {
        "tokens_in": n_in,
        "rate": args.rate,
        "load_after": os.getloadavg(),
        "llmlingua": {
            "wall": ll_wall,
            "cpu": ll_cpu,
            "achieved_rate": ll_rate,
            "achieved_rate_on_original": ll_rate_orig,
        },
        "systems": {},
    }
    labels = {"fp32": "ctxzip fp32 (global)", "fast": "ctxzip fast (int8, global)"}
    for name, t in timed.items():
        med, cpu = statistics.median(t.wall), statistics.median(t.cpu)
        post = statistics.median((w - f) / f for w, f in zip(t.wall, t.forward, strict=True))
        speed, speed_cpu = ll_med / med, ll_cpu_med / cpu
        print(
            f"| {labels.get(name, 'ctxzip ' + name)} | {med:.2f} / {min(t.wall):.2f} | {cpu:.2f} "
            f"| {speed:.2f}x / {speed_cpu:.2f}x | {t.result.rate:.3f} | {post:.1%} of forward |"
        )
        report["systems"][name] = {
            "wall": t.wall,
            "cpu": t.cpu,
            "forward": t.forward,
            "speedup_median_wall": speed,
            "speedup_median_cpu": speed_cpu,
            "achieved_rate": t.result.rate,
            "backend": type(t.comp.loaded.model).__name__,
        }
    print(
        f"| ctxzip per-chunk (LLMLingua-2's rule) | | | | {pc_res.rate:.3f} on the original text | |"
    )
    print()
    print(f"word agreement with llmlingua, ctxzip per-chunk rule: {agree_pc:.1%} (target >= 95%)")
    print(f"word agreement with llmlingua, ctxzip global rule:    {agree_gl:.1%}")
    print(f"kept-word agreement fast vs fp32 (global rule):       {fast_agree:.1%} (target >= 98%)")
    print(_load())
    report.update(
        agreement_per_chunk=agree_pc,
        agreement_global=agree_gl,
        fast_vs_fp32=fast_agree,
        per_chunk_rate=pc_res.rate,
    )
    (args.out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out / 'report.json'}")


if __name__ == "__main__":
    main()
