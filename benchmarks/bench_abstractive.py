"""Speed and answer retention of `abstractive` (each backend) and `self-information`.

For bundled QA items (evals/data/pyref_qa.jsonl: Python reference passages,
one of which holds the answer) this compresses each item's contexts at each rate and
reports, next to `truncate` measured in the same run: compression seconds per 1,000
input tokens, achieved rate, and answer retention (a gold answer, SQuAD-normalised,
still present in the compressed text). The seq2seq backend runs a tiny random-weight T5
(no seq2seq weights exist offline: its speed only, never its quality) and the remote
backend a loopback OpenAI-compatible server that answers instantly (plumbing only).

    TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_abstractive.py \
        --items 12 --rates 0.5,0.2 --plot docs/img/bench_abstractive.png
"""

from __future__ import annotations

import argparse
import json
import random
import re
import socket
import string
import sys
import tempfile
import threading
import time
from typing import Any

from ctxzip.budget import Budget
from ctxzip.evals.datasets import bundled_path
from ctxzip.models import SMOLLM, load_tokenizer
from ctxzip.registry import get_compressor
from ctxzip.result import CompressionRequest

DATA = bundled_path("pyref")


def normalize(text: str) -> str:
    text = text.lower()
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def retained(answers: list[str], text: str) -> bool:
    body = f" {normalize(text)} "
    return any(f" {normalize(a)} " in body for a in answers if normalize(a))


def load_items(n: int, seed: int) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in DATA.read_text().splitlines() if line.strip()]
    random.Random(seed).shuffle(rows)
    return rows[:n]


def tiny_t5() -> str:
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    folder = tempfile.mkdtemp(prefix="tiny-t5-")
    tok = load_tokenizer(SMOLLM)
    config = T5Config(
        vocab_size=len(tok),
        d_model=64,
        d_ff=128,
        d_kv=16,
        num_layers=2,
        num_heads=4,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        decoder_start_token_id=tok.pad_token_id,
    )
    torch.manual_seed(0)
    T5ForConditionalGeneration(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def loopback_server() -> str:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def chat(request: Request) -> JSONResponse:
        body = await request.json()
        docs = body["messages"][-1]["content"].split("[1] ", 1)[-1]
        text = docs.split(". ", 1)[0] + "."  # echo the first sentence
        return JSONResponse({"choices": [{"message": {"role": "assistant", "content": text}}]})

    app = Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    return f"http://127.0.0.1:{sock.getsockname()[1]}/v1"


def run(name: str, comp: Any, items: list[dict[str, Any]], rate: float) -> dict[str, Any]:
    requests = [
        CompressionRequest.of(it["contexts"], it["question"], Budget(rate=rate)) for it in items
    ]
    comp.compress_batch(requests[:1])  # warm: model loads are not compression time
    start = time.perf_counter()
    results = comp.compress_batch(requests)
    seconds = time.perf_counter() - start
    tokens_in = sum(r.tokens_in for r in results)
    return {
        "method": name,
        "rate": rate,
        "s_per_1k": 1000 * seconds / tokens_in,
        "achieved": sum(r.tokens_out for r in results) / tokens_in,
        "retention": sum(
            retained(it["golden_answers"], r.text) for it, r in zip(items, results, strict=True)
        )
        / len(items),
        "empty": sum(not r.text for r in results),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=24)
    parser.add_argument("--rates", default="0.5,0.2")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--methods",
        default="truncate,openai,seq2seq,causal,self-information",
        help="comma list of: " + "truncate,openai,seq2seq,causal,self-information,"
        "self-information-plain",
    )
    parser.add_argument("--plot", help="write answer retention by rate as a PNG here")
    args = parser.parse_args()
    items = load_items(args.items, args.seed)
    rates = [float(r) for r in args.rates.split(",")]
    makers = {
        "truncate": lambda: {"truncate": get_compressor("truncate")},
        "self-information": lambda: {
            "self-information (word, query contrast)": get_compressor("self-information")
        },
        "self-information-plain": lambda: {
            "self-information (word, no query)": get_compressor(
                "self-information", condition_on_query=False
            )
        },
        "causal": lambda: {"abstractive causal (SmolLM2)": get_compressor("abstractive")},
        "seq2seq": lambda: {
            "abstractive seq2seq (tiny T5, speed only)": get_compressor(
                "abstractive",
                backend="seq2seq",
                model=tiny_t5(),
                faithfulness=False,
                relevance_threshold=None,
            )
        },
        "openai": lambda: {
            "abstractive openai (loopback, plumbing only)": get_compressor(
                "abstractive", backend="openai", base_url=loopback_server(), api_key="local"
            )
        },
    }
    methods: dict[str, Any] = {}
    for key in args.methods.split(","):  # in the order asked
        if key not in makers:
            parser.error(f"unknown method {key!r}; choose from {', '.join(makers)}")
        methods.update(makers[key]())
    tokens = sum(get_compressor("noop").compress(it["contexts"]).tokens_in for it in items)
    print(
        f"{len(items)} items from {DATA.name}, {tokens} input tokens (o200k), rates {rates}",
        file=sys.stderr,
    )
    rows = []
    for name, comp in methods.items():
        for rate in rates:
            row = run(name, comp, items, rate)
            rows.append(row)
            print(f"done: {name} @ {rate}: {row}", file=sys.stderr)
    print("| method | rate asked | achieved | answer retention | empty results | s / 1k tokens |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['method']} | {r['rate']:.2f} | {r['achieved']:.3f} | {r['retention']:.2f} "
            f"| {r['empty']} | {r['s_per_1k']:.3f} |"
        )
    if args.plot:
        plot(rows, args.plot)


def plot(rows: list[dict[str, Any]], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for name in dict.fromkeys(r["method"] for r in rows):
        mine = sorted((r for r in rows if r["method"] == name), key=lambda r: r["achieved"])
        ax.plot([r["achieved"] for r in mine], [r["retention"] for r in mine], "o-", label=name)
    ax.set_xlabel("achieved rate (tokens out / in)")
    ax.set_ylabel("answer retention")
    ax.set_ylim(0, 1.05)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
