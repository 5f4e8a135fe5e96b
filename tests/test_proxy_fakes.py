"""Shared pieces for the proxy tests: real servers on loopback and a recording upstream.

The upstream speaks OpenAI chat completions and Anthropic messages (SSE streaming
included) in place of the paid APIs, records what it received, and misbehaves on
request: the model name picks the behaviour ("gated", "slow", "cut", "error-429",
"stall").
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from ctxzip.proxy.app import build_app
from ctxzip.proxy.config import load_config
from ctxzip.proxy.server import uvicorn_config


def stop(process: subprocess.Popen[Any], grace_s: float = 10.0) -> None:
    """End a child process the test started: terminate, then kill if it lingers."""
    process.terminate()
    try:
        process.wait(grace_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def serve(app: Any, log_level: str = "warning", proxy_config: Any = None) -> Iterator[str]:
    """Run `app` on uvicorn in a thread; yield its base URL; stop it afterwards.

    With `proxy_config`, uvicorn is set up as `ctxzip proxy` sets it up (guards,
    forwarded-header trust, log level), on a free loopback port."""
    port = free_port()
    if proxy_config is not None:
        config = uvicorn_config(app, proxy_config, host="127.0.0.1", port=port,
                                timeout_graceful_shutdown=1)  # fmt: skip
    else:
        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level=log_level,
                                lifespan="on", timeout_graceful_shutdown=1)  # fmt: skip
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not server.started:
        if time.time() > deadline or not thread.is_alive():
            raise RuntimeError("server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(5)


class FakeUpstream:
    """A recording OpenAI + Anthropic upstream."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.gate = threading.Event()
        self.cancelled = threading.Event()
        self.finished = threading.Event()
        self.app = Starlette(routes=[
            Route("/v1/chat/completions", self.chat, methods=["POST"]),
            Route("/v1/messages", self.messages, methods=["POST"]),
            Route("/v1/models", self.models, methods=["GET"]),
            Route("/v1/{rest:path}", self.other, methods=["GET", "POST", "PUT", "DELETE"]),
        ])  # fmt: skip

    def reset(self) -> None:
        self.requests.clear()
        self.gate.clear()
        self.cancelled.clear()
        self.finished.clear()

    async def _record(self, request: Request) -> dict[str, Any]:
        raw = await request.body()
        entry = {
            "path": request.url.path,
            "query": request.url.query,
            "method": request.method,
            "headers": dict(request.headers),
            "raw": raw,
            "json": json.loads(raw) if raw else None,
        }
        self.requests.append(entry)
        return entry

    @property
    def last(self) -> dict[str, Any]:
        return self.requests[-1]

    async def models(self, request: Request) -> Response:
        await self._record(request)
        return JSONResponse({"object": "list", "data": [{"id": "fake-model", "object": "model"}]})

    async def other(self, request: Request) -> Response:
        entry = await self._record(request)
        return JSONResponse({"path": entry["path"], "query": entry["query"]})

    def _error(self, model: str, protocol: str) -> Response | None:
        if model == "error-429":
            body = (
                {"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}}
                if protocol == "anthropic"
                else {"error": {"message": "slow down", "type": "rate_limit_error", "code": None}}
            )
            return JSONResponse(body, status_code=429, headers={"retry-after": "7"})
        return None

    async def _events(self, model: str, events: list[bytes]) -> Any:
        try:
            for i, event in enumerate(events):
                if model == "gated" and i == 1:
                    await asyncio.to_thread(self.gate.wait, 10)
                if model == "slow" and i > 0:
                    await asyncio.sleep(0.03)
                if model == "cut" and i == 2:
                    raise RuntimeError("upstream dies mid-stream")
                yield event
            self.finished.set()
        except (asyncio.CancelledError, GeneratorExit):
            self.cancelled.set()
            raise

    async def chat(self, request: Request) -> Response:
        entry = await self._record(request)
        body = entry["json"]
        model = body.get("model", "")
        error = self._error(model, "openai")
        if error:
            return error
        if model == "stall":
            await asyncio.sleep(30)
        text = f"seen {sum(len(str(m.get('content'))) for m in body['messages'])} chars"
        usage = {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14}
        if not body.get("stream"):
            return JSONResponse({
                "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": model,
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": text}}],
                "usage": usage, "x_unknown_field": {"kept": True},
            })  # fmt: skip
        n = 40 if model == "slow" else 3
        pieces = [f"w{i} " for i in range(n)]
        base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": model}
        events = [
            f"data: {json.dumps({**base, 'choices': [{'index': 0, 'delta': {'role': 'assistant', 'content': p}, 'finish_reason': None}]})}\n\n".encode()
            for p in pieces
        ]
        events.append(
            f"data: {json.dumps({**base, 'choices': [{'index': 0, 'delta': {}, 'finish_reason': 'stop'}]})}\n\n".encode()
        )
        options = body.get("stream_options") or {}
        if options.get("include_usage"):
            events.append(
                f"data: {json.dumps({**base, 'choices': [], 'usage': usage})}\n\n".encode()
            )
        events.append(b"data: [DONE]\n\n")
        return StreamingResponse(self._events(model, events), media_type="text/event-stream")

    async def messages(self, request: Request) -> Response:
        entry = await self._record(request)
        body = entry["json"]
        model = body.get("model", "")
        error = self._error(model, "anthropic")
        if error:
            return error
        usage = {"input_tokens": 12, "output_tokens": 4}
        if not body.get("stream"):
            return JSONResponse({
                "id": "msg_1", "type": "message", "role": "assistant", "model": model,
                "content": [{"type": "text", "text": "hello from anthropic"}],
                "stop_reason": "end_turn", "stop_sequence": None, "usage": usage,
            })  # fmt: skip

        def ev(kind: str, data: dict[str, Any]) -> bytes:
            return f"event: {kind}\ndata: {json.dumps({'type': kind, **data})}\n\n".encode()

        message = {"id": "msg_1", "type": "message", "role": "assistant", "model": model,
                   "content": [], "stop_reason": None, "stop_sequence": None,
                   "usage": {"input_tokens": 12, "output_tokens": 0}}  # fmt: skip
        n = 40 if model == "slow" else 3
        events = [
            ev("message_start", {"message": message}),
            ev("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}),
            *[ev("content_block_delta",
                 {"index": 0, "delta": {"type": "text_delta", "text": f"w{i} "}})
              for i in range(n)],
            ev("content_block_stop", {"index": 0}),
            ev("message_delta", {"delta": {"stop_reason": "end_turn", "stop_sequence": None},
                                 "usage": {"output_tokens": 4}}),
            ev("message_stop", {}),
        ]  # fmt: skip
        return StreamingResponse(self._events(model, events), media_type="text/event-stream")


def make_config(upstream_url: str | None, **sections: Any) -> Any:
    """A proxy config pointing both routes at `upstream_url` (None: local model)."""
    overrides: dict[str, Any] = {
        "server": {"log_level": "warning"},
        "compression": {"method": "truncate", "min_tokens": 40, "rate": 0.5},
        "timeouts": {"retries": 2, "backoff_s": 0.01},
        "ledger": {"path": str(Path(tempfile.mkdtemp(prefix="ctxzip-ledger-")) / "ledger.db")},
    }
    if upstream_url:
        overrides["upstreams"] = {
            "openai": {"url": upstream_url + "/v1"},
            "anthropic": {"url": upstream_url + "/v1"},
        }
    for key, value in sections.items():
        overrides[key] = {**overrides.get(key, {}), **value}
    return load_config(None, environ={}, overrides=overrides)


@contextlib.contextmanager
def running_upstream(kind: Callable[[], Any] | None = None) -> Iterator[Any]:
    """A recording upstream (`kind`, default `FakeUpstream`) served on loopback, its base
    URL in `.url`."""
    fake = (kind or FakeUpstream)()
    with serve(fake.app) as url:
        fake.url = url
        yield fake


@contextlib.contextmanager
def run_proxy(config: Any) -> Iterator[tuple[str, Any]]:
    """Start a proxy for `config`; yield (base URL, app state) once it is ready."""
    app = build_app(config)
    with serve(app, proxy_config=config) as url:
        deadline = time.time() + 120
        while not app.state.ready and app.state.ready_error is None:
            if time.time() > deadline:
                raise RuntimeError("proxy not ready")
            time.sleep(0.02)
        yield url, app.state


LONG_CONTEXT = " ".join(
    f"Sentence {i} says the archive in room {i} holds {i * 7} boxes of letters." for i in range(40)
)
