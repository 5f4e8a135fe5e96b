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
from dataclasses import dataclass, field
from typing import Any

from ctxzip.compressor import Compressor
from ctxzip.errors import CtxzipError
from ctxzip.middleware.messages import MessagePolicy, Protocol, plan_request
from ctxzip.proxy.state import KeyValueStore, MemoryStore
from ctxzip.registry import get_compressor
from ctxzip.result import CompressionRequest
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


_Item = tuple[list[CompressionRequest], "asyncio.Future[list[list[str]]]"]


class Batcher:
    """One worker per compressor; concurrent submissions share `compress_batch` calls."""

    def __init__(self, compressor: Compressor, max_batch: int = 32) -> None:
        self.compressor = compressor
        self.max_batch = max_batch
        self.queue: asyncio.Queue[_Item] | None = None
        self.worker: asyncio.Task[None] | None = None
        self.batches = 0

    async def submit(self, requests: list[CompressionRequest]) -> list[list[str]]:
        loop = asyncio.get_running_loop()
        if self.queue is None or self.worker is None or self.worker.done():
            self.queue = asyncio.Queue()
            self.worker = loop.create_task(self._run(self.queue))
        future: asyncio.Future[list[list[str]]] = loop.create_future()
        self.queue.put_nowait((requests, future))
        return await future

    async def _run(self, queue: asyncio.Queue[_Item]) -> None:
        while True:
            items = [await queue.get()]
            size = len(items[0][0])
            while not queue.empty() and size < self.max_batch:
                item = queue.get_nowait()
                items.append(item)
                size += len(item[0])
            items = [i for i in items if not i[1].done()]  # callers that gave up
            if not items:
                continue
            flat = [r for reqs, _ in items for r in reqs]
            self.batches += 1
            try:
                results = await asyncio.to_thread(self.compressor.compress_batch, flat)
                texts = [list(r.texts) for r in results]
                if len(texts) != len(flat):
                    raise CtxzipError("compressor returned the wrong number of results")
            except Exception as exc:
                for _, future in items:
                    if not future.done():
                        future.set_exception(exc)
                continue
            pos = 0
            for reqs, future in items:
                if not future.done():
                    future.set_result(texts[pos : pos + len(reqs)])
                pos += len(reqs)

    async def close(self) -> None:
        if self.worker is not None:
            self.worker.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.worker


