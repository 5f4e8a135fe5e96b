"""Train the shipped keep/drop model: MiniLM fine-tuned with adapters on answer-bearing words.

The labels track what a reader needs (`--labels answers`, the default): in QA data, the
words of a passage that carry a gold answer are "keep" (target 1), the passage's other
words "drop" (target 0). The model learns which words of a passage a question is likely
to ask about (identifiers, values, names, technical terms), not which words a language
model finds surprising. The other candidate, `--labels mix`, also marks function words
and punctuation 0 (LLMLingua-2's rule of thumb for what a summary loses first) and
every other word a soft 0.5; it kept fewer answers in the question-aware mode
(measured against each other in docs/token-classification.md).

Data: the bundled `pyref` QA set (questions on CPython's reference text), its TRAINING
split only (`heldout_topic` holds out a fixed quarter of the topics, by hash), plus any
``--qa`` JSONL files in the same format. A passage is used when it holds a gold answer
of a training question; passages that also appear in a held-out item are left out.

Model: the packaged all-MiniLM-L6-v2 with a token-classification head; the encoder
itself is fine-tuned through low-rank adapters (LoRA, rank `--rank`) on every attention
and feed-forward matrix of all six layers, so the shipped file is the adapters plus the
head (about 1 MB) and the runtime merges them into the encoder's weights once at load
(the ONNX graph is the plain encoder's). Loss: class-weighted cross-entropy per token.

Seeded, bounded, progress bars; rebuild with ``ctxzip train token-classifier``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import random
import string
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import numpy as np

from ctxzip.compressors.token_classification.costs import word_costs
from ctxzip.compressors.token_classification.model import (
    ADAPTED,
    BASE_MODEL,
    weights_path,
)
from ctxzip.compressors.token_classification.words import (
    STOPWORDS,
    Words,
    codepoints,
    space_mask,
    whitespace_words,
    word_scores,
)
from ctxzip.models import load_tokenizer, resolve_model
from ctxzip.tokens import get_tokenizer
from ctxzip.weights import base_path, save_weights

HELDOUT_EVERY = 4
"""One topic in `HELDOUT_EVERY` (by hash) of the bundled QA set never reaches training."""


def heldout_topic(topic: str) -> bool:
    """Whether a `pyref` topic belongs to the held-out split (stable across machines)."""
    return int(hashlib.sha1(topic.encode()).hexdigest()[:8], 16) % HELDOUT_EVERY == 0


def bundled_qa() -> Path:
    """The bundled `pyref` QA file (package data of ``ctxzip.evals``, located without
    importing it: compressors never import the evals layer)."""
    spec = importlib.util.find_spec("ctxzip.evals")
    if spec is None or not spec.submodule_search_locations:
        raise click.ClickException("the bundled QA set (ctxzip.evals) is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "pyref_qa.jsonl"


def read_qa(path: Path) -> list[dict[str, Any]]:
    """QA records (``question``, ``golden_answers``, ``contexts``) from a JSONL file."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def topic_of(record: dict[str, Any]) -> str:
    """The unit the held-out split is made of: a record's topic, or its id without one."""
    return str((record.get("metadata") or {}).get("topic") or record.get("id"))


