"""`abstractive`: a query-focused summary of the contexts, written by a model (RECOMP-style).

One method, three generators (see `backends`): `backend="causal"` (a local chat
LM, default SmolLM2-135M-Instruct), `backend="seq2seq"` (any `AutoModelForSeq2SeqLM`,
e.g. RECOMP's T5 compressors, with their input format) and `backend="openai"` (any
OpenAI-compatible chat endpoint). The budget sets the generation cap: the budget's
reader tokens, converted to the generator's tokenizer by the input's token ratio; the
summary is then trimmed to whole sentences within the budget in the reader's tokens.

Selective augmentation: when the best query/source-sentence cosine is below
`relevance_threshold` (no generation is spent then) or the model answers empty or
"no relevant information", the result holds no context and `reason` says why.

Faithfulness guard (default on for local backends): summary sentences with no
support in the sources are dropped and counted (`extra["faithfulness"]`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import regex

from ctxzip.compressor import BaseCompressor, Compressed
from ctxzip.compressors.abstractive.backends import (
    NO_INFO,
    RECOMP_FORMAT,
    Backend,
    CausalChatBackend,
    Job,
    OpenAIChatBackend,
    Seq2SeqBackend,
)
from ctxzip.compressors.abstractive.faithfulness import DEFAULT_EMBEDDER, SupportChecker
from ctxzip.errors import InputError
from ctxzip.models import SMOLLM
from ctxzip.result import CompressionRequest
from ctxzip.tokens import DEFAULT_TOKENIZER
from ctxzip.units import split_sentences

DEFAULT_MODELS = {
    "causal": SMOLLM,
    "seq2seq": "fangyuan/nq_abstractive_compressor",
    "openai": "gpt-4o-mini",
}
MODES = ("joint", "per_context")
DEFAULT_RELEVANCE = 0.2

# Answers that mean "nothing here is relevant" (the prompt asks for NO_INFO verbatim).
_NO_INFO = regex.compile(
    r"^\W*(?:no relevant (?:information|facts?|content)|none|n/?a|nothing relevant"
    r"|(?:the )?documents? (?:do(?:es)? not|don't) (?:contain|mention|provide)"
    r"|there is no (?:relevant )?information)\b",
    regex.IGNORECASE,
)


@dataclass
class _Task:
    request: int
    contexts: list[int]  # indices of the contexts this summary stands for
    tokens_in: int  # their size in reader tokens
    cap: int  # the summary's budget in reader tokens
    relevance: float | None = None
    text: str = ""
    reason: str | None = None
    info: dict[str, Any] = field(default_factory=dict)


class AbstractiveCompressor(BaseCompressor):
    """Writes a query-focused summary within the budget; may decline (selective augmentation).

    Options: `backend` ("causal", "seq2seq", "openai"), `model`, `mode` ("joint": one
    summary for all contexts of a request, placed first; "per_context": one each, budget
    shared by length), `faithfulness` (None = on for local backends), `relevance_threshold`
    (None = off), `lexical`/`semantic` support thresholds, `embedder`, `max_input_tokens`,
    `batch_size`, `device`, `dtype`; for "openai": `base_url`, `api_key`, `api_key_env`,
    `timeout`, `max_concurrency`; for "seq2seq": `input_format`.
    """

    name = "abstractive"

    def __init__(
        self,
        *,
        backend: str = "causal",
        model: str | None = None,
        mode: str = "joint",
        faithfulness: bool | None = None,
        relevance_threshold: float | None = DEFAULT_RELEVANCE,
        lexical: float = 0.5,
        semantic: float = 0.6,
        embedder: str = DEFAULT_EMBEDDER,
        max_input_tokens: int | None = None,
        batch_size: int = 8,
        device: str = "auto",
        dtype: str = "auto",
        base_url: str | None = None,
        api_key: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        timeout: float = 60.0,
        max_concurrency: int = 8,
        input_format: str = RECOMP_FORMAT,
        tokenizer: str = DEFAULT_TOKENIZER,
    ) -> None:
        super().__init__(tokenizer=tokenizer)
        if backend not in DEFAULT_MODELS:
            raise InputError(f"backend must be one of {', '.join(DEFAULT_MODELS)}, got {backend!r}")
        if mode not in MODES:
            raise InputError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        model = model or DEFAULT_MODELS[backend]
        self.backend: Backend
        if backend == "causal":
            self.backend = CausalChatBackend(
                model,
                max_input_tokens=max_input_tokens,
                batch_size=batch_size,
                device=device,
                dtype=dtype,
            )
        elif backend == "seq2seq":
            self.backend = Seq2SeqBackend(
                model,
                input_format=input_format,
                max_input_tokens=max_input_tokens,
                batch_size=batch_size,
                device=device,
                dtype=dtype,
            )
        else:
            self.backend = OpenAIChatBackend(
                model,
                base_url=base_url,
                api_key=api_key,
                api_key_env=api_key_env,
                timeout=timeout,
                max_concurrency=max_concurrency,
                max_input_tokens=max_input_tokens,
                counter=self._reader_count,
            )
        self.mode = mode
        self.faithfulness = self.backend.local if faithfulness is None else faithfulness
        self.relevance_threshold = relevance_threshold
        self.checker = SupportChecker(embedder, lexical=lexical, semantic=semantic, device=device)

    def __repr__(self) -> str:
        return (
            f"AbstractiveCompressor(backend={self.backend.name!r}, "
            f"model={self.backend.model_id!r}, mode={self.mode!r}, "
            f"faithfulness={self.faithfulness}, tokenizer={self.tokenizer_name!r})"
        )

    def _reader_count(self, text: str) -> int:
        return self.tokenizer.count(text) if text else 0

    # -- planning ------------------------------------------------------------------------

    def _plan(self, index: int, request: CompressionRequest) -> list[_Task]:
        sizes = [self._reader_count(c) if c.strip() else 0 for c in request.contexts]
        total = sum(sizes)
        budget = request.budget.tokens_for(total)
        live = [i for i, s in enumerate(sizes) if s]
        if not live:
            return []
        if self.mode == "joint":
            return [_Task(index, live, total, budget)]
        return [_Task(index, [i], sizes[i], sizes[i] * budget // total) for i in live]

    def _compress_requests(self, requests: list[CompressionRequest]) -> list[Compressed]:
        tasks = [t for i, r in enumerate(requests) for t in self._plan(i, r)]
        self._judge_relevance(requests, tasks)
        self._summarise(requests, [t for t in tasks if t.reason is None])
        if self.faithfulness:
            self._guard([t for t in tasks if t.reason is None and t.text])
        for task in tasks:
            if task.reason is None:
                task.text = self._fit(task.text, task.cap)
                if not task.text:
                    task.reason = "nothing left within the budget"
        return [
            self._outcome(i, r, [t for t in tasks if t.request == i])
            for i, r in enumerate(requests)
        ]

    def _judge_relevance(self, requests: list[CompressionRequest], tasks: list[_Task]) -> None:
        if self.relevance_threshold is None:
            return
        scored = [t for t in tasks if requests[t.request].query]
        pairs = [
            (requests[t.request].query or "", [requests[t.request].contexts[i] for i in t.contexts])
            for t in scored
        ]
        for task, score in zip(scored, self.checker.relevance(pairs), strict=True):
            task.relevance = score
            if score < self.relevance_threshold:
                task.reason = (
                    f"contexts judged irrelevant to the query (relevance {score:.2f} "
                    f"< {self.relevance_threshold:g})"
                )

    def _summarise(self, requests: list[CompressionRequest], tasks: list[_Task]) -> None:
        jobs = []
        for task in tasks:
            request = requests[task.request]
            docs = tuple(request.contexts[i] for i in task.contexts)
            joined = "\n".join(docs)
            ratio = self.backend.count(joined) / max(1, self._reader_count(joined))
            cap = max(1, math.ceil(task.cap * ratio)) if task.cap else 0
            task.info["generation_cap_tokens"] = cap
            task.info["sources"] = docs
            jobs.append(Job(request.query, docs, cap))
        runnable = [(t, j) for t, j in zip(tasks, jobs, strict=True) if j.max_new_tokens > 0]
        for task, job in zip(tasks, jobs, strict=True):
            if job.max_new_tokens == 0:
                task.reason = "budget too small for a summary"
        generations = self.backend.generate([j for _, j in runnable]) if runnable else []
        for (task, _), gen in zip(runnable, generations, strict=True):
            task.info["input_truncated"] = gen.truncated
            text = gen.text.strip()
            if not text or _NO_INFO.match(text) or text.upper().startswith(NO_INFO):
                task.reason = "the model found no relevant information in the contexts"
                task.info["model_answer"] = text
            else:
                task.text = text

    def _guard(self, tasks: list[_Task]) -> None:
        pairs = [(task.text, task.info["sources"]) for task in tasks]
        for task, result in zip(tasks, self.checker.filter(pairs), strict=True):
            task.info["faithfulness"] = result.to_dict()
            task.text = result.text
            if not task.text:
                task.reason = "every summary sentence was unsupported by the contexts"

    def _fit(self, text: str, cap: int) -> str:
        """Whole sentences of `text` within `cap` reader tokens (a cut sentence if none fits)."""
        if self._reader_count(text) <= cap:
            return text
        kept: list[str] = []
        for unit in split_sentences(text):
            candidate = " ".join([*kept, unit.text])
            if self._reader_count(candidate) > cap:
                break
            kept.append(unit.text)
        if kept:
            return " ".join(kept)
        tok = self.tokenizer
        ids = tok.encode(text)[:cap]
        while ids and self._reader_count(tok.decode(ids)) > cap:
            ids = ids[:-1]
        return tok.decode(ids).strip() if ids else ""

    def _outcome(self, index: int, request: CompressionRequest, tasks: list[_Task]) -> Compressed:
        texts = [""] * len(request.contexts)
        reasons, details = [], []
        for task in tasks:
            if task.text:
                texts[task.contexts[0]] = task.text
            elif task.reason:
                reasons.append(task.reason)
            detail = {k: v for k, v in task.info.items() if k != "sources"}
            detail.update(
                contexts=task.contexts,
                budget_tokens=task.cap,
                relevance=None if task.relevance is None else round(task.relevance, 4),
            )
            details.append(detail)
        dropped = sum(d.get("faithfulness", {}).get("dropped", 0) for d in details)
        extra: dict[str, Any] = {
            "backend": self.backend.name,
            "model": self.backend.model_id,
            "mode": self.mode,
            "summaries": details,
            "faithfulness_dropped": dropped if self.faithfulness else None,
        }
        reason = None
        if not any(texts) and reasons:
            reason = reasons[0]
        elif reasons:
            reason = f"{len(reasons)} of {len(tasks)} summaries empty: {reasons[0]}"
        return Compressed(
            kept=[[] for _ in request.contexts], texts=texts, reason=reason, extra=extra
        )
