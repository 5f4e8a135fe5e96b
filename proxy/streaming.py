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
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
import regex

from ctxzip.proxy.errors import Protocol, error_body, sse_error
from ctxzip.proxy.usage import decoder

log = logging.getLogger("ctxzip.proxy")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


_END = {
    # a stream is complete once it carried its protocol's last event (or an error event)
    # chat completions end with [DONE]; the Responses API with its terminal event
    "openai": regex.compile(
        rb"(?m)^(?:data: ?(?:\[DONE\]\s*$|\{\s*\"error\")"
        rb"|event: ?(?:response\.(?:completed|failed|incomplete)|error)\s*$)"
    ),
    "anthropic": regex.compile(rb"(?m)^event: ?(?:message_stop|error)\s*$"),
    # Gemini has no closing event: the last chunk carries a candidate's finishReason
    "gemini": regex.compile(rb'(?m)"finishReason"|^data: ?\{\s*"error"'),
}
_BROKEN = "the upstream stream ended unexpectedly"
_MALFORMED = "the upstream sent a reply that is not valid JSON"
_MAX_DECODED = 64 * 1024 * 1024  # a compressed reply is checked up to this size, decoded


class _Broken(Exception):
    """Reading the upstream failed (as opposed to sending to the client)."""


async def _pull(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """`chunks`, with every read failure raised as _Broken (aiohttp's resets are OSErrors
    too, and must not pass for the client going away)."""
    it = chunks.__aiter__()
    while True:
        try:
            chunk = await it.__anext__()
        except StopAsyncIteration:
            return
        except anyio.get_cancelled_exc_class():
            raise
        except Exception as exc:
            raise _Broken(type(exc).__name__) from exc
        yield chunk


_DATA = regex.compile(rb"(?m)^data: ?(.*?)\r?$")
_SPLIT = regex.compile(rb"\r?\n\r?\n")


def _first_bad_event(events: bytes) -> int:
    """Offset of the first event whose data is neither JSON nor ``[DONE]`` (-1: none)."""
    start = 0
    for sep in [*_SPLIT.finditer(events), None]:
        end = sep.start() if sep is not None else len(events)
        lines = _DATA.findall(events, start, end)
        if lines:
            data = b"\n".join(lines)
            if data.strip() != b"[DONE]":
                try:
                    json.loads(data)
                except ValueError:
                    return start
        if sep is None:
            break
        start = sep.end()
    return -1


def _event_end(buf: bytes) -> int:
    """Index just past the last complete server-sent event in `buf` (0: none yet)."""
    lf = buf.rfind(b"\n\n")
    crlf = buf.rfind(b"\r\n\r\n")
    return max(lf + 2 if lf >= 0 else 0, crlf + 4 if crlf >= 0 else 0)


class Relay:
    """An ASGI response that streams `chunks` under `status` and `headers`.

    `on_close(outcome)` runs once at the end with ``"ok"``, ``"client_disconnect"`` or
    ``"upstream_stream"``; `aclose` (the upstream response's) runs in every case.

    With `expect_end` (the chat, messages and responses routes), an event stream is relayed one whole event at
    a time and must end with its protocol's last event (``data: [DONE]``,
    ``event: message_stop``) or an error event; a stream that stops short, or breaks in
    the middle of an event, ends with a protocol error event instead of a half event,
    so both SDKs raise a typed error. A body that is not an event stream is read whole
    (up to `buffer_limit` bytes) before anything is sent: if the upstream breaks off,
    the client gets a 502 in its protocol, never a 200 with half a JSON document.
    """

    def __init__(self, status: int, headers: list[tuple[bytes, bytes]],
                 chunks: AsyncIterator[bytes], *, protocol: Protocol, is_sse: bool,
                 aclose: Callable[[], Awaitable[None]] | None = None,
                 on_close: Callable[[str], None] | None = None,
                 expect_end: bool = False, buffer_limit: int = 0) -> None:  # fmt: skip
        self.status = status
        self.headers = headers
        self.chunks = chunks
        self.protocol = protocol
        self.is_sse = is_sse
        self.aclose = aclose
        self.on_close = on_close
        self.expect_end = expect_end
        self.buffer_limit = buffer_limit

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
                    nonlocal outcome, disconnected
                    try:
                        outcome = await self._relay(send)
                    except OSError:
                        disconnected = True  # the socket went away while we were sending
                    tg.cancel_scope.cancel()

                tg.start_soon(watch)
                tg.start_soon(relay)
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
        if not self.is_sse and self.buffer_limit > 0:
            return await self._relay_whole(send)
        if self.is_sse and self.expect_end and self._encoding() in ("", "identity"):
            return await self._relay_events(send)
        chunks = _pull(self.chunks)
        await send({"type": "http.response.start", "status": self.status, "headers": self.headers})
        tail = b"\n\n"
        outcome = "ok"
        try:
            async for chunk in chunks:
                if chunk:
                    tail = (tail + chunk)[-2:]
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except _Broken as exc:
            outcome = "upstream_stream"
            log.warning("upstream stream broke: %s", exc)
            if self.is_sse:
                end = b"" if tail == b"\n\n" else b"\n\n"
                await self._send_error_event(send, end)
            else:
                return outcome  # returning without the last body message cuts the link
        await self._end(send)
        return outcome

    def _encoding(self) -> str:
        for key, value in self.headers:
            if key == b"content-encoding":
                return value.decode("latin-1").strip().lower()
        return ""

    def _is_json(self, body: bytes) -> bool:
        """Whether `body` (as sent, maybe gzip) decodes to JSON; True when it cannot be read."""
        decode = decoder(self._encoding())
        if decode is None:
            return True  # an encoding we cannot read: relayed as it is
        try:
            decoded, size = [], 0
            for piece in decode(body):  # gzip comes in bounded pieces: a bomb stops at the cap
                size += len(piece)
                if size > _MAX_DECODED:
                    return True  # too big to check here: the client's parser decides
                decoded.append(piece)
            json.loads(b"".join(decoded))
        except ValueError:
            return False
        except Exception:  # a broken gzip frame is the upstream's to explain
            return True
        return True

    def _json_reply(self) -> bool:
        for key, value in self.headers:
            if key == b"content-type":
                return b"json" in value.lower()
        return False

    async def _bad_gateway(self, send: Send, message: str, code: str) -> str:
        body = error_body(self.protocol, 502, message, code)
        self.status = 502
        headers = [(b"content-type", b"application/json"),
                   (b"content-length", str(len(body)).encode())]  # fmt: skip
        headers += [(k, v) for k, v in self.headers if k.startswith(b"x-ctxzip-")]
        await send({"type": "http.response.start", "status": 502, "headers": headers})
        await send({"type": "http.response.body", "body": body, "more_body": True})
        await self._end(send)
        return code

    async def _end(self, send: Send) -> None:
        self._finished = True
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _send_error_event(self, send: Send, prefix: bytes = b"",
                                code: str = "upstream_stream") -> None:  # fmt: skip
        message = _MALFORMED if code == "upstream_malformed" else _BROKEN
        body = prefix + sse_error(self.protocol, message, code)
        await send({"type": "http.response.body", "body": body, "more_body": True})

    async def _relay_events(self, send: Send) -> str:
        await send({"type": "http.response.start", "status": self.status, "headers": self.headers})
        chunks = _pull(self.chunks)
        end = _END[self.protocol]
        buf = b""
        ended = False
        outcome = "ok"
        try:
            async for chunk in chunks:
                buf += chunk
                cut = _event_end(buf)
                if cut:
                    events, buf = buf[:cut], buf[cut:]
                    bad = _first_bad_event(events)
                    if bad >= 0:
                        if bad:
                            await send({"type": "http.response.body", "body": events[:bad],
                                        "more_body": True})  # fmt: skip
                        log.warning("upstream sent an event that is not JSON")
                        outcome = "upstream_malformed"
                        break
                    ended = ended or end.search(events) is not None
                    await send({"type": "http.response.body", "body": events, "more_body": True})
            if outcome != "ok":
                pass
            elif buf.strip() and not ended and end.search(buf):  # last event, no blank line
                ended = True
                await send({"type": "http.response.body", "body": buf + b"\n\n",
                            "more_body": True})  # fmt: skip
            elif not ended:
                outcome = "upstream_stream"
                log.warning("upstream stream ended before its last event")
        except _Broken as exc:  # the half event in `buf` is dropped
            if not ended:
                outcome = "upstream_stream"
                log.warning("upstream stream broke: %s", exc)
        if outcome != "ok":
            await self._send_error_event(send, code=outcome)
        await self._end(send)
        return outcome

    async def _relay_whole(self, send: Send) -> str:
        chunks = _pull(self.chunks)
        parts: list[bytes] = []
        size = 0
        try:
            async for chunk in chunks:
                parts.append(chunk)
                size += len(chunk)
                if size > self.buffer_limit:
                    break
        except _Broken as exc:
            log.warning("upstream response broke off: %s", exc)
            message = "the upstream response broke off before it was complete"
            return await self._bad_gateway(send, message, "upstream_stream")
        ok = 200 <= self.status < 300
        whole = self.expect_end and ok and size <= self.buffer_limit and self._json_reply()
        if whole and not self._is_json(b"".join(parts)):
            log.warning("upstream sent a reply that is not JSON")
            return await self._bad_gateway(send, _MALFORMED, "upstream_malformed")
        await send({"type": "http.response.start", "status": self.status, "headers": self.headers})
        await send({"type": "http.response.body", "body": b"".join(parts), "more_body": True})
        if size <= self.buffer_limit:
            await self._end(send)
            return "ok"
        try:  # too big to hold: the rest streams, and a break cuts the connection
            async for chunk in chunks:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except _Broken as exc:
            log.warning("upstream response broke off: %s", exc)
            return "upstream_stream"
        await self._end(send)
        return "ok"
