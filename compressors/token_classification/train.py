"""Train the shipped keep/drop head: all-MiniLM-L6-v2 features, labels from SmolLM2.

No LLMLingua-2 weights or GPT-4 compression data exist offline, so the labels are
distilled from a teacher that does: the packaged SmolLM2-135M-Instruct scores every
word by its self-information given the preceding text (LLMLingua's signal: surprising
words carry information, predictable ones can go). Each word's target is its
percentile rank of self-information within its passage, a soft keep probability.

The corpus is docstrings of a fixed list of Python standard-library modules (English
technical prose present on every machine, and not the `pydoc_data` reference text
the `pyref` QA set is built from). The encoder stays frozen, so features are computed
once and only the 384 -> 2 token-classification head (770 numbers) is trained.
Bounded: about 150 passages, one teacher pass and one encoder pass, a few minutes on
2 CPU cores. Rebuild with ``ctxzip train token-classifier``.
"""

from __future__ import annotations

import copy
import hashlib
import json
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import numpy as np

from ctxzip.compressors.token_classification.costs import word_costs
from ctxzip.compressors.token_classification.model import BASE_MODEL, head_path, quantize_int8
from ctxzip.compressors.token_classification.words import (
    Words,
    codepoints,
    merge_words,
    space_mask,
    word_rule,
    word_scores,
)
from ctxzip.corpus import docstring_passages
from ctxzip.models import SMOLLM, cache_dir, load_causal_lm, load_model, load_tokenizer
from ctxzip.tokens import get_tokenizer
from ctxzip.weights import base_path, save_weights, write_atomic

TEACHER = SMOLLM


# ---------------------------------------------------------------- teacher


@dataclass
class Scored:
    text: str
    words: Words
    ids: np.ndarray  # student (MiniLM) token ids
    teacher: np.ndarray  # self-information per word (nats)


def student_words(texts: list[str], tokenizer: Any) -> list[tuple[Words, np.ndarray]]:
    """MiniLM words of each text (the units the student keeps or drops)."""
    from tokenizers import Tokenizer

    backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    backend.no_padding()
    backend.no_truncation()
    backend.encode_special_tokens = True
    rule = word_rule(tokenizer)
    out = []
    for text, enc in zip(texts, backend.encode_batch(texts, add_special_tokens=False), strict=True):
        cps = codepoints(text)
        ids = np.asarray(enc.ids, dtype=np.int64)
        offsets = np.asarray(enc.offsets, dtype=np.int64).reshape(-1, 2)
        out.append((merge_words(ids, offsets, rule, cps, space_mask(cps)), ids))
    return out


def teacher_scores(texts: list[str], words: list[Words], batch_size: int = 8) -> list[np.ndarray]:
    """Per-word self-information under SmolLM2 given the preceding text of the passage."""
    import torch
    from tqdm import tqdm

    model, tokenizer = load_causal_lm(TEACHER, device="cpu", dtype="float32")
    backend = tokenizer.backend_tokenizer
    encs = [backend.encode(t, add_special_tokens=False) for t in texts]
    pad = tokenizer.pad_token_id or 0
    out: list[np.ndarray] = [np.zeros(0)] * len(texts)
    order = sorted(range(len(texts)), key=lambda i: len(encs[i].ids))
    with torch.inference_mode():
        for s in tqdm(range(0, len(order), batch_size), desc="teacher (SmolLM2)", unit="batch"):
            idx = order[s : s + batch_size]
            width = max(len(encs[i].ids) for i in idx)
            ids = torch.full((len(idx), width), pad, dtype=torch.long)
            mask = torch.zeros((len(idx), width), dtype=torch.long)
            for row, i in enumerate(idx):  # right padding: positions stay 0..n-1
                ids[row, : len(encs[i].ids)] = torch.tensor(encs[i].ids)
                mask[row, : len(encs[i].ids)] = 1
            logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1]
            surprisal = (
                torch.nn.functional.cross_entropy(
                    logits.reshape(-1, logits.shape[-1]).float(),
                    ids[:, 1:].reshape(-1),
                    reduction="none",
                )
                .reshape(len(idx), -1)
                .numpy()
            )
            for row, i in enumerate(idx):
                n = len(encs[i].ids)
                tok = np.empty(n)
                tok[1:] = surprisal[row, : n - 1]
                tok[0] = tok[1:].mean() if n > 1 else 0.0  # no context for the first token
                starts = np.asarray([a for a, _ in encs[i].offsets], dtype=np.int64)
                w = words[i]
                owner = np.minimum(np.searchsorted(w.end, starts, side="right"), len(w) - 1)
                out[i] = np.bincount(owner, weights=tok, minlength=len(w))
    return out


