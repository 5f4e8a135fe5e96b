"""Secrets never reach a log line, whoever logs it and at whatever level.

`install()` wraps the process's LogRecord factory, so every record (ours, uvicorn's,
httpx's, a user's) renders its message and traceback once, with secrets masked,
before any handler or formatter sees it. Known secrets (configured keys) are masked
exactly; anything shaped like a key (``sk-...``, ``Bearer ...``, ``x-api-key: ...``) is
masked by pattern, so keys clients send are covered too.
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
                record.msg = redact(record.getMessage())
                record.args = None
                if record.exc_info and record.exc_info[0] is not None:
                    record.exc_text = redact("".join(traceback.format_exception(*record.exc_info)))
                    record.exc_text = record.exc_text.rstrip("\n")
                    record.exc_info = None
                if record.stack_info:
                    record.stack_info = redact(record.stack_info)
            except Exception:  # a broken log call must not break the request
                record.msg, record.args = "<unrenderable log message>", None
            return record

        logging.setLogRecordFactory(factory)
        _installed = True
