"""Errors the proxy raises itself, shaped in the caller's protocol."""

from __future__ import annotations

import json
from typing import Literal

Protocol = Literal["openai", "anthropic"]

# HTTP status -> (OpenAI error type, Anthropic error type)
_TYPES = {
    400: ("invalid_request_error", "invalid_request_error"),
    401: ("authentication_error", "authentication_error"),
    403: ("permission_error", "permission_error"),
    404: ("not_found_error", "not_found_error"),
    405: ("invalid_request_error", "invalid_request_error"),
    408: ("timeout_error", "timeout_error"),
    413: ("invalid_request_error", "request_too_large"),
    429: ("rate_limit_error", "rate_limit_error"),
    500: ("api_error", "api_error"),
    502: ("api_error", "api_error"),
    503: ("api_error", "overloaded_error"),
    504: ("timeout_error", "timeout_error"),
}


class ProxyError(Exception):
    """An error answered by the proxy: status, message and a machine-readable code."""

    def __init__(self, status: int, message: str, code: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param


def protocol_for_path(path: str, headers: object = ()) -> Protocol:
    """Anthropic for its paths (/v1/messages, /v1/messages/count_tokens, ...) or when the
    client sends ``anthropic-version``; OpenAI otherwise (e.g. /v1/threads/x/messages)."""
    path = path.rstrip("/")
    if path in ("/v1/messages", "/v1/complete") or path.startswith("/v1/messages/"):
        return "anthropic"
    return "anthropic" if "anthropic-version" in headers else "openai"  # type: ignore[operator]


def error_body(protocol: Protocol, status: int, message: str, code: str,
               param: str | None = None) -> bytes:  # fmt: skip
    openai_type, anthropic_type = _TYPES.get(status, ("api_error", "api_error"))
    if protocol == "anthropic":
        body: dict[str, object] = {
            "type": "error",
            "error": {"type": anthropic_type, "message": message},
        }
    else:
        body = {"error": {"message": message, "type": openai_type, "param": param, "code": code}}
    return json.dumps(body).encode()


def sse_error(protocol: Protocol, message: str, code: str) -> bytes:
    """An error event to end a stream that broke after its headers were sent."""
    if protocol == "anthropic":
        data = json.dumps({"type": "error", "error": {"type": "api_error", "message": message}})
        return f"event: error\ndata: {data}\n\n".encode()
    data = json.dumps({"error": {"message": message, "type": "api_error", "code": code}})
    return f"data: {data}\n\n".encode()