def split_records(
    records: Sequence[dict[str, Any]],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(training, held-out) records of the bundled set, split by topic."""
    train = [r for r in records if not heldout_topic(topic_of(r))]
    held = [r for r in records if heldout_topic(topic_of(r))]
    return train, held


def answer_spans(text: str, answers: Sequence[str]) -> list[tuple[int, int]]:
    """Character spans of every case-insensitive occurrence of a gold answer in `text`."""
    low = text.lower()
    spans = []
    for answer in answers:
        needle = answer.strip().lower()
        if not needle:
            continue
        pos = low.find(needle)
        while pos >= 0:
            spans.append((pos, pos + len(needle)))
            pos = low.find(needle, pos + 1)
    return spans


@dataclass
class Example:
    text: str
    ids: np.ndarray  # MiniLM token ids (no special tokens)
    words: Words
    label: np.ndarray  # per word: 1.0 keep (answer-bearing), 0.0 drop


def encode_words(texts: Sequence[str], tokenizer: Any) -> list[tuple[np.ndarray, Words]]:
    """MiniLM ids and whitespace words of each text (the units the model keeps or drops)."""
    from tokenizers import Tokenizer

    backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    backend.no_padding()
    backend.no_truncation()
    backend.encode_special_tokens = True
    out = []
    for text, enc in zip(
        texts, backend.encode_batch(list(texts), add_special_tokens=False), strict=True
    ):
        ids = np.asarray(enc.ids, dtype=np.int64)
        offsets = np.asarray(enc.offsets, dtype=np.int64).reshape(-1, 2)
        out.append((ids, whitespace_words(offsets, space_mask(codepoints(text)))))
    return out


LABELS = ("answers", "mix")
"""`answers`: answer words 1, every other word 0. `mix`: answer words 1, function words
and punctuation 0, every other word `CONTENT` (a soft target between the two)."""
CONTENT = 0.5


def is_function_word(word: str) -> bool:
    """A word a summary drops first: a stopword or punctuation only (LLMLingua-2's rule of
    thumb), judged on the word with its attached punctuation stripped."""
    core = word.strip(string.punctuation + "“”‘’—–").lower()
    return not core or core in STOPWORDS


def build_examples(
    train: Sequence[dict[str, Any]], exclude: set[str], tokenizer: Any, labels: str = "answers"
) -> list[Example]:
    """One example per passage holding a training question's gold answer (labels merged
    over every question that asks about it); passages in `exclude` are skipped."""
    positives: dict[str, list[str]] = {}
    for record in train:
        answers = [str(a) for a in record["golden_answers"]]
        for text in record["contexts"]:
            if text in exclude or not answer_spans(text, answers):
                continue
            positives.setdefault(text, []).extend(answers)
    texts = sorted(positives)
    examples = []
    for text, (ids, words) in zip(texts, encode_words(texts, tokenizer), strict=True):
        if not len(words):
            continue
        label = np.zeros(len(words), dtype=np.float32)
        if labels == "mix":
            pieces = [
                text[a:b] for a, b in zip(words.start.tolist(), words.end.tolist(), strict=True)
            ]
            label[:] = [0.0 if is_function_word(w) else CONTENT for w in pieces]
        for a, b in answer_spans(text, positives[text]):
            label[(words.start < b) & (words.end > a)] = 1.0
        examples.append(Example(text, ids, words, label))
    return examples


def windows(n: int, width: int, stride: int) -> Iterator[tuple[int, int]]:
    """Token windows of at most `width` covering 0..n, overlapping by width - stride."""
    a = 0
    while True:
        yield a, min(n, a + width)
        if a + width >= n:
            return
        a += stride


class LoRALinear:
    """Adds a trainable low-rank update ``scale * B @ A`` to a frozen `torch.nn.Linear`."""

    @staticmethod
    def wrap(linear: Any, rank: int, alpha: float, generator: Any) -> Any:
        import torch

        class _Lora(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.base = linear
                self.scale = alpha / rank
                a = torch.empty(rank, linear.in_features)
                torch.nn.init.kaiming_uniform_(a, a=5**0.5, generator=generator)
                self.lora_A = torch.nn.Parameter(a)
                self.lora_B = torch.nn.Parameter(torch.zeros(linear.out_features, rank))

            def forward(self, x: Any) -> Any:
                return self.base(x) + (x @ self.lora_A.T @ self.lora_B.T) * self.scale

            def delta(self) -> tuple[Any, Any]:
                """(A, B) with the scale folded into B: the update is B @ A."""
                return self.lora_A.detach().clone(), (self.lora_B * self.scale).detach().clone()

        return _Lora()


def build_model(rank: int, alpha: float, seed: int) -> tuple[Any, dict[str, Any]]:
    """MiniLM with a fresh 2-label head and adapters on every `ADAPTED` matrix."""
    import torch
    from transformers import AutoModelForTokenClassification
    from transformers.utils import logging as hf_logging

    torch.manual_seed(seed)
    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        model = AutoModelForTokenClassification.from_pretrained(
            resolve_model(BASE_MODEL), num_labels=2, dtype=torch.float32
        )
    finally:
        hf_logging.set_verbosity(level)
    for p in model.parameters():
        p.requires_grad_(False)
    for p in model.classifier.parameters():
        p.requires_grad_(True)
    generator = torch.Generator().manual_seed(seed)
    adapters: dict[str, Any] = {}
    for name, module in list(model.named_modules()):
        for child, sub in list(module.named_children()):
            full = f"{name}.{child}" if name else child
            if isinstance(sub, torch.nn.Linear) and full.endswith(ADAPTED):
                wrapped = LoRALinear.wrap(sub, rank, alpha, generator)
                setattr(module, child, wrapped)
                adapters[full] = wrapped
    return model, adapters


def batches(
    examples: Sequence[Example], width: int, batch_size: int, rng: random.Random
) -> list[list[tuple[int, int, int]]]:
    """Shuffled batches of (example, token start, token end) windows, similar lengths together."""
    items = [
        (i, a, b)
        for i, ex in enumerate(examples)
        for a, b in windows(ex.ids.size, width, width // 2)
    ]
    rng.shuffle(items)
    out = []
    for s in range(0, len(items), batch_size * 8):  # sort inside buckets: less padding
        bucket = sorted(items[s : s + batch_size * 8], key=lambda t: t[2] - t[1])
        out += [bucket[k : k + batch_size] for k in range(0, len(bucket), batch_size)]
    rng.shuffle(out)
    return out


def _tensors(
    examples: Sequence[Example], batch: Sequence[tuple[int, int, int]], cls: int, sep: int, pad: int
) -> tuple[Any, Any, Any]:
    import torch

    width = max(b - a for _, a, b in batch) + 2
    ids = torch.full((len(batch), width), pad, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    target = torch.full((len(batch), width), -1.0, dtype=torch.float32)  # -1: not a token
    for row, (i, a, b) in enumerate(batch):
        ex = examples[i]
        seq = [cls, *ex.ids[a:b].tolist(), sep]
        ids[row, : len(seq)] = torch.tensor(seq)
        mask[row, : len(seq)] = 1
        target[row, 1 : 1 + b - a] = torch.from_numpy(ex.label[ex.words.token_word[a:b]])
    return ids, mask, target


def soft_cross_entropy(logits: Any, target: Any, pos_weight: float) -> Any:
    """Cross-entropy against soft keep targets in [0, 1] (-1: padding), answer tokens
    (target 1) weighted `pos_weight`, averaged over the weights."""
    import torch

    valid = target >= 0
    y = target.clamp(min=0.0)
    logp = torch.log_softmax(logits, dim=-1)
    loss = -(y * logp[..., 1] + (1 - y) * logp[..., 0])
    w = torch.where(target == 1.0, pos_weight, 1.0) * valid
    return (loss * w).sum() / w.sum()


def word_probs(
    model: Any, examples: Sequence[Example], width: int, cls: int, sep: int
) -> list[np.ndarray]:
    """P(keep) per word of each example (windows of `width`, mean over sub-tokens)."""
    import torch

    out = []
    model.eval()
    with torch.inference_mode():
        for ex in examples:
            probs = np.zeros(ex.ids.size, dtype=np.float32)
            for a, b in windows(ex.ids.size, width, width):
                seq = torch.tensor([[cls, *ex.ids[a:b].tolist(), sep]])
                logits = model(input_ids=seq, attention_mask=torch.ones_like(seq)).logits[0, 1:-1]
                probs[a:b] = torch.softmax(logits, dim=-1)[:, 1].numpy()
            out.append(word_scores(probs, ex.words))
    return out


def select_top(scores: np.ndarray, cost: np.ndarray, rate: float) -> np.ndarray:
    """Best-scored words until `rate` of the cost; a bool mask."""
    order = np.argsort(-scores, kind="stable")
    k = int(np.searchsorted(np.cumsum(cost[order]), rate * cost.sum(), side="right"))
    keep = np.zeros(scores.size, dtype=bool)
    keep[order[:k]] = True
    return keep


def held_out_retention(
    model: Any, records: Sequence[dict[str, Any]], tokenizer: Any, width: int, seed: int
) -> dict[str, dict[str, float]]:
    """Share of held-out items where every word of some occurrence of a gold answer is
    kept, model vs random words, one budget over each item's contexts (rate x gpt-4o
    tokens, best-scored words first; no question given)."""
    reader = get_tokenizer("gpt-4o")
    cls, sep = int(tokenizer.cls_token_id), int(tokenizer.sep_token_id)
    stats: dict[str, dict[str, float]] = {}
    hits: dict[tuple[str, float], list[float]] = {}
    rng = np.random.default_rng(seed)
    for record in records:
        texts = list(record["contexts"])
        enc = encode_words(texts, tokenizer)
        exs = [
            Example(t, ids, w, np.zeros(len(w), np.float32))
            for t, (ids, w) in zip(texts, enc, strict=True)
        ]
        scores = np.concatenate(word_probs(model, exs, width, cls, sep))
        costs = np.concatenate(
            [word_costs(reader, t, codepoints(t), e.words) for t, e in zip(texts, exs, strict=True)]
        )
        # the words each occurrence of a gold answer covers, as indices of the item's words
        offset = np.cumsum([0] + [len(e.words) for e in exs])
        occurrences = [
            offset[i] + np.flatnonzero((e.words.start < hi) & (e.words.end > lo))
            for i, e in enumerate(exs)
            for lo, hi in answer_spans(e.text, [str(g) for g in record["golden_answers"]])
        ]
        for rate in (0.5, 0.33, 0.2, 0.1):
            for name, s in (("model", scores), ("random words", rng.random(scores.size))):
                keep = select_top(s, costs, rate)
                found = any(keep[idx].all() for idx in occurrences if idx.size)
                hits.setdefault((name, rate), []).append(float(found))
    for (name, rate), values in sorted(hits.items()):
        stats.setdefault(str(rate), {})[name] = round(float(np.mean(values)), 4)
    return stats


def run(
    out: Path,
    qa: Sequence[Path],
    seed: int,
    epochs: int,
    rank: int,
    lr: float,
    batch_size: int,
    width: int,
    max_examples: int | None,
    labels: str = "answers",
) -> dict[str, Any]:
    """Train, evaluate on the held-out split, save adapters + head with their manifest."""
    import torch
    from tqdm.auto import tqdm

    started = time.perf_counter()
    torch.manual_seed(seed)
    rng = random.Random(seed)
    tokenizer = load_tokenizer(BASE_MODEL)
    records = read_qa(bundled_qa())
    train, held = split_records(records)
    for path in qa:
        train += read_qa(path)
    exclude = {c for r in held for c in r["contexts"]}
    examples = build_examples(train, exclude, tokenizer, labels)
    rng.shuffle(examples)
    if max_examples:
        examples = examples[:max_examples]
    model, adapters = build_model(rank, 2.0 * rank, seed)
    targets = np.concatenate([e.label[e.words.token_word] for e in examples])
    pos = float((targets == 1.0).mean())
    pos_weight = min(20.0, (1 - pos) / max(pos, 1e-6))  # answer tokens are rare
    params = [p for p in model.parameters() if p.requires_grad]
    optim = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    cls, sep, pad = (
        int(tokenizer.cls_token_id),
        int(tokenizer.sep_token_id),
        int(tokenizer.pad_token_id),
    )
    plan = [batches(examples, width, batch_size, rng) for _ in range(epochs)]
    steps = sum(len(p) for p in plan)
    sched = torch.optim.lr_scheduler.OneCycleLR(optim, max_lr=lr, total_steps=steps, pct_start=0.1)
    losses = []
    bar = tqdm(total=steps, desc="fine-tuning MiniLM (adapters)", unit="step")
    for epoch_plan in plan:
        model.train()
        for batch in epoch_plan:
            ids, mask, target = _tensors(examples, batch, cls, sep, pad)
            logits = model(input_ids=ids, attention_mask=mask).logits
            loss = soft_cross_entropy(logits, target, pos_weight)
            optim.zero_grad()
            loss.backward()
            optim.step()
            sched.step()
            losses.append(float(loss.detach()))
            bar.update(1)
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
    bar.close()
    train_seconds = time.perf_counter() - started
    held_stats = held_out_retention(model, held, tokenizer, 254, seed)
    tensors: dict[str, np.ndarray] = {
        "classifier.weight": model.classifier.weight.detach().numpy().astype(np.float32),
        "classifier.bias": model.classifier.bias.detach().numpy().astype(np.float32),
    }
    for name, adapter in adapters.items():
        a, b = adapter.delta()
        tensors[f"{name}.lora_A"] = a.numpy().astype(np.float32)
        tensors[f"{name}.lora_B"] = b.numpy().astype(np.float32)
    info = {
        "base": BASE_MODEL,
        "method": f"LoRA rank {rank} (alpha {2 * rank}) on every {', '.join(ADAPTED)} matrix "
        "of all six encoder layers, plus a 2-label token-classification head; the update "
        "is stored as A and B with the scale folded into B (weight += B @ A at load)",
        "labels": labels,
        "label_rule": "1 for (whitespace) words overlapping a gold answer of a training question "
        "in a passage that holds it; "
        + (
            f"0 for function words and punctuation, {CONTENT} for the other words"
            if labels == "mix"
            else "0 for the passage's other words"
        ),
        "data": "bundled pyref QA set, training split (topics with "
        f"sha1(topic) % {HELDOUT_EVERY} != 0), passages of held-out items excluded"
        + (f"; plus {[p.name for p in qa]}" if qa else ""),
        "seed": seed,
        "rank": rank,
        "epochs": epochs,
        "learning_rate": lr,
        "batch_size": batch_size,
        "window_tokens": width,
        "examples": len(examples),
        "train_tokens": int(targets.size),
        "positive_share": round(pos, 4),
        "final_loss": round(float(np.mean(losses[-20:])), 4) if losses else None,
        "held_out_items": len(held),
        "held_out_answer_retained": held_stats,
        "train_seconds": round(train_seconds, 1),
        "seconds": round(time.perf_counter() - started, 1),
    }
    save_weights(out, tensors, info)
    return info


@click.command("token-classifier")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Where to write the adapters and head, a .safetensors file with its JSON manifest "
    "beside it (default: the shipped file in the package).",
)
@click.option(
    "--qa",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    multiple=True,
    help="Extra QA JSONL files to train on (never put evaluation data here).",
)
@click.option("--seed", default=0, show_default=True)
@click.option("--epochs", default=8, show_default=True)
@click.option("--rank", default=8, show_default=True, help="LoRA rank of the adapters.")
@click.option("--lr", default=1e-3, show_default=True, help="Peak learning rate.")
@click.option("--batch-size", default=8, show_default=True)
@click.option("--window", default=256, show_default=True, help="Training window in tokens.")
@click.option("--max-examples", default=None, type=int, help="Subsample passages (quick runs).")
@click.option("--labels", type=click.Choice(LABELS), default="answers", show_default=True)
def token_classifier_command(
    out: Path | None,
    qa: tuple[Path, ...],
    seed: int,
    epochs: int,
    rank: int,
    lr: float,
    batch_size: int,
    window: int,
    max_examples: int | None,
    labels: str,
) -> None:
    """Fine-tune MiniLM (adapters + head) on answer-bearing words (CPU, minutes)."""
    if epochs < 1 or rank < 1 or batch_size < 1 or window < 16:
        raise click.UsageError("--epochs, --rank, --batch-size must be >= 1, --window >= 16")
    target = out or weights_path()
    info = run(target, list(qa), seed, epochs, rank, lr, batch_size, window, max_examples, labels)
    click.echo(json.dumps(info, indent=2))
    click.echo(f"wrote {base_path(target)}.safetensors and its manifest .json")
