"""Relay an upstream response to the client as its bytes arrive.

Nothing is buffered or re-serialised: each raw chunk from the upstream is sent on at
once (so server-sent events, the usage chunk included, pass through untouched). A
second task waits for the client's ``http.disconnect``; when it comes first, the
relay is cancelled and the upstream response closed, so the upstream stops
generating. A stream cut by the upstream ends with an error event in the caller's
protocol, never with a half-written one.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import anyio

from ctxzip.proxy.errors import Protocol, sse_error

log = logging.getLogger("ctxzip.proxy")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class Relay:
    """An ASGI response that streams `chunks` under `status` and `headers`.

    `on_close(outcome)` runs once at the end with ``"ok"``, ``"client_disconnect"`` or
    ``"upstream_stream"``; `aclose` (the upstream response's) runs in every case.
    """

    def __init__(self, status: int, headers: list[tuple[bytes, bytes]],
                 chunks: AsyncIterator[bytes], *, protocol: Protocol, is_sse: bool,
                 aclose: Callable[[], Awaitable[None]] | None = None,
                 on_close: Callable[[str], None] | None = None) -> None:  # fmt: skip
        self.status = status
        self.headers = headers
        self.chunks = chunks
        self.protocol = protocol
        self.is_sse = is_sse
        self.aclose = aclose
        self.on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        outcome = "ok"
        disconnected = False
        self._finished = False
        try:
            async with anyio.create_task_group() as tg:

                async def watch() -> None:
                    nonlocal disconnected
                    while True:
                        message = await receive()
                        if message["type"] == "http.disconnect":
                            # after the last byte went out, a disconnect is the normal end
                            disconnected = not self._finished
                            tg.cancel_scope.cancel()
                            return

                async def relay() -> None:
                    nonlocal outcome
                    outcome = await self._relay(send)
                    tg.cancel_scope.cancel()

                tg.start_soon(watch)
                tg.start_soon(relay)
        except OSError:
            disconnected = True  # the socket went away while we were sending
        finally:
            if disconnected:
                outcome = "client_disconnect"
            if self.aclose is not None:
                # closing a broken stream may raise; it is closed either way
                with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
                    await self.aclose()
            if self.on_close is not None:
                self.on_close(outcome)

    async def _relay(self, send: Send) -> str:
        await send({"type": "http.response.start", "status": self.status, "headers": self.headers})
        tail = b"\n\n"
        outcome = "ok"
        try:
            async for chunk in self.chunks:
                if chunk:
                    tail = (tail + chunk)[-2:]
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            outcome = "upstream_stream"
            log.warning("upstream stream broke: %s", type(exc).__name__)
            if self.is_sse:
                end = b"" if tail == b"\n\n" else b"\n\n"
                message = "the upstream stream ended unexpectedly"
                await send({
                    "type": "http.response.body",
                    "body": end + sse_error(self.protocol, message, "upstream_stream"),
                    "more_body": True,
                })  # fmt: skip
        self._finished = True
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return outcome
