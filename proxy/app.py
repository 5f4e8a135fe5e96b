"""The ASGI app: routes, a pure-ASGI body-size guard, lifespan, protocol-shaped errors.

Middleware here is pure ASGI (not Starlette's BaseHTTPMiddleware, which hides
``http.disconnect`` from handlers and would keep the upstream generating after a
client leaves).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ctxzip.proxy import redact
from ctxzip.proxy.config import ProxyConfig
from ctxzip.proxy.errors import ProxyError, error_body, protocol_for_path
from ctxzip.proxy.routes import Handlers, State, error_response
from ctxzip.proxy.streaming import Receive, Scope, Send

log = logging.getLogger("ctxzip.proxy")


_EXACT_ROUTES = frozenset({
    "/healthz", "/readyz", "/metrics", "/v1/chat/completions", "/v1/messages", "/v1/compress",
})  # fmt: skip


class BodyLimit:
    """Guards every request body before a handler sees it.

    - 413 from the Content-Length header alone, before any of the body is read;
    - a body streamed without a length (or longer than it says) is counted as it
      arrives: past the limit the handler's next read raises a 413 and the connection
      is closed, so nothing more is read;
    - the whole body must arrive within `body_timeout_s` (408 otherwise, then close);
    - a trailing slash on an exact route is dropped (``/v1/chat/completions/`` is the
      chat route, validated and compressed, not a pass-through).
    """

    def __init__(self, app: Any, limit: int, body_timeout_s: float = 60.0) -> None:
        self.app = app
        self.limit = limit
        self.body_timeout_s = body_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        if path.endswith("/") and path.rstrip("/") in _EXACT_ROUTES:
            scope["path"] = path.rstrip("/")
            scope["raw_path"] = scope["path"].encode()
        for key, value in scope.get("headers", []):
            if key == b"content-length":
                try:
                    too_big = int(value) > self.limit
                except ValueError:
                    await self._reply(scope, send, 400, "invalid Content-Length header")
                    return
                if too_big:
                    message = f"request body is larger than {self.limit} bytes"
                    await self._reply(scope, send, 413, message)
                    return
        await self.app(scope, self._guarded(receive), send)

    def _guarded(self, receive: Receive) -> Receive:
        size = 0
        deadline: float | None = None
        done = False
        limit = self.limit
        loop = asyncio.get_running_loop()

        async def guarded() -> dict[str, Any]:
            nonlocal size, deadline, done
            if done:
                return await receive()
            if deadline is None:
                deadline = loop.time() + self.body_timeout_s
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
            except TimeoutError:
                done = True
                raise ProxyError(
                    408, f"the request body did not arrive within {self.body_timeout_s:g}s",
                    "body_timeout",
                ) from None  # fmt: skip
            if message["type"] == "http.request":
                size += len(message.get("body", b""))
                if size > limit:
                    done = True
                    raise ProxyError(413, f"request body is larger than {limit} bytes",
                                     "too_large")  # fmt: skip
                if not message.get("more_body", False):
                    done = True
            else:
                done = True
            return message

        return guarded

    async def _reply(self, scope: Scope, send: Send, status: int, message: str) -> None:
        protocol = protocol_for_path(scope.get("path", ""), _header_names(scope))
        code = "too_large" if status == 413 else "invalid_request"
        body = error_body(protocol, status, message, code)
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),  # the unread body must not be parsed as a request
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        state = scope.get("app_state")
        if state is not None:
            state.metrics.fail("too_large" if status == 413 else "bad_request")


def _header_names(scope: Scope) -> set[str]:
    return {k.decode("latin-1").lower() for k, _ in scope.get("headers", [])}


def build_app(config: ProxyConfig) -> Any:
    """A ready ASGI app for `config` (uvicorn serves it; tests may too)."""
    config.validate()
    redact.install()
    redact.add_secrets(*config.secrets())
    state = State(config)
    h = Handlers(state)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        warm = asyncio.create_task(state.warm())
        try:
            yield
        finally:
            warm.cancel()
            await state.close()

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        protocol = protocol_for_path(request.url.path, request.headers)
        code = "not_found" if exc.status_code == 404 else "invalid_request"
        message = exc.detail if exc.status_code != 404 else f"unknown route {request.url.path}"
        return error_response(protocol, ProxyError(exc.status_code, str(message), code))

    async def server_error(request: Request, exc: Exception) -> Response:
        log.error("unhandled error on %s: %s", request.url.path, type(exc).__name__)
        protocol = protocol_for_path(request.url.path, request.headers)
        return error_response(protocol, ProxyError(500, "internal proxy error", "internal"))

    async def proxy_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ProxyError)
        return error_response(protocol_for_path(request.url.path, request.headers), exc)

    async def not_found(request: Request) -> Response:
        protocol = protocol_for_path(request.url.path, request.headers)
        error = ProxyError(404, f"unknown route {request.url.path}", "not_found")
        return error_response(protocol, error)

    all_methods = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
    routes = [
        Route("/healthz", h.healthz, methods=["GET"]),
        Route("/readyz", h.readyz, methods=["GET"]),
        Route("/metrics", h.metrics_endpoint, methods=["GET"]),
        Route("/v1/chat/completions", h.openai_chat, methods=["POST"]),
        Route("/v1/messages", h.anthropic_messages, methods=["POST"]),
        Route("/v1/responses", h.openai_responses, methods=["POST"]),
        Route("/v1/compress", h.compress, methods=["POST"]),
        Route("/v1/ctxzip/originals/{key}", h.original, methods=["GET"]),
        Route("/v1/{rest:path}", h.passthrough, methods=all_methods),
        Route("/v1beta/{rest:path}", h.gemini, methods=all_methods),
        Route("/{rest:path}", not_found, methods=all_methods),
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={
            HTTPException: http_error,
            ProxyError: proxy_error,
            Exception: server_error,
        },
    )
    app.state.proxy = state

    async def asgi(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope["app_state"] = state
            state.metrics.in_flight.inc()
            try:
                await guarded(scope, receive, send)
            finally:
                state.metrics.in_flight.dec()
        else:
            await guarded(scope, receive, send)

    guarded = BodyLimit(app, config.limits.max_body_bytes, config.server.body_timeout_s)
    asgi.state = state  # type: ignore[attr-defined]
    return asgi
