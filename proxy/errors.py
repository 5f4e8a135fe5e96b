"""Errors the proxy raises itself, shaped in the caller's protocol."""

from __future__ import annotations

import json
from typing import Literal

Protocol = Literal["openai", "anthropic", "gemini"]
GEMINI_STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
                 404: "NOT_FOUND", 405: "INVALID_ARGUMENT", 413: "INVALID_ARGUMENT",
                 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 502: "UNAVAILABLE",
                 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}  # fmt: skip

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
    client sends ``anthropic-version``; Gemini under /v1beta/; OpenAI otherwise (e.g.
    /v1/threads/x/messages)."""
    path = path.rstrip("/")
    if path.startswith("/v1beta/") or (
        path.startswith(("/v1/models/", "/v1/tunedModels/")) and ":" in path
    ):
        return "gemini"
    if path in ("/v1/messages", "/v1/complete") or path.startswith("/v1/messages/"):
        return "anthropic"
    return "anthropic" if "anthropic-version" in headers else "openai"  # type: ignore[operator]


def error_body(protocol: Protocol, status: int, message: str, code: str,
               param: str | None = None) -> bytes:  # fmt: skip
    openai_type, anthropic_type = _TYPES.get(status, ("api_error", "api_error"))
    if protocol == "gemini":  # google.rpc.Status, as the Gemini API answers errors
        body: dict[str, object] = {"error": {
            "code": status, "message": message, "status": GEMINI_STATUS.get(status, "UNKNOWN"),
            "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": code,
                         "domain": "ctxzip"}]}}  # fmt: skip
    elif protocol == "anthropic":
        body = {
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
    if protocol == "gemini":
        return b"data: " + error_body("gemini", 502, message, code) + b"\r\n\r\n"
    data = json.dumps({"error": {"message": message, "type": "api_error", "code": code}})
    return f"data: {data}\n\n".encode()
