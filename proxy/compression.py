"""Compress a chat request body: policy, batching across requests, cache, timeout, fail-open.

Each method gets one worker task that drains a queue: while a batch runs in a thread
(never on the event loop), new requests queue up and go together into the next
`compress_batch` call, so concurrent requests share one model pass. A small LRU cache
keyed by (method, budget, query, texts) returns the same text for the same input,
which keeps provider prompt caches hitting on repeated history even for methods
that are not deterministic by themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import regex

from ctxzip.budget import Budget
from ctxzip.compressor import Compressor
from ctxzip.errors import CtxzipError
from ctxzip.middleware.messages import MessagePolicy, Protocol, plan_request
from ctxzip.proxy.admission import Admission, LoopLag, Overloaded
from ctxzip.proxy.state import KeyValueStore, MemoryStore
from ctxzip.registry import get_compressor
from ctxzip.result import CompressionRequest
from ctxzip.static_encoder import FirstStage
from ctxzip.tokens import get_tokenizer

log = logging.getLogger("ctxzip.proxy")


@dataclass
class Outcome:
    """What happened to one request body."""

    body: dict[str, Any] | None  # None: forward the original bytes
    status: str  # applied | unchanged | disabled | skipped
    method: str
    tokens_in: int = 0
    tokens_out: int = 0
    seconds: float = 0.0
    reason: str | None = None
    failure: str | None = None  # metrics failure kind, when it failed
    extra: dict[str, Any] = field(default_factory=dict)


class CompressionFailed(Exception):
    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass
class _Job:
    requests: list[CompressionRequest]
    tokens: int  # work units for admission control
    future: asyncio.Future[list[list[str]]]
    on_result: Callable[[list[list[str]]], None] | None = None


class Batcher:
    """One worker per compressor; concurrent submissions share `compress_batch` calls.

    A batch holds at most `max_batch` requests and, by the measured cost, about
    `max_batch_s` seconds of work (a batch already running in its thread cannot be
    stopped, so it is kept short). Jobs whose caller gave up (deadline, disconnect,
    overload) are dropped from the queue before they cost anything. Results of a batch
    go to every job's `on_result` (the cache), even a job whose caller has left.
    """

    def __init__(self, compressor: Compressor, max_batch: int = 32,
                 max_batch_s: float = 0.5, lag: LoopLag | None = None) -> None:  # fmt: skip
        self.compressor = compressor
        self.max_batch = max_batch
        self.max_batch_s = max_batch_s
        self.admission = Admission(lag=lag)
        self.queue: asyncio.Queue[_Job] | None = None
        self.worker: asyncio.Task[None] | None = None
        self.batches = 0
        self.running = 0  # batches in their thread now (0 or 1)

    async def submit(self, requests: list[CompressionRequest], tokens: int = 0,
                     on_result: Callable[[list[list[str]]], None] | None = None,
                     ) -> list[list[str]]:  # fmt: skip
        loop = asyncio.get_running_loop()
        if self.queue is None or self.worker is None or self.worker.done():
            self.queue = asyncio.Queue()
            self.worker = loop.create_task(self._run(self.queue))
        job = _Job(requests, tokens, loop.create_future(), on_result)
        self.admission.add(tokens)
        self.queue.put_nowait(job)
        return await job.future  # cancelling this cancels the future: the job is dropped

    def _take(self, queue: asyncio.Queue[_Job], first: _Job) -> list[_Job]:
        jobs = [first]
        size, tokens = len(first.requests), first.tokens
        limit = self.max_batch_s / max(self.admission.meter.per_item, 1e-9)
        while not queue.empty() and size < self.max_batch:
            job = queue._queue[0]  # type: ignore[attr-defined]
            if not job.future.done() and tokens + job.tokens > limit:
                break
            queue.get_nowait()
            jobs.append(job)
            size += len(job.requests)
            tokens += job.tokens
        live = []
        for job in jobs:
            if job.future.done():  # its caller gave up: drop the work
                self.admission.remove(job.tokens)
            else:
                live.append(job)
        return live

    async def _run(self, queue: asyncio.Queue[_Job]) -> None:
        while True:
            jobs = self._take(queue, await queue.get())
            if not jobs:
                continue
            flat = [r for job in jobs for r in job.requests]
            stage = getattr(self.compressor, "stage", None)
            if isinstance(stage, FirstStage):  # others waiting: no second stage this time
                stage.busy = not queue.empty()
            tokens = sum(job.tokens for job in jobs)
            self.batches += 1
            self.running += 1
            start = time.perf_counter()
            try:
                results = await asyncio.to_thread(self.compressor.compress_batch, flat)
                texts = [list(r.texts) for r in results]
                if len(texts) != len(flat):
                    raise CtxzipError("compressor returned the wrong number of results")
            except Exception as exc:
                for job in jobs:
                    if not job.future.done():
                        job.future.set_exception(exc)
                continue
            finally:
                self.running -= 1
                self.admission.remove(tokens)
            self.admission.record(tokens, time.perf_counter() - start)
            pos = 0
            for job in jobs:
                mine = texts[pos : pos + len(job.requests)]
                pos += len(job.requests)
                if job.on_result is not None:
                    job.on_result(mine)
                if not job.future.done():
                    job.future.set_result(mine)

    async def close(self) -> None:
        if self.worker is not None:
            self.worker.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.worker


class CompressionService:
    """Owns the compressors, their batchers and the result cache for one app.

    The cache is bounded in bytes (`cache_bytes`) as well as entries (`cache_size`).
    `latency_budget_s` bounds what compression may add to a request: the admission
    check skips work that would not finish within it, and a request waits at most
    min(`timeout_s`, `latency_budget_s`) for its result (None: only `timeout_s`).
    """

    def __init__(self, *, method: str, options: dict[str, Any], tokenizer: str,
                 policy: MessagePolicy, timeout_s: float, cache_size: int = 4096,
                 max_batch: int = 32, cache: KeyValueStore | None = None,
                 cache_bytes: int = 64 * 1024 * 1024,
                 latency_budget_s: float | None = None) -> None:  # fmt: skip
        self.method = method
        self.options = options
        self.tokenizer_name = tokenizer
        self.policy = policy
        self.timeout_s = timeout_s
        self.latency_budget_s = latency_budget_s
        self.cache_size = cache_size
        self.cache_bytes = cache_bytes
        self.max_batch = max_batch
        self._batchers: dict[str, Batcher] = {}
        # compressed texts as JSON by key; shared by replicas when it is Redis (proxy.state)
        self._cache = cache if cache is not None else memory_cache(cache_size, cache_bytes)
        self._writes: set[asyncio.Future[bool]] = set()
        self._tokenizer = get_tokenizer(tokenizer)
        self.lag = LoopLag()

    @property
    def deadline_s(self) -> float:
        if self.latency_budget_s is None:
            return self.timeout_s
        return min(self.timeout_s, self.latency_budget_s)

    def compressor(self, method: str) -> Batcher:
        """The batcher for `method`, loading the compressor on first use."""
        if method not in self._batchers:
            options = dict(PROXY_DEFAULTS.get(method, {}))
            if options.get("first_stage") == "static":  # MiniLM on survivors: half the budget
                options["second_stage_s"] = 0.5 * self.deadline_s
            if method == self.method:
                options.update(self.options)
            compressor = get_compressor(method, tokenizer=self.tokenizer_name, **options)
            max_batch_s = 0.3 * self.deadline_s
            self._batchers[method] = Batcher(compressor, self.max_batch, max_batch_s, self.lag)
        return self._batchers[method]

    def warm(self) -> None:
        """Load the default compressor, run it on a realistic sample and measure its cost
        per token (readiness: the first real request pays no warm-up)."""
        batcher = self.compressor(self.method)
        sample = " ".join(
            f"Warm-up sentence {i}: the proxy measures how long its compressor takes "
            f"for {i * 13} tokens of retrieved context in room {i}."
            for i in range(60)
        )
        request = CompressionRequest(contexts=(sample,), query="Which room holds 390 tokens?",
                                     budget=Budget(rate=0.33))  # fmt: skip
        tokens = self.count(sample)
        batcher.compressor.compress_batch([request])  # loads models, builds graphs
        start = time.perf_counter()
        batcher.compressor.compress_batch([request])
        seconds = time.perf_counter() - start
        batcher.admission.meter.per_item = seconds / max(tokens, 1)

    def count(self, text: str) -> int:
        return self._tokenizer.count(text)

    def _key(self, method: str, request: CompressionRequest) -> str:
        h = hashlib.sha256()
        for part in (method, str(request.budget), request.query or "", *request.contexts):
            h.update(part.encode("utf-8", "surrogatepass"))
            h.update(b"\x00")
        return h.hexdigest()

    def _oversized(self, request: CompressionRequest) -> bool:
        """One word longer than the whole budget: no method can keep it and stay in
        budget, and dropping it whole would lose it silently."""
        total = sum(len(c) for c in request.contexts)
        rate = request.budget.rate if request.budget.rate is not None else 1.0
        limit = max(1, int(total * rate / 8))  # chars: far below any token count of it
        for context in request.contexts:
            if len(context) <= limit:
                continue
            for match in _LONG_WORD.finditer(context):
                if len(match.group()) > limit:
                    return True
        return False

    async def compress(self, body: dict[str, Any], protocol: Protocol, *, method: str | None = None,
                       rate: float | None = None, large: bool = False) -> Outcome:  # fmt: skip
        """Compress `body` or raise CompressionFailed (the caller decides fail-open)."""
        method = method or self.method
        start = time.perf_counter()
        self.lag.start()
        try:
            if method in self._batchers:
                batcher = self._batchers[method]
            else:  # loading may take seconds: off the event loop
                batcher = await asyncio.to_thread(self.compressor, method)
        except CtxzipError as exc:
            raise CompressionFailed("compression_error", str(exc)) from exc
        try:
            if large:  # deep copy and token counting of a big body: off the event loop
                plan = await asyncio.to_thread(
                    plan_request, body, protocol, self.policy, self.count, rate
                )
            else:
                plan = plan_request(body, protocol, self.policy, self.count, rate=rate)
        except (UnicodeError, ValueError) as exc:  # lone surrogates cannot be tokenised
            raise CompressionFailed(
                "invalid_text", f"text the tokenizer cannot read ({type(exc).__name__})"
            ) from None
        requests = plan.requests()
        tokens_in = plan.tokens_in
        if not requests:
            return Outcome(None, "unchanged", method, tokens_in, tokens_in,
                           time.perf_counter() - start, reason="nothing to compress")  # fmt: skip
        keys = [self._key(method, r) for r in requests]
        texts = [_decode(v) for v in await self._cache.get_many(keys)]
        notes: list[str] = []
        for i, request in enumerate(requests):
            if texts[i] is None and self._oversized(request):
                texts[i] = list(request.contexts)  # passed through, and said so
                notes.append("oversized_word")
        missing = [i for i, t in enumerate(texts) if t is None]
        if missing:
            work = [plan.active[i].tokens for i in missing]
            try:
                batcher.admission.check(sum(work), self.latency_budget_s)
            except Overloaded as exc:
                raise CompressionFailed("overloaded", str(exc)) from None
            pending = [requests[i] for i in missing]

            def keep(results: list[list[str]]) -> None:
                for i, new in zip(missing, results, strict=True):
                    self._store(keys[i], requests[i], new)

            deadline = self.deadline_s - (time.perf_counter() - start)
            try:
                fresh = await asyncio.wait_for(batcher.submit(pending, sum(work), keep),
                                               max(deadline, 0.001))  # fmt: skip
            except TimeoutError:
                # cancelled: if its batch has not started, the work is dropped; if it has,
                # the result still lands in the cache for the next turn
                raise CompressionFailed(
                    "compression_timeout", f"compression took over {self.deadline_s:g}s"
                ) from None
            except Exception as exc:
                raise CompressionFailed(
                    "compression_error", f"{type(exc).__name__}: {exc}"
                ) from exc
            for i, new in zip(missing, fresh, strict=True):
                if _emptied(new, requests[i]):
                    # a method may drop everything it finds irrelevant; a chat message must
                    # not arrive empty, so it goes as it was (and that is not "applied")
                    texts[i] = list(requests[i].contexts)
                    notes.append("emptied")
                else:
                    texts[i] = new
            await asyncio.gather(*self._writes)  # stored before the answer: replicas see it
        final = [t for t in texts if t is not None]
        changed = [list(t) != list(r.contexts) for t, r in zip(final, requests, strict=True)]
        reason = ",".join(sorted(set(notes))) or None
        if not any(changed):
            return Outcome(None, "unchanged", method, tokens_in, tokens_in,
                           time.perf_counter() - start,
                           reason=reason or "nothing removed")  # fmt: skip
        out_body = plan.apply(final)
        compressed_tokens = sum(self.count(t) for unit in final for t in unit)
        active_in = sum(u.tokens for u in plan.active)
        tokens_out = tokens_in - active_in + compressed_tokens
        return Outcome(out_body, "applied", method, tokens_in, tokens_out,
                       time.perf_counter() - start, reason=reason,
                       extra={"messages": len(requests)})  # fmt: skip

    def _store(self, key: str, request: CompressionRequest, texts: list[str]) -> None:
        if not _emptied(texts, request):  # an emptied message is not worth remembering
            self._remember(key, texts)

    def _remember(self, key: str, texts: list[str]) -> None:
        if self.cache_size <= 0 or self.cache_bytes <= 0:
            return
        value = json.dumps(texts).encode("ascii")  # ASCII escapes keep lone surrogates
        write = asyncio.ensure_future(self._cache.set(key, value))
        self._writes.add(write)
        write.add_done_callback(self._writes.discard)

    async def close(self) -> None:
        await self.lag.close()
        for batcher in self._batchers.values():
            await batcher.close()
        await asyncio.gather(*self._writes, return_exceptions=True)
        await self._cache.close()


def memory_cache(max_items: int, max_bytes: int) -> MemoryStore:
    """The in-process result cache: bounded in bytes; one entry over a quarter is not kept."""
    return MemoryStore(max_items=max_items, max_bytes=max_bytes, max_value_bytes=max_bytes // 4)


def _decode(value: bytes | None) -> list[str] | None:
    """A cached entry (a JSON list of strings), or None when missing or unreadable."""
    if value is None:
        return None
    try:
        texts = json.loads(value)
    except ValueError:
        return None
    if isinstance(texts, list) and all(isinstance(t, str) for t in texts):
        return texts
    return None


# what the proxy changes in a method's defaults (the configured options still win):
# extractive scores with static embeddings first, and MiniLM re-scores the survivors only
# while that fits half the latency budget and nothing else is waiting
PROXY_DEFAULTS: dict[str, dict[str, Any]] = {"extractive": {"first_stage": "static"}}
_LONG_WORD = regex.compile(r"\S{64,}")


def _emptied(texts: list[str], request: CompressionRequest) -> bool:
    return not any(t.strip() for t in texts) and any(c.strip() for c in request.contexts)
