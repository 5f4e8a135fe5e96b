"""Admission control and cancellation for compression work.

A compressor is a queue served by one worker (`ctxzip.proxy.compression.Batcher`).
Before a request joins it, the expected wait is estimated as the work already queued
or running plus the request's own, in tokens, times the measured seconds per token
(a moving average over finished batches, seeded by the warm-up). When that would pass
the latency budget, the request is not queued at all: it goes upstream at once,
uncompressed, marked ``skipped; reason=overloaded``. A request that gives up waiting
(its deadline passes, or its client disconnects) takes its queued work with it, so a
burst leaves no backlog behind.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from ctxzip.static_encoder import CostMeter

T = TypeVar("T")


class Overloaded(Exception):
    """The estimated wait is over the latency budget."""


class ClientGone(Exception):
    """The client disconnected while its request was being prepared."""


class Admission:
    """Queued work (in tokens) and its measured cost, for one compressor.

    A request is admitted when the estimate fits `headroom` x the budget: the rest of
    the budget covers what the estimate does not see (parsing, counting, the event loop
    sharing the CPU with the compressor's thread).
    """

    headroom = 0.6

    def __init__(self, seconds_per_token: float = 2e-4, lag: LoopLag | None = None) -> None:
        self.meter = CostMeter(seconds_per_token)
        self.pending = 0  # tokens queued or in the batch that is running
        self.lag = lag

    def estimate(self, tokens: int) -> float:
        """Seconds until `tokens` more would be done, behind everything pending, plus what
        a saturated CPU adds (the event loop's lag: compressing now would add to it)."""
        wait = self.meter.estimate(self.pending + tokens)
        return wait + (self.lag.penalty() if self.lag is not None else 0.0)

    def check(self, tokens: int, budget_s: float | None) -> float:
        wait = self.estimate(tokens)
        if budget_s is not None and wait > self.headroom * budget_s:
            raise Overloaded(f"estimated wait {wait:.2f}s is over the {budget_s:g}s budget")
        return wait

    def add(self, tokens: int) -> None:
        self.pending += tokens

    def remove(self, tokens: int) -> None:
        self.pending = max(0, self.pending - tokens)

    def record(self, tokens: int, seconds: float) -> None:
        self.meter.record(tokens, seconds)


class LoopLag:
    """How late the event loop runs a timer (moving average): CPU saturation, seen from the
    requests' side. A request passes through the loop many times (read, parse, forward,
    relay), so the penalty is a multiple of the lag."""

    tick = 0.05
    factor = 5.0

    def __init__(self) -> None:
        self.lag = 0.0
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._watch())

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            start = loop.time()
            await asyncio.sleep(self.tick)
            late = max(0.0, loop.time() - start - self.tick)
            self.lag += 0.3 * (late - self.lag)

    def penalty(self) -> float:
        return self.factor * self.lag

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task


async def unless_disconnected(receive: Callable[[], Awaitable[Any]],
                              work: Awaitable[T]) -> T:  # fmt: skip
    """`work`'s result, or ClientGone (and `work` cancelled) when the client leaves first.

    Call only after the request body has been read: then the next ASGI message is
    ``http.disconnect``, and reading it here consumes nothing a handler needs
    (uvicorn answers every later `receive` with ``http.disconnect`` again).
    """
    task = asyncio.ensure_future(work)

    async def watch() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(watch())
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if not task.done() and watcher.exception() is not None:
            await asyncio.wait({task})  # cannot watch this client: just wait
    except asyncio.CancelledError:
        task.cancel()
        raise
    finally:
        if not watcher.done():
            watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await watcher
    if not task.done():
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        raise ClientGone("the client disconnected")
    return task.result()
