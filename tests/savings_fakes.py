"""An upstream that bills like the real APIs: token counts and a prompt cache.

It counts each message with tiktoken and keeps, per model, the message-level prefixes
it has seen. OpenAI-shaped routes cache automatically (prefixes of 1024 tokens or
more, in 128-token steps, `cached_tokens`); the Anthropic route caches only up to the
last ``cache_control`` breakpoint and reports reads and writes separately, as the real
APIs do. Streaming carries usage where the real APIs put it.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from ctxzip.tokens import count_tokens

MIN_CACHE = 1024


def _tokens(block: Any) -> int:
    return count_tokens(json.dumps(block, sort_keys=True)) + 3


class BillingUpstream:
    """OpenAI chat, OpenAI Responses and Anthropic messages with realistic usage blocks."""

    def __init__(self) -> None:
        self.seen: dict[str, list[list[str]]] = {}
        self.bodies: list[dict[str, Any]] = []
        # gzip, as the real APIs answer clients that accept it (the proxy relays it as is)
        self.app = Starlette(middleware=[Middleware(GZipMiddleware, minimum_size=200)], routes=[
            Route("/v1/chat/completions", self.chat, methods=["POST"]),
            Route("/v1/responses", self.responses, methods=["POST"]),
            Route("/v1/messages", self.messages, methods=["POST"]),
        ])  # fmt: skip

    def _cache(self, model: str, blocks: list[Any], cacheable: int | None) -> tuple[int, int, int]:
        """(prompt tokens, read, written); `cacheable`: blocks the cache may hold (None: all)."""
        keys = [json.dumps(b, sort_keys=True) for b in blocks]
        sizes = [_tokens(b) for b in blocks]
        total = sum(sizes)
        limit = len(blocks) if cacheable is None else cacheable
        best = 0
        for old in self.seen.get(model, []):
            n = 0
            while n < min(len(old), len(keys), limit) and old[n] == keys[n]:
                n += 1
            best = max(best, n)
        read = sum(sizes[:best])
        read = 0 if read < MIN_CACHE else read
        if cacheable is None:
            read -= read % 128  # OpenAI: 128-token steps
            written = 0
        else:
            region = sum(sizes[:limit])
            written = region - read if region >= MIN_CACHE else 0
        if sum(sizes[:limit]) >= MIN_CACHE:
            self.seen.setdefault(model, []).append(keys[:limit])
        return total, read, written

    # ---- OpenAI chat ---------------------------------------------------------------------

    async def chat(self, request: Request) -> Response:
        body = await request.json()
        self.bodies.append(body)
        model = body["model"]
        prompt, cached, _ = self._cache(model, [body.get("tools"), *body["messages"]], None)
        usage = {
            "prompt_tokens": prompt, "completion_tokens": 7, "total_tokens": prompt + 7,
            "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
        }  # fmt: skip
        base = {"id": "chatcmpl-9", "created": 1, "model": model + "-2025-01-01",
                "system_fingerprint": "fp_1"}  # fmt: skip
        if not body.get("stream"):
            return JSONResponse({**base, "object": "chat.completion", "usage": usage,
                                 "choices": [{"index": 0, "finish_reason": "stop", "message": {
                                     "role": "assistant", "content": "the answer is 21"}}]})  # fmt: skip
        chunk = {**base, "object": "chat.completion.chunk"}
        with_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        extra = {"usage": None} if with_usage else {}
        events = [
            {**chunk, **extra, "choices": [{"index": 0, "delta": {"role": "assistant",
                                            "content": w}, "finish_reason": None}]}
            for w in ("the ", "answer ", "is 21")
        ] + [{**chunk, **extra, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}]  # fmt: skip
        if with_usage:
            events.append({**chunk, "choices": [], "usage": usage})
        data = [f"data: {json.dumps(e, separators=(',', ':'))}\n\n".encode() for e in events]
        return _stream([*data, b"data: [DONE]\n\n"])

    # ---- OpenAI Responses ----------------------------------------------------------------

    async def responses(self, request: Request) -> Response:
        body = await request.json()
        self.bodies.append(body)
        model = body["model"]
        items = body["input"] if isinstance(body["input"], list) else [body["input"]]
        prompt, cached, _ = self._cache(model, [body.get("instructions"), *items], None)
        usage = {"input_tokens": prompt, "input_tokens_details": {"cached_tokens": cached},
                 "output_tokens": 5, "output_tokens_details": {"reasoning_tokens": 0},
                 "total_tokens": prompt + 5}  # fmt: skip
        response = {"id": "resp_1", "object": "response", "created_at": 1, "status": "completed",
                    "model": model, "output": [{"type": "message", "id": "msg_1",
                    "status": "completed", "role": "assistant", "content": [
                        {"type": "output_text", "text": "21", "annotations": []}]}],
                    "usage": usage}  # fmt: skip
        if not body.get("stream"):
            return JSONResponse(response)
        pending = {**response, "status": "in_progress", "output": [], "usage": None}
        events = [
            ("response.created", {"response": pending}),
            ("response.in_progress", {"response": pending}),
            ("response.output_item.added", {"output_index": 0, "item": {
                "type": "message", "id": "msg_1", "status": "in_progress", "role": "assistant",
                "content": []}}),
            ("response.content_part.added", {"item_id": "msg_1", "output_index": 0,
                                             "content_index": 0, "part": {
                                                 "type": "output_text", "text": "",
                                                 "annotations": []}}),
            ("response.output_text.delta", {"item_id": "msg_1", "output_index": 0,
                                            "content_index": 0, "delta": "21"}),
            ("response.completed", {"response": response}),
        ]  # fmt: skip
        return _stream([
            f"event: {kind}\ndata: {json.dumps({'type': kind, 'sequence_number': i, **data})}\n\n"
            .encode() for i, (kind, data) in enumerate(events)
        ])  # fmt: skip

    # ---- Anthropic -----------------------------------------------------------------------

    async def messages(self, request: Request) -> Response:
        body = await request.json()
        self.bodies.append(body)
        model = body["model"]
        blocks = [body.get("tools"), body.get("system"), *body["messages"]]
        marked = [i for i, b in enumerate(blocks) if '"cache_control"' in json.dumps(b)]
        cacheable = marked[-1] + 1 if marked else 0
        if "cache_control" in body:  # top-level: automatic caching up to the last block
            cacheable = len(blocks)
        total, read, written = self._cache(model, blocks, cacheable)
        usage = {"input_tokens": total - read - written, "cache_read_input_tokens": read,
                 "cache_creation_input_tokens": written,
                 "cache_creation": {"ephemeral_5m_input_tokens": written,
                                    "ephemeral_1h_input_tokens": 0},
                 "output_tokens": 6, "service_tier": "standard"}  # fmt: skip
        message = {"id": "msg_9", "type": "message", "role": "assistant", "model": model,
                   "content": [{"type": "text", "text": "the answer is 21"}],
                   "stop_reason": "end_turn", "stop_sequence": None, "usage": usage}  # fmt: skip
        if not body.get("stream"):
            return JSONResponse(message)
        start = {
            **message,
            "content": [],
            "stop_reason": None,
            "usage": {**usage, "output_tokens": 1},
        }

        def ev(kind: str, data: dict[str, Any]) -> bytes:
            return f"event: {kind}\ndata: {json.dumps({'type': kind, **data})}\n\n".encode()

        return _stream([
            ev("message_start", {"message": start}),
            ev("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}),
            ev("ping", {}),
            ev("content_block_delta", {"index": 0, "delta": {"type": "text_delta",
                                                             "text": "the answer is 21"}}),
            ev("content_block_stop", {"index": 0}),
            ev("message_delta", {"delta": {"stop_reason": "end_turn", "stop_sequence": None},
                                 "usage": {"output_tokens": 6}}),
            ev("message_stop", {}),
        ])  # fmt: skip


def _stream(events: list[bytes]) -> Response:
    async def gen() -> Any:
        for event in events:
            # split every event in two, so the proxy's tap sees events cut across chunks
            yield event[: len(event) // 2]
            yield event[len(event) // 2 :]

    return StreamingResponse(gen(), media_type="text/event-stream")