def cached_teacher_scores(texts: list[str], words: list[Words]) -> list[np.ndarray]:
    """`teacher_scores`, kept on disk (numpy .npz, no pickle) keyed by the exact passages.

    The teacher pass is most of a training run; re-running with other head settings
    (epochs, seed of the head) reuses it.
    """
    key = hashlib.sha256(json.dumps([TEACHER, texts]).encode()).hexdigest()[:16]
    path = cache_dir() / "token-classifier" / f"teacher-{key}.npz"
    if path.exists():
        with np.load(path, allow_pickle=False) as data:
            return [data[f"p{i}"] for i in range(len(texts))]
    scores = teacher_scores(texts, words)
    arrays = {f"p{i}": v for i, v in enumerate(scores)}
    write_atomic(path, lambda tmp: np.savez(tmp, allow_pickle=False, **arrays))
    return scores


def rank_targets(scores: np.ndarray) -> np.ndarray:
    """Percentile rank in [0, 1] within one passage (ties share their mean rank)."""
    if scores.size < 2:
        return np.full(scores.size, 0.5)
    order = np.argsort(scores, kind="stable")
    ranks = np.empty(scores.size)
    ranks[order] = np.arange(scores.size)
    _, inverse = np.unique(scores, return_inverse=True)
    mean_rank = np.bincount(inverse, weights=ranks) / np.bincount(inverse)
    return mean_rank[inverse] / (scores.size - 1)


def select_top(scores: np.ndarray, cost: np.ndarray, rate: float) -> np.ndarray:
    """Keep the best words until `rate` of the tokens is used (the teacher's own rule)."""
    budget = rate * cost.sum()
    order = np.argsort(-scores, kind="stable")
    k = int(np.searchsorted(np.cumsum(cost[order]), budget, side="right"))
    keep = np.zeros(scores.size, dtype=bool)
    keep[order[:k]] = True
    return keep


# ---------------------------------------------------------------- training


def encoder_features(
    ids_list: list[np.ndarray], batch_size: int = 16, int8: bool = False
) -> list[np.ndarray]:
    """Frozen all-MiniLM-L6-v2 last hidden states per token (what the head sees).

    `int8=True`: the same through the CPU fast path's quantised encoder, so the head can
    be trained to score alike on both.
    """
    import torch
    from tqdm import tqdm

    encoder = load_model(BASE_MODEL, "AutoModel", device="cpu", dtype="float32")
    if int8:
        encoder = quantize_int8(copy.deepcopy(encoder))
    tok = load_tokenizer(BASE_MODEL)
    cls, sep, pad = tok.cls_token_id, tok.sep_token_id, tok.pad_token_id or 0
    out: list[np.ndarray] = [np.zeros((0, 384))] * len(ids_list)
    order = sorted(range(len(ids_list)), key=lambda i: ids_list[i].size)
    with torch.inference_mode():
        desc = "features (MiniLM int8)" if int8 else "features (MiniLM)"
        for s in tqdm(range(0, len(order), batch_size), desc=desc, unit="batch"):
            idx = order[s : s + batch_size]
            width = max(min(ids_list[i].size, 510) for i in idx) + 2
            ids = torch.full((len(idx), width), pad, dtype=torch.long)
            mask = torch.zeros((len(idx), width), dtype=torch.long)
            for row, i in enumerate(idx):
                seq = [cls, *ids_list[i][:510].tolist(), sep]
                ids[row, : len(seq)] = torch.tensor(seq)
                mask[row, : len(seq)] = 1
            hidden = encoder(input_ids=ids, attention_mask=mask).last_hidden_state
            for row, i in enumerate(idx):
                n = min(ids_list[i].size, 510)
                out[i] = hidden[row, 1 : 1 + n].numpy().copy()
    return out


def train_head(
    features: np.ndarray,
    features_int8: np.ndarray,
    targets: np.ndarray,
    epochs: int,
    seed: int,
    lr: float = 0.01,
    consistency: float = 4.0,
) -> tuple[np.ndarray, np.ndarray]:
    """A 2-class linear head (label 1 = keep), full batch.

    Soft cross-entropy against the teacher's percentile ranks on full-precision and on
    int8 features, plus a penalty on the gap between the two keep logits: the head
    learns directions quantisation leaves alone, so the CPU fast path keeps the same words.
    """
    import torch

    torch.manual_seed(seed)
    x = torch.from_numpy(features).float()
    xq = torch.from_numpy(features_int8).float()
    t = torch.from_numpy(targets).float()
    head = torch.nn.Linear(x.shape[1], 2)
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=1e-3)

    def soft_ce(logits: torch.Tensor) -> torch.Tensor:
        logp = torch.log_softmax(logits, -1)
        return -(t * logp[:, 1] + (1 - t) * logp[:, 0]).mean()

    for _ in range(epochs):
        opt.zero_grad()
        z, zq = head(x), head(xq)
        gap = (z[:, 1] - z[:, 0]) - (zq[:, 1] - zq[:, 0])
        loss = soft_ce(z) + soft_ce(zq) + consistency * (gap**2).mean()
        loss.backward()
        opt.step()
    return head.weight.detach().numpy(), head.bias.detach().numpy()


