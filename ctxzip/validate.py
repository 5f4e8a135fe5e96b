"""Input checks shared by every entry point, so bad input fails the same way everywhere."""

from __future__ import annotations

from collections.abc import Sequence

from ctxzip.budget import Budget
from ctxzip.errors import InputError

DEFAULT_BUDGET = Budget(rate=0.5)


def check_text(value: object, what: str = "context") -> str:
    """Return `value` as a clean str: bytes must be UTF-8; lone surrogates are refused."""
    if isinstance(value, (bytes, bytearray)):
        try:
            value = bytes(value).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InputError(f"{what} is not valid UTF-8 (byte {exc.start})") from None
    if not isinstance(value, str):
        raise InputError(f"{what} must be a string, got {type(value).__name__}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InputError(f"{what} holds an invalid character at position {exc.start}") from None
    return value


def check_contexts(contexts: object) -> tuple[str, ...]:
    """Accept one string or a sequence of strings; never a bare non-text value."""
    if isinstance(contexts, (str, bytes, bytearray)):
        return (check_text(contexts),)
    if not isinstance(contexts, Sequence):
        raise InputError(
            f"contexts must be a string or a list of strings, got {type(contexts).__name__}"
        )
    return tuple(check_text(c, f"context {i}") for i, c in enumerate(contexts))


def check_query(query: object) -> str | None:
    if query is None:
        return None
    return check_text(query, "query")


def check_budget(budget: object) -> Budget:
    if budget is None:
        return DEFAULT_BUDGET
    if not isinstance(budget, Budget):
        raise InputError(f"budget must be a ctxzip.Budget, got {type(budget).__name__}")
    return budget
