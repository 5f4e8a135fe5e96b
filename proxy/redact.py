"""Secrets never reach a log line, whoever logs it and at whatever level.

`install()` wraps the process's LogRecord factory, so every record (ours, uvicorn's,
httpx's, a user's) renders its message and traceback once, with secrets masked,
before any handler or formatter sees it. Known secrets (configured keys) are masked
exactly; anything shaped like a key (``sk-...``, ``Bearer ...``, ``x-api-key: ...``) is
masked by pattern, so keys clients send are covered too, and so is the value of every
URL query parameter whose name looks like a credential (``sig``, ``signature``, ``token``,
``key``, ``secret``, ``password``, ``auth``, ``credential``, ...).

The record keeps its shape: a message without a secret is left exactly as it was, and
one with a secret keeps its `args` (each masked on its own), so formatters that unpack
`record.args` (uvicorn's access log) keep working at every level.
"""

from __future__ import annotations

import logging
import threading
import traceback
from typing import Any

import regex

MASK = "[REDACTED]"
_PATTERNS = regex.compile(
    r"(?i)(?:"
    r"\b(?:sk|pk|rk)-[A-Za-z0-9_\-]{8,}"  # OpenAI/Anthropic-style keys
    r"|(?<=\bbearer\s)[A-Za-z0-9._~+/=\-]{8,}"  # Authorization: Bearer <token>
    r"|(?<=(?:\b(?:api[-_]?)?key|x-api-key|authorization|token|secret|password)['\"]?\s*[:=]\s*['\"]?)"
    r"[^\s'\",;&]{6,}"
    # URL query parameters named like a credential: ?sig=..., &X-Amz-Signature=...
    r"|(?<=[?&;][\w.\-]*(?:sig|signature|token|key|secret|passw(?:or)?d|pwd|auth|credential"
    r"|session)[\w.\-]*=)[^&\s#'\"]+"
    r")"
)
_lock = threading.Lock()
_known: set[str] = set()
_installed = False


def add_secrets(*secrets: str | None) -> None:
    """Mask these exact values from now on (short values are ignored: too many hits)."""
    with _lock:
        _known.update(s for s in secrets if s and len(s) >= 6)


def redact(text: str) -> str:
    """`text` with every known or key-shaped secret replaced by [REDACTED]."""
    for secret in sorted(_known, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, MASK)
    return _PATTERNS.sub(MASK, text)


class _Masked:
    """An argument whose str() and repr() are redacted (formats with %s and %r alike)."""

    __slots__ = ("_value",)

    def __init__(self, value: object) -> None:
        self._value = value

    def __str__(self) -> str:
        return redact(str(self._value))

    def __repr__(self) -> str:
        return redact(repr(self._value))


def _mask(value: object) -> object:
    if isinstance(value, (bool, int, float)) or value is None:
        return value  # numbers cannot hold a secret, and %d must still format them
    if isinstance(value, str):
        return redact(value)
    return _Masked(value)


def _scrub(record: logging.LogRecord) -> None:
    """Mask secrets in `record` in place, keeping `args` when the message has any."""
    rendered = record.getMessage()
    if redact(rendered) != rendered:
        args = record.args
        if isinstance(args, tuple) and args:
            record.msg = redact(str(record.msg))
            record.args = tuple(_mask(a) for a in args)
        elif isinstance(args, dict) and args:
            record.msg = redact(str(record.msg))
            record.args = {k: _mask(v) for k, v in args.items()}
        else:
            record.msg, record.args = redact(rendered), ()
        check = record.getMessage()
        if redact(check) != check:  # a secret built from pieces: give up the args
            record.msg, record.args = redact(check), ()
    if record.exc_info and record.exc_info[0] is not None:
        record.exc_text = redact("".join(traceback.format_exception(*record.exc_info)))
        record.exc_text = record.exc_text.rstrip("\n")
        record.exc_info = None
    if record.stack_info:
        record.stack_info = redact(record.stack_info)


def install() -> None:
    """Redact every LogRecord created in this process from now on (idempotent)."""
    global _installed
    with _lock:
        if _installed:
            return
        previous = logging.getLogRecordFactory()

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = previous(*args, **kwargs)
            try:
                _scrub(record)
            except Exception:  # a broken log call must not break the request
                record.msg, record.args = "<unrenderable log message>", ()
            return record

        logging.setLogRecordFactory(factory)
        _installed = True
