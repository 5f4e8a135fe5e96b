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


class BodyLimit:
    """Answer 413 from the Content-Length header alone, before any of the body is read."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            for key, value in scope.get("headers", []):
                if key == b"content-length":
                    try:
                        too_big = int(value) > self.limit
                    except ValueError:
                        too_big = False
                        await self._reply(scope, send, 400, "invalid Content-Length header")
                        return
                    if too_big:
                        message = f"request body is larger than {self.limit} bytes"
                        await self._reply(scope, send, 413, message)
                        return
        await self.app(scope, receive, send)

    async def _reply(self, scope: Scope, send: Send, status: int, message: str) -> None:
        protocol = protocol_for_path(scope.get("path", ""))
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
        protocol = protocol_for_path(request.url.path)
        code = "not_found" if exc.status_code == 404 else "invalid_request"
        message = exc.detail if exc.status_code != 404 else f"unknown route {request.url.path}"
        return error_response(protocol, ProxyError(exc.status_code, str(message), code))

    async def server_error(request: Request, exc: Exception) -> Response:
        log.error("unhandled error on %s: %s", request.url.path, type(exc).__name__)
        protocol = protocol_for_path(request.url.path)
        return error_response(protocol, ProxyError(500, "internal proxy error", "internal"))

    async def not_found(request: Request) -> Response:
        protocol = protocol_for_path(request.url.path)
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
        Route("/{rest:path}", not_found, methods=all_methods),
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={HTTPException: http_error, Exception: server_error},
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

    guarded = BodyLimit(app, config.limits.max_body_bytes)
    asgi.state = state  # type: ignore[attr-defined]
    return asgi
