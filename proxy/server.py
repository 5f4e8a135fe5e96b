"""Serving the proxy on uvicorn: connection-level guards uvicorn does not have by itself.

uvicorn trusts ``X-Forwarded-For`` from loopback by default, waits forever for a
client's first request line and headers, answers HTTP syntax errors in text/plain,
and has no cap on open connections. Here:

- forwarded headers are trusted only when ``server.proxy_headers`` is on, and then only
  from ``server.forwarded_allow_ips``;
- a connection must deliver a request's headers within ``server.header_timeout_s``
  (from the moment it opens, or from the first byte of the next request), else it is
  closed; between requests, ``server.idle_timeout_s`` (uvicorn's keep-alive) applies;
- past ``server.max_connections`` open connections a new one is closed at once;
- a request that does not parse gets a 400 in the caller's protocol (JSON), then the
  connection closes.

The body read timeout and the streaming body limit are ASGI-level (`ctxzip.proxy.app`).
"""

from __future__ import annotations

import asyncio
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from ctxzip.proxy.config import ProxyConfig
from ctxzip.proxy.errors import error_body, protocol_for_path


class GuardedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a header deadline, a connection cap and
    protocol-shaped syntax errors. Settings come from ``config.ctxzip_server``."""

    def __init__(self, config: uvicorn.Config, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        settings = getattr(config, "ctxzip_server", None)
        self.header_timeout = float(getattr(settings, "header_timeout_s", 10.0))
        self.max_connections = int(getattr(settings, "max_connections", 1024))
        self._header_timer: asyncio.TimerHandle | None = None
        self._headers_seen: list[tuple[bytes, bytes]] = []

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            self.logger.warning("connection refused: %d open", len(self.connections) - 1)
            transport.abort()
            return
        self._arm()

    def _arm(self) -> None:
        self._disarm()
        self._header_timer = self.loop.call_later(self.header_timeout, self._header_deadline)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_deadline(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._headers_seen = self.headers
        if self._header_timer is None:
            self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def send_400_response(self, msg: str) -> None:
        path = (self.url or b"").split(b"?", 1)[0].decode("latin-1")
        headers = {k.decode("latin-1"): "" for k, _ in (self._headers_seen or [])}
        body = error_body(
            protocol_for_path(path, headers),
            400,
            "the request is not valid HTTP/1.1 (request line or header syntax)",
            "invalid_http",
        )
        content = [
            STATUS_LINE[400],
            b"content-type: application/json\r\n",
            b"content-length: " + str(len(body)).encode("ascii") + b"\r\n",
            b"connection: close\r\n\r\n",
            body,
        ]
        self._disarm()
        self.transport.write(b"".join(content))
        self.transport.close()


def uvicorn_config(app: Any, config: ProxyConfig, **extra: Any) -> uvicorn.Config:
    """The uvicorn settings for serving `app` under `config` (`extra` overrides, e.g. port)."""
    s = config.server
    kwargs: dict[str, Any] = {
        "host": s.host,
        "port": s.port,
        "log_level": s.log_level,
        "lifespan": "on",
        "http": GuardedHttpProtocol,
        "proxy_headers": s.proxy_headers,
        "forwarded_allow_ips": list(s.forwarded_allow_ips) or [],
        "timeout_keep_alive": max(1, round(s.idle_timeout_s)),
        **extra,
    }
    out = uvicorn.Config(app, **kwargs)
    out.ctxzip_server = s  # type: ignore[attr-defined]
    return out
