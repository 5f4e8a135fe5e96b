"""xrag benchmark: prefill cost of soft tokens vs the full text, and quality over k tokens/doc.

Prefill: a QA prompt holding `--docs` held-out passages as full text, and the same prompt
with one soft token per passage (and k per passage): prompt tokens, estimated prefill
FLOPs (2·N·T + attention) and measured prefill seconds (median of `--repeats`), all as
ratios against the full text measured in the same run.

Quality (the probe of `ctxzip.compressors.xrag.train.probe`, extended to k tokens): each
held-out passage is scored (NLL of its first 32 tokens after ``Background: <xRAG>..
means the same as``) under its own k soft tokens and under those of 7 other passages;
own_first (chance 0.125) and beats_random (chance 0.5), plus the NLL with no soft token.

    HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false .venv/bin/python benchmarks/bench_xrag.py
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from pathlib import Path

import torch

from ctxzip.compressors.xrag.compressor import XragCompressor, soft_tokens
from ctxzip.compressors.xrag.inject import PLACEHOLDER, chat_prompt, encode_with_slots, prepare
from ctxzip.compressors.xrag.projector import SHIPPED
from ctxzip.compressors.xrag.train import STAGE1_TEMPLATE, stage1_nll


def prefill_flops(model: torch.nn.Module, tokens: int) -> float:
    cfg = model.config
    dense = sum(p.numel() for p in model.parameters()) - cfg.vocab_size * cfg.hidden_size
    return 2.0 * dense * tokens + 2 * cfg.num_hidden_layers * cfg.hidden_size * tokens**2


@torch.no_grad()
def time_prefill(model: torch.nn.Module, embeds: torch.Tensor, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        model(inputs_embeds=embeds)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--docs", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--n", type=int, default=32, help="held-out passages in the probe")
    parser.add_argument("--ks", default="1,2,4")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None, help="write the numbers as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = [json.loads(x) for x in Path(str(SHIPPED) + ".heldout.jsonl").read_text().splitlines()]
    comp = XragCompressor(device="cpu", dtype="float32")
    model, tok = comp.lm()
    report: dict[str, object] = {}

    # --- prefill --------------------------------------------------------------------
    docs = [r["text"] for r in rows[: args.docs]]
    question = "Question: what do these functions have in common?"
    full = chat_prompt(tok, "Background: " + "\n\n".join(docs) + "\n\n" + question)
    full_ids = torch.tensor([encode_with_slots(tok, full)])
    full_embeds = model.get_input_embeddings()(full_ids)
    t_full = time_prefill(model, full_embeds, args.repeats)
    n_full = full_ids.shape[1]
    print(f"full text: {n_full} prompt tokens, prefill {t_full * 1000:.0f} ms")
    report["full"] = {"tokens": n_full, "seconds": t_full}
    for k in [int(x) for x in args.ks.split(",")]:
        comp.tokens_per_doc = k
        res = comp.compress(docs)
        prompt = chat_prompt(tok, "Background: " + " ".join(res.texts) + "\n\n" + question)
        embeds, _ = prepare(model, tok, [prompt], [soft_tokens(res)])
        t = time_prefill(model, embeds, args.repeats)
        n = embeds.shape[1]
        flops = prefill_flops(model, n) / prefill_flops(model, n_full)
        print(
            f"xrag k={k}: {n} prompt tokens ({n_full / n:.1f}x fewer), "
            f"FLOPs {flops:.3f} of full, prefill {t * 1000:.0f} ms ({t_full / t:.1f}x faster)"
        )
        report[f"k{k}"] = {"tokens": n, "seconds": t, "flops_ratio": flops}

    # --- quality over k ---------------------------------------------------------------
    rows = rows[: args.n]
    targets = [tok(r["text"], add_special_tokens=False)["input_ids"][:32] for r in rows]
    proj, _ = comp.projector()
    rng = random.Random(1234)
    with torch.no_grad():
        none = stage1_nll(
            model,
            tok,
            proj,
            torch.zeros(0, 384),
            targets,
            encode_with_slots(tok, STAGE1_TEMPLATE.replace(PLACEHOLDER, "")),
        )
    print(f"no soft token: NLL {float(none.mean()):.3f}")
    report["none_nll"] = float(none.mean())
    for k in [int(x) for x in args.ks.split(",")]:
        comp.tokens_per_doc = k
        segs = [comp.segments(r["text"])[:k] for r in rows]
        segs = [s + [s[-1]] * (k - len(s)) for s in segs]  # pad rare short ones
        vecs = comp.embed([x for s in segs for x in s]).reshape(len(rows), k, -1)
        prompt = encode_with_slots(tok, STAGE1_TEMPLATE.replace(PLACEHOLDER, PLACEHOLDER * k))
        first = beats = 0
        own_nll = []
        with torch.no_grad():
            for t in range(len(rows)):
                others = rng.sample([i for i in range(len(rows)) if i != t], 7)
                emb = vecs[[t, *others]].reshape(8 * k, -1)
                nll = stage1_nll(model, tok, proj, emb, [targets[t]] * 8, prompt)
                first += int(nll[0] < nll[1:].min())
                beats += int(nll[0] < nll[1])
                own_nll.append(float(nll[0]))
        q = {
            "own_first": first / len(rows),
            "beats_random": beats / len(rows),
            "nll_own": statistics.mean(own_nll),
        }
        print(
            f"k={k}: own_first {q['own_first']:.2f} (chance 0.125), "
            f"beats_random {q['beats_random']:.2f} (chance 0.5), NLL own {q['nll_own']:.3f}"
        )
        report[f"quality_k{k}"] = q
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
