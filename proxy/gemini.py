"""The Gemini API's request side: which paths the proxy serves, shape checks, the key.

Paths are ``/v1beta/models/{model}:{action}`` (or ``/v1/...``, the default of
`google-genai` 3.x: a ``/v1/models/...`` path whose last segment carries an ``:action``
is Gemini's, never OpenAI's); ``generateContent`` and
``streamGenerateContent`` are compressed (`COMPRESSED`), every other action (e.g.
``countTokens``, ``embedContent``) and every other ``/v1beta/...`` path passes through.
The client never picks the host: the path after ``/v1beta`` is appended to the
configured ``gemini`` upstream only when it is a plain path whose last segment may
carry one ``:action``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlencode

import regex

from ctxzip.proxy.errors import ProxyError

PREFIXES = ("/v1beta", "/v1")
COMPRESSED = frozenset({"generateContent", "streamGenerateContent"})
_SAFE = regex.compile(r"/[A-Za-z0-9._~\-/]*(?::[A-Za-z]+)?")
_MODEL = regex.compile(r"/(?:models|tunedModels)/([A-Za-z0-9._\-]+)(?::([A-Za-z]+))?")
_V1_ACTION = regex.compile(r"/v1/(?:models|tunedModels)/[^/]+:[A-Za-z]+")


def is_gemini(path: str) -> bool:
    """Whether `path` is a Gemini API path (``/v1beta/...``, or a ``/v1`` model action)."""
    return path.startswith("/v1beta/") or _V1_ACTION.fullmatch(path) is not None


def subpath(path: str) -> tuple[str, str]:
    """(API version, the part of `path` after it), checked so it can only name an
    upstream path."""
    version = next((p for p in PREFIXES if path.startswith(p + "/")), None)
    if version is None:
        raise ProxyError(404, f"unknown route {path!r}", "not_found")
    rest = path[len(version) :]
    if (not _SAFE.fullmatch(rest) or "//" in rest
            or any(seg in (".", "..") for seg in rest.split("/"))):  # fmt: skip
        raise ProxyError(400, "the request path is not allowed", "invalid_path")
    return version[1:], rest


def upstream_url(base: str, version: str, rest: str) -> str:
    """`rest` under the configured base; a base that ends in an API version takes the
    client's (``/v1beta`` or ``/v1``), so each SDK gets the API it speaks."""
    base = base.rstrip("/")
    head, _, tail = base.rpartition("/")
    if tail in ("v1", "v1beta"):
        base = f"{head}/{version}"
    return base + rest


def model_action(rest: str) -> tuple[str | None, str | None]:
    """(model, action) of ``/models/{model}:{action}``; (None, None) for other paths."""
    match = _MODEL.fullmatch(rest)
    return (match.group(1), match.group(2)) if match else (None, None)


def upstream_query(query: str, server_key: bool) -> str:
    """The query string to forward: as sent, minus ``key`` when the server holds its own."""
    if not server_key or "key=" not in query:
        return query
    return urlencode([(k, v) for k, v in parse_qsl(query, keep_blank_values=True) if k != "key"])


def _bad(message: str, param: str) -> ProxyError:
    return ProxyError(400, message, "invalid_request", param)


def validate(data: dict[str, Any]) -> None:
    """Top-level shape checks of a generateContent body (the upstream checks the rest)."""
    contents = data.get("contents")
    if not isinstance(contents, list) or not contents:
        raise _bad("'contents' is required and must be a non-empty array", "contents")
    for i, turn in enumerate(contents):
        where = f"contents[{i}]"
        if not isinstance(turn, dict):
            raise _bad(f"{where} must be an object", where)
        if not isinstance(turn.get("parts"), list):
            raise _bad(f"{where}.parts must be an array", f"{where}.parts")
        if "role" in turn and turn["role"] not in ("user", "model", "function", "tool"):
            raise _bad(f"{where}.role must be 'user' or 'model'", f"{where}.role")
    for key in ("systemInstruction", "generationConfig", "toolConfig"):
        if key in data and not isinstance(data[key], dict):
            raise _bad(f"'{key}' must be an object", key)
    if "tools" in data and not isinstance(data["tools"], list):
        raise _bad("'tools' must be an array", "tools")