def student_word_probs(
    feats: np.ndarray, words: Words, weight: np.ndarray, bias: np.ndarray
) -> np.ndarray:
    logits = feats @ weight.T + bias
    logits -= logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    p = p[:, 1] / p.sum(axis=1)
    n = feats.shape[0]
    keep = words.first_token < n
    trimmed = Words(
        words.token_word[:n], words.first_token[keep], words.start[keep], words.end[keep]
    )
    probs = np.full(len(words), 0.0)
    probs[keep] = word_scores(p, trimmed)
    return probs


def run(
    out: Path, passages: int, seed: int, epochs: int, held_out: float, max_words: int
) -> dict[str, Any]:
    started = time.perf_counter()
    corpus = docstring_passages(max_words=max_words)
    rng = random.Random(seed)
    rng.shuffle(corpus)
    corpus = corpus[:passages]
    n_test = max(1, round(held_out * len(corpus)))
    split = len(corpus) - n_test
    tokenizer = load_tokenizer(BASE_MODEL)
    sw = student_words(corpus, tokenizer)
    words = [w for w, _ in sw]
    teacher = cached_teacher_scores(corpus, words)
    feats = encoder_features([ids for _, ids in sw])
    feats_q = encoder_features([ids for _, ids in sw], int8=True)
    xs, ts = [], []
    for i in range(split):
        n = feats[i].shape[0]
        target = rank_targets(teacher[i])[words[i].token_word[:n]]
        xs.append(feats[i])
        ts.append(target)
    x_q = np.concatenate(feats_q[:split])
    weight, bias = train_head(np.concatenate(xs), x_q, np.concatenate(ts), epochs, seed)
    reader = get_tokenizer("gpt-4o")
    stats: dict[str, dict[str, float]] = {}
    for rate in (0.5, 0.33, 0.2):
        agree, rand_agree, corr, int8_agree = [], [], [], []
        for i in range(split, len(corpus)):
            cost = word_costs(reader, corpus[i], codepoints(corpus[i]), words[i])
            student = student_word_probs(feats[i], words[i], weight, bias)
            t_keep = select_top(teacher[i], cost, rate)
            s_keep = select_top(student, cost, rate)
            r_keep = select_top(np.random.default_rng(seed + i).random(cost.size), cost, rate)
            q_keep = select_top(student_word_probs(feats_q[i], words[i], weight, bias), cost, rate)
            agree.append(float((t_keep == s_keep).mean()))
            int8_agree.append(float((q_keep == s_keep).mean()))
            rand_agree.append(float((t_keep == r_keep).mean()))
            corr.append(float(np.corrcoef(rank_targets(student), rank_targets(teacher[i]))[0, 1]))
        stats[str(rate)] = {
            "agreement_with_teacher": round(float(np.mean(agree)), 4),
            "random_agreement_with_teacher": round(float(np.mean(rand_agree)), 4),
            "spearman_with_teacher": round(float(np.nanmean(corr)), 4),
            "int8_agreement_with_fp32": round(float(np.mean(int8_agree)), 4),
        }
    info = {
        "base": BASE_MODEL,
        "teacher": TEACHER,
        "signal": "per-word self-information given preceding text, percentile rank per passage",
        "corpus": "docstrings of Python standard-library modules",
        "seed": seed,
        "passages_train": split,
        "passages_held_out": n_test,
        "train_tokens": int(sum(x.shape[0] for x in xs)),
        "epochs": epochs,
        "held_out": stats,
        "seconds": round(time.perf_counter() - started, 1),
    }
    head = {
        "classifier.weight": weight.astype(np.float32),
        "classifier.bias": bias.astype(np.float32),
    }
    save_weights(out, head, info)  # the tensors, then `info` as the JSON manifest beside them
    return info


@click.command("token-classifier")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Where to write the head, a .safetensors file with its JSON manifest beside it "
    "(default: the shipped file in the package).",
)
@click.option("--passages", default=96, show_default=True, help="Corpus passages to use.")
@click.option("--seed", default=0, show_default=True)
@click.option("--epochs", default=400, show_default=True, help="Full-batch steps for the head.")
@click.option("--held-out", default=0.2, show_default=True, help="Fraction kept out of training.")
@click.option("--max-words", default=160, show_default=True, help="Longest passage in words.")
def token_classifier_command(
    out: Path | None, passages: int, seed: int, epochs: int, held_out: float, max_words: int
) -> None:
    """Distil SmolLM2 self-information into the MiniLM keep/drop head (a few CPU minutes)."""
    if passages < 10:
        raise click.UsageError("--passages must be at least 10")
    if not 0.0 < held_out < 0.9:
        raise click.UsageError("--held-out must be in (0, 0.9)")
    target = out or head_path()
    info = run(target, passages, seed, epochs, held_out, max_words)
    click.echo(json.dumps(info, indent=2))
    click.echo(f"wrote {base_path(target)}.safetensors and its manifest .json")
