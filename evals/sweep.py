"""Run a sweep: methods x budgets over a QA set, with one reader, cached and resumable.

Compress every item with every (method, rate), then ask the reader about every
distinct prompt, then score. Each finished compression and answer is appended to
``<out>/cache/*.jsonl`` at once, so a rerun with the same settings skips what is done.
What a method produces is what its class declares as `kind` (text, soft-token, vision,
image): soft-token and vision methods answer through the reader's model themselves, and
methods add their own numbers through `CompressionResult.extra`: see `hooks`.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from ctxzip.budget import Budget
from ctxzip.compressor import Compressor
from ctxzip.errors import InputError
from ctxzip.evals import metrics
from ctxzip.evals.baselines import FIXED, FULL, NO_CONTEXT, RANDOM, TRUNCATE, RandomSentenceDrop
from ctxzip.evals.cache import JsonlCache, file_stamps, key_of
from ctxzip.evals.datasets import IMAGE_KEY, QAItem
from ctxzip.evals.hooks import (
    SELF_READING_KINDS,
    TEXT_KINDS,
    ReadsItself,
    method_kind,
    numeric_extra,
)
from ctxzip.evals.readers import Answer, Reader
from ctxzip.registry import compressor_names, get_compressor
from ctxzip.result import CompressionRequest
from ctxzip.tokens import get_tokenizer

SKIP_BY_DEFAULT = ("noop",)
"""Methods `all` leaves out because a baseline already measures them (noop == full)."""


@dataclass
class SweepConfig:
    """Everything a sweep depends on (written to the run folder as config.json)."""

    dataset: str = "pyref"
    methods: list[str] = field(default_factory=lambda: ["all"])
    rates: list[float] = field(default_factory=lambda: [0.5, 0.33, 0.2, 0.1])
    reader: str = "local"
    limit: int | None = None
    out: str = "runs/eval"
    seed: int = 0
    baselines: bool = True
    method_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    reader_options: dict[str, Any] = field(default_factory=dict)
    corpus: str | None = None
    top_k: int = 5
    compress_batch: int = 8
    block_size: int = 8
    read_chunk: int = 32
    buckets: list[int] = field(default_factory=lambda: list(metrics.DEFAULT_BUCKETS))

    def __post_init__(self) -> None:
        if not self.rates or any(not (0 < r <= 1) for r in self.rates):
            raise InputError(f"rates must be in (0, 1], got {self.rates}")
        if self.limit is not None and self.limit < 1:
            raise InputError("limit must be >= 1")


def text_methods(names: Sequence[str]) -> list[str]:
    """The registered methods a text sweep runs (kind text or soft-token), minus those a
    baseline covers. Vision and image methods, and methods that declare no kind, are left out."""
    return [
        n for n in names if n not in SKIP_BY_DEFAULT and n != TRUNCATE and _kind_of(n) in TEXT_KINDS
    ]


def _kind_of(name: str) -> str | None:
    try:
        return method_kind(name)
    except Exception:  # cannot load, or declares no kind: not a text method
        return None


def resolve_methods(requested: Sequence[str]) -> list[str]:
    """Expand `all` to every registered text method; check the other names exist."""
    known = compressor_names()
    out: list[str] = []
    for name in requested:
        if name == "all":
            out.extend(text_methods(known))
        elif name in (RANDOM, FULL, NO_CONTEXT) or name in known or ":" in name:
            out.append(name)
        else:
            raise InputError(f"unknown method {name!r} (registered: {', '.join(known)})")
    return list(dict.fromkeys(out))


@dataclass
class Condition:
    method: str
    rate: float | None  # None: a baseline with no budget

    @property
    def label(self) -> str:
        return self.method if self.rate is None else f"{self.method}@{self.rate:g}"


def conditions(
    methods: Sequence[str], rates: Sequence[float], baselines: bool, images: bool = False
) -> list[Condition]:
    """Every (method, rate); with `images`, the only baseline is no-context (no image):
    the text baselines would read the image's file name."""
    names = list(methods)
    if baselines:
        names = [NO_CONTEXT, *names] if images else [NO_CONTEXT, FULL, *names, TRUNCATE, RANDOM]
    names = list(dict.fromkeys(names))
    out = []
    for name in names:
        if name in FIXED:
            out.append(Condition(name, None))
        else:
            out.extend(Condition(name, r) for r in rates)
    return out