class CompressionService:
    """Owns the compressors, their batchers and the result cache for one app."""

    def __init__(self, *, method: str, options: dict[str, Any], tokenizer: str,
                 policy: MessagePolicy, timeout_s: float, cache_size: int = 4096,
                 max_batch: int = 32, cache: KeyValueStore | None = None) -> None:  # fmt: skip
        self.method = method
        self.options = options
        self.tokenizer_name = tokenizer
        self.policy = policy
        self.timeout_s = timeout_s
        self.cache_size = cache_size
        self.max_batch = max_batch
        self._batchers: dict[str, Batcher] = {}
        # compressed texts as JSON by key; shared by replicas when it is Redis (proxy.state)
        self._cache = cache if cache is not None else MemoryStore(max_items=cache_size)
        self._writes: set[asyncio.Future[bool]] = set()
        self._tokenizer = get_tokenizer(tokenizer)

    def compressor(self, method: str) -> Batcher:
        """The batcher for `method`, loading the compressor on first use."""
        if method not in self._batchers:
            options = dict(self.options) if method == self.method else {}
            compressor = get_compressor(method, tokenizer=self.tokenizer_name, **options)
            self._batchers[method] = Batcher(compressor, self.max_batch)
        return self._batchers[method]

    def warm(self) -> None:
        """Load the default compressor and run it once (readiness)."""
        batcher = self.compressor(self.method)
        batcher.compressor.compress(
            ["ctxzip warm-up. The proxy is loading its compressor."],
            query="warm-up",
            budget=None,
        )

    def count(self, text: str) -> int:
        return self._tokenizer.count(text)

    def _key(self, method: str, request: CompressionRequest) -> str:
        h = hashlib.sha256()
        for part in (method, str(request.budget), request.query or "", *request.contexts):
            h.update(part.encode("utf-8", "surrogatepass"))
            h.update(b"\x00")
        return h.hexdigest()

    async def compress(self, body: dict[str, Any], protocol: Protocol, *, method: str | None = None,
                       rate: float | None = None, large: bool = False) -> Outcome:  # fmt: skip
        """Compress `body` or raise CompressionFailed (the caller decides fail-open)."""
        method = method or self.method
        start = time.perf_counter()
        try:
            if method in self._batchers:
                batcher = self._batchers[method]
            else:  # loading may take seconds: off the event loop
                batcher = await asyncio.to_thread(self.compressor, method)
        except CtxzipError as exc:
            raise CompressionFailed("compression_error", str(exc)) from exc
        if large:  # deep copy and token counting of a big body: off the event loop
            plan = await asyncio.to_thread(
                plan_request, body, protocol, self.policy, self.count, rate
            )
        else:
            plan = plan_request(body, protocol, self.policy, self.count, rate=rate)
        requests = plan.requests()
        tokens_in = plan.tokens_in
        if not requests:
            return Outcome(None, "unchanged", method, tokens_in, tokens_in,
                           time.perf_counter() - start, reason="nothing to compress")  # fmt: skip
        keys = [self._key(method, r) for r in requests]
        texts = [_decode(v) for v in await self._cache.get_many(keys)]
        missing = [i for i, t in enumerate(texts) if t is None]
        if missing:
            job = asyncio.ensure_future(batcher.submit([requests[i] for i in missing]))
            try:
                fresh = await asyncio.wait_for(asyncio.shield(job), self.timeout_s)
            except TimeoutError:
                # this request goes uncompressed; the work still finishes and is kept, so a
                # retry or the next turn of the same conversation gets the compressed text
                job.add_done_callback(lambda j: self._keep(j, missing, requests, keys))
                raise CompressionFailed(
                    "compression_timeout", f"compression took over {self.timeout_s:g}s"
                ) from None
            except Exception as exc:
                raise CompressionFailed(
                    "compression_error", f"{type(exc).__name__}: {exc}"
                ) from exc
            for i, new in zip(missing, fresh, strict=True):
                texts[i] = self._store(keys[i], requests[i], new)
            await asyncio.gather(*self._writes)  # stored before the answer: replicas see it
        final = [t for t in texts if t is not None]
        out_body = plan.apply(final)
        compressed_tokens = sum(self.count(t) for unit in final for t in unit)
        active_in = sum(u.tokens for u in plan.active)
        tokens_out = tokens_in - active_in + compressed_tokens
        return Outcome(out_body, "applied", method, tokens_in, tokens_out,
                       time.perf_counter() - start, extra={"messages": len(requests)})  # fmt: skip

    def _store(self, key: str, request: CompressionRequest, texts: list[str]) -> list[str]:
        if not any(t.strip() for t in texts):
            # a method may drop everything it finds irrelevant; a chat message must not
            # arrive empty, so such a message goes as it was
            texts = list(request.contexts)
        self._remember(key, texts)
        return texts

    def _keep(self, job: asyncio.Future[list[list[str]]], missing: list[int],
              requests: list[CompressionRequest], keys: list[str]) -> None:  # fmt: skip
        if job.cancelled() or job.exception() is not None:
            return
        for i, new in zip(missing, job.result(), strict=True):
            self._store(keys[i], requests[i], new)

    def _remember(self, key: str, texts: list[str]) -> None:
        if self.cache_size <= 0:
            return
        value = json.dumps(texts).encode("ascii")  # ASCII escapes keep lone surrogates
        write = asyncio.ensure_future(self._cache.set(key, value))
        self._writes.add(write)
        write.add_done_callback(self._writes.discard)

    async def close(self) -> None:
        for batcher in self._batchers.values():
            await batcher.close()
        await asyncio.gather(*self._writes, return_exceptions=True)
        await self._cache.close()


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