def _make_compressor(
    name: str, kind: str, tokenizer: str, options: dict[str, Any], seed: int
) -> Compressor:
    if name == RANDOM:
        return RandomSentenceDrop(tokenizer=tokenizer, seed=seed, **options)
    if kind in TEXT_KINDS:  # budgets count the reader's tokens
        return get_compressor(name, tokenizer=tokenizer, **options)
    return get_compressor(name, **options)  # vision and image methods count their own tokens


def _joined(texts: Sequence[str]) -> str:
    return "\n\n".join(t for t in texts if t)


class Sweep:
    """One sweep's state: items, reader, caches, and the per-item records it produces."""

    def __init__(
        self,
        config: SweepConfig,
        items: list[QAItem],
        reader: Reader,
        progress: bool = True,
        log: Callable[[str], None] = print,
    ) -> None:
        self.config = config
        self.items = items
        self.reader = reader
        self.progress = progress
        self.log = log
        self.out = Path(config.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.tok = get_tokenizer(reader.tokenizer)
        self.compressions = JsonlCache(self.out / "cache" / "compressions.jsonl")
        self.answers = JsonlCache(self.out / "cache" / "answers.jsonl")
        self.errors: dict[str, str] = {}
        self._compressors: dict[str, Compressor] = {}
        self._kinds: dict[str, str | None] = {}
        self._stamps: dict[str, list[list[Any]]] = {}  # files behind options, once a run

    def _ckey(self, cond: Condition, item: QAItem) -> str:
        options = self.config.method_options.get(cond.method, {})
        if cond.method not in self._stamps:
            self._stamps[cond.method] = file_stamps(options)
        stamps = self._stamps[cond.method]
        return key_of(
            "c1",
            cond.method,
            options,
            cond.rate,
            self.reader.tokenizer,
            self.config.seed,
            item.question,
            item.contexts,
            *([stamps] if stamps else []),  # no files named: keys of older runs still match
        )

    def _akey(self, question: str, context: str) -> str:
        return key_of("a1", self.reader.config(), self.config.seed, question, context)

    def _conditions(self) -> list[Condition]:
        """Every condition of this sweep; written to the run folder's config.json."""
        conds = conditions(
            resolve_methods(self.config.methods),
            self.config.rates,
            self.config.baselines,
            images=any(IMAGE_KEY in it.metadata for it in self.items),
        )
        (self.out / "config.json").write_text(
            json.dumps(
                {
                    **asdict(self.config),
                    "conditions": [c.label for c in conds],
                    "reader_config": self.reader.config(),
                    "tokenizer": self.tok.name,
                    "n_items": len(self.items),
                },
                indent=2,
                ensure_ascii=False,
            )
        )
        return conds

    def run(self) -> list[dict[str, Any]]:
        """Compress, read and score everything; return per-item records."""
        conds = self._conditions()
        # Items go in blocks, every condition per block, so an interrupted run leaves
        # complete results for its first items (the prefix a smaller --limit selects).
        block = max(1, self.config.block_size)
        bar = tqdm(total=len(self.items), desc="eval", unit="q", disable=not self.progress)
        for start in range(0, len(self.items), block):
            chunk = self.items[start : start + block]
            for cond in conds:
                if cond.rate is not None:
                    bar.set_postfix_str(f"compress {cond.label}", refresh=True)
                    self._compress(cond, chunk)
            bar.set_postfix_str("read", refresh=True)
            self._read(self._prompts(conds, chunk))
            bar.update(len(chunk))
        bar.close()
        return self._records(conds)

    def _compressor(self, method: str) -> Compressor:
        if method not in self._compressors:
            options = self.config.method_options.get(method, {})
            self._compressors[method] = _make_compressor(
                method,
                self._kind(method) or "text",
                self.reader.tokenizer,
                options,
                self.config.seed,
            )
        return self._compressors[method]

    def _kind(self, method: str) -> str | None:
        """What the method declares it produces (`Compressor.kind`); the baselines are text.

        None when it cannot be read: the method is then recorded as failed.
        """
        if method not in self._kinds:
            kind: str | None = "text"
            if method != RANDOM and method not in FIXED:
                try:
                    kind = method_kind(method)
                except Exception as exc:
                    self._fail(method, exc)
                    kind = None
            self._kinds[method] = kind
        return self._kinds[method]

    def _reads_itself(self, method: str) -> bool:
        """Methods whose kind no text reader takes answer through the reader's model."""
        return self._kind(method) in SELF_READING_KINDS

    def _skey(self, cond: Condition, item: QAItem) -> str:
        """Answer key of a method that reads itself (its context is not text)."""
        return key_of("s1", self._ckey(cond, item), self.reader.config())

    def _compress(self, cond: Condition, items: Sequence[QAItem]) -> None:
        if self._kind(cond.method) is None:
            return
        if self._reads_itself(cond.method):
            self._compress_and_read(cond, items)
            return
        todo = [it for it in items if self._ckey(cond, it) not in self.compressions]
        comp = self._compressor_for(cond, todo)
        if comp is None:
            return
        for chunk, requests in self._batches(cond, todo):
            try:
                results = comp.compress_batch(requests)
            except Exception as exc:
                self._fail(cond.method, exc)
                return
            if not all(isinstance(t, str) for res in results for t in res.texts):
                self._fail(
                    cond.method,
                    TypeError(f"it declares kind {self._kind(cond.method)!r} but returns no text"),
                )
                return
            for it, res in zip(chunk, results, strict=True):
                self.compressions.put(self._ckey(cond, it), _compression_record(res))

    def _compress_and_read(self, cond: Condition, items: Sequence[QAItem]) -> None:
        """A method that answers through the reader's model: compress and answer together."""
        todo = [it for it in items if self._skey(cond, it) not in self.answers]
        if todo and cond.method not in self.errors and not hasattr(self.reader, "hf_tokenizer"):
            self._fail(
                cond.method, InputError("it reads through a local model: use a local reader")
            )
            return
        comp = self._compressor_for(cond, todo)
        if comp is None:
            return
        if not isinstance(comp, ReadsItself):
            kind = self._kind(cond.method)
            self._fail(cond.method, TypeError(f"it declares kind {kind!r} but has no eval_answers"))
            return
        _seed_everything(self.config.seed)
        for chunk, requests in self._batches(cond, todo):
            try:
                pairs = list(comp.eval_answers(requests, self.reader))
                if len(pairs) != len(chunk):
                    raise ValueError(f"{len(pairs)} answers for {len(chunk)} requests")
                answers = [_answer_of(a) for _, a in pairs]
            except Exception as exc:
                self._fail(cond.method, exc)
                return
            for it, (res, _), ans in zip(chunk, pairs, answers, strict=True):
                self.compressions.put(self._ckey(cond, it), _compression_record(res))
                self.answers.put(self._skey(cond, it), asdict(ans))

    def _compressor_for(self, cond: Condition, todo: Sequence[QAItem]) -> Compressor | None:
        """The method's compressor when there is work for it, else None (failures recorded)."""
        if not todo or cond.method in self.errors:
            return None
        try:
            return self._compressor(cond.method)
        except Exception as exc:
            self._fail(cond.method, exc)
            return None

    def _batches(
        self, cond: Condition, todo: Sequence[QAItem]
    ) -> Iterator[tuple[Sequence[QAItem], list[CompressionRequest]]]:
        assert cond.rate is not None
        budget = Budget(rate=cond.rate)
        step = max(1, self.config.compress_batch)
        for start in range(0, len(todo), step):
            chunk = todo[start : start + step]
            yield chunk, [CompressionRequest.of(it.contexts, it.question, budget) for it in chunk]

    def _fail(self, method: str, exc: Exception) -> None:
        self.errors[method] = f"{type(exc).__name__}: {exc}"
        self.log(f"method {method!r} failed and is left out: {self.errors[method]}")

    def _context(self, cond: Condition, item: QAItem) -> str | None:
        if cond.method == NO_CONTEXT:
            return ""
        if cond.method == FULL:
            return _joined(item.contexts)
        cached = self.compressions.get(self._ckey(cond, item))
        return None if cached is None else _joined(cached["texts"])

    def _prompts(
        self, conds: Sequence[Condition], items: Sequence[QAItem]
    ) -> dict[str, tuple[str, str]]:
        prompts: dict[str, tuple[str, str]] = {}
        for cond in conds:
            if self._reads_itself(cond.method):
                continue
            for it in items:
                ctx = self._context(cond, it)
                if ctx is not None:
                    prompts[self._akey(it.question, ctx)] = (it.question, ctx)
        return prompts

    def _read(self, prompts: dict[str, tuple[str, str]]) -> None:
        todo = [(k, q, c) for k, (q, c) in prompts.items() if k not in self.answers]
        # similar lengths together, so batches pad little
        todo.sort(key=lambda t: len(t[2]))
        bar = tqdm(total=len(todo), desc="read", unit="q", leave=False, disable=not self.progress)
        _seed_everything(self.config.seed)
        step = max(1, self.config.read_chunk)
        for start in range(0, len(todo), step):
            chunk = todo[start : start + step]
            answers = self.reader.answer([q for _, q, _ in chunk], [c for _, _, c in chunk])
            for (key, _, _), ans in zip(chunk, answers, strict=True):
                self.answers.put(key, asdict(ans))
            bar.update(len(chunk))
        bar.close()

    def _records(self, conds: Sequence[Condition]) -> list[dict[str, Any]]:
        records = []
        count = self.tok.count
        flops = getattr(self.reader, "prefill_flops", None)
        for it in self.items:
            full = _joined(it.contexts)
            tokens_full = sum(count(c) for c in it.contexts if c)
            bucket = metrics.length_bucket(tokens_full, self.config.buckets)
            for cond in conds:
                ctx = self._context(cond, it)
                if ctx is None:
                    continue
                self_read = self._reads_itself(cond.method)
                key = self._skey(cond, it) if self_read else self._akey(it.question, ctx)
                answer = self.answers.get(key)
                if answer is None:
                    continue
                cached = self.compressions.get(self._ckey(cond, it)) if cond.rate else None
                if cached is not None:
                    tokens_in, tokens_out = cached["tokens_in"], cached["tokens_out"]
                    requested, seconds = cached["requested_rate"], cached["seconds"]
                elif cond.method == FULL:
                    tokens_in = tokens_out = tokens_full
                    requested, seconds = 1.0, 0.0
                else:
                    tokens_in, tokens_out, requested, seconds = tokens_full, 0, 0.0, 0.0
                pred = answer["text"]
                prefill = answer["prompt_tokens"]
                records.append(
                    {
                        "id": it.id,
                        "method": cond.method,
                        "rate": cond.rate,
                        "question": it.question,
                        "answers": it.answers,
                        "prediction": pred,
                        "em": metrics.exact_match(pred, it.answers),
                        "f1": metrics.f1_score(pred, it.answers),
                        "acc": metrics.accuracy(pred, it.answers),
                        "retained": None if self_read else metrics.answer_retained(ctx, it.answers),
                        "full_retained": metrics.answer_retained(full, it.answers),
                        "tokens_in": tokens_in,
                        "tokens_out": tokens_out,
                        "tokenizer": self.tok.name,
                        "requested_rate": requested,
                        "achieved_rate": tokens_out / tokens_in if tokens_in else 1.0,
                        "compress_seconds": seconds,
                        "reader_seconds": answer["seconds"],
                        "prompt_tokens": prefill,
                        "prefill_flops": flops(prefill) if flops and prefill else None,
                        "answer_tokens": answer["answer_tokens"],
                        "bucket": bucket,
                        "extra": (cached or {}).get("extra", {}),
                    }
                )
        return records

    def close(self) -> None:
        self.compressions.close()
        self.answers.close()


def _compression_record(res: Any) -> dict[str, Any]:
    """What the cache keeps of a compression (JSON: texts, accounting, numeric extras)."""
    return {
        "texts": [t if isinstance(t, str) else "" for t in res.texts],
        "tokens_in": res.tokens_in,
        "tokens_out": res.tokens_out,
        "requested_rate": res.requested_rate,
        "seconds": res.seconds,
        "reason": res.reason,
        "extra": numeric_extra(res.extra or {}),
    }


def _answer_of(raw: Any) -> Answer:
    """An `Answer` from what a self-reading method returns (a mapping or an Answer)."""
    if isinstance(raw, Answer):
        return raw
    return Answer(
        text=str(raw["text"]),
        seconds=float(raw.get("seconds", 0.0)),
        prompt_tokens=int(raw.get("prompt_tokens", 0)),
        answer_tokens=int(raw.get("answer_tokens", 0)),
    )


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    try:
        import torch

        torch.manual_seed(seed)
    except ImportError:  # pragma: no cover - torch is a core dependency
        pass


def run_sweep(
    config: SweepConfig,
    items: list[QAItem],
    reader: Reader,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> tuple[list[dict[str, Any]], dict[str, str], float]:
    """Records, failed methods (name -> error) and wall seconds of one sweep."""
    t0 = time.perf_counter()
    sweep = Sweep(config, items, reader, progress=progress, log=log)
    try:
        records = sweep.run()
    finally:
        sweep.close()
    return records, sweep.errors, time.perf_counter() - t0
