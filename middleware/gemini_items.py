"""Where a Gemini ``generateContent`` body keeps compressible text, and what must never change.

A body has ``contents`` (turns with a ``role``, ``user`` or ``model``, and ``parts``),
``systemInstruction``, ``tools``, ``toolConfig``, ``generationConfig``, ``cachedContent``...
Only two kinds of part may change:

- a user turn's ``text`` part (under the message policy);
- inside a ``functionResponse`` part's ``response`` object, string values and arrays of
  records (under the tool-result policy; the object keeps its shape, a record array stays
  an array).

``systemInstruction``, ``tools``, ``functionCall`` parts, ``inlineData``, ``fileData``,
``thought`` parts and every part carrying a ``thoughtSignature`` are never touched (Gemini 3
answers 4xx when a signature changes or goes missing). This module only finds things.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

ROLES = {"user": "user", "model": "assistant"}
RECORDS_MIN = 2  # an array of at least this many objects is compressed as one JSON text
MAX_DEPTH = 8


def contents(body: dict[str, Any]) -> list[Any]:
    """The turns of a body (``contents``; a missing or odd one reads as none)."""
    value = body.get("contents")
    return value if isinstance(value, list) else []


def role(turn: Any) -> str | None:
    """A turn's role in chat terms (``user``/``assistant``); a turn without a role is the user's."""
    if not isinstance(turn, dict):
        return None
    value = turn.get("role", "user")
    return ROLES.get(value) if isinstance(value, str) else None


def frozen(part: Any) -> bool:
    """A part that must stay byte-identical whatever it holds."""
    if not isinstance(part, dict):
        return True
    if "thoughtSignature" in part or part.get("thought") is True:
        return True
    return any(k in part for k in ("functionCall", "inlineData", "fileData", "executableCode"))


def parts(turn: Any) -> list[Any]:
    value = turn.get("parts") if isinstance(turn, dict) else None
    return value if isinstance(value, list) else []


def text_parts(turn: Any) -> list[dict[str, Any]]:
    """The plain ``text`` parts of a turn that may change (no thought, no signature)."""
    return [p for p in parts(turn) if not frozen(p) and isinstance(p.get("text"), str)
            and "functionResponse" not in p]  # fmt: skip


def text_of(turn: Any) -> str:
    return "\n".join(p["text"] for p in text_parts(turn))


def calls(body: dict[str, Any]) -> tuple[dict[str, tuple[int, str]], dict[str, list[int]]]:
    """Function calls of model turns: id -> (turn index, name), and name -> turn indices."""
    by_id: dict[str, tuple[int, str]] = {}
    by_name: dict[str, list[int]] = {}
    for i, turn in enumerate(contents(body)):
        for part in parts(turn):
            call = part.get("functionCall") if isinstance(part, dict) else None
            if not isinstance(call, dict) or not isinstance(call.get("name"), str):
                continue
            if isinstance(call.get("id"), str):
                by_id[call["id"]] = (i, call["name"])
            by_name.setdefault(call["name"], []).append(i)
    return by_id, by_name


class JsonView:
    """A record array seen as one JSON text: reading gives the text, writing parses it back.

    Lets the tool-result policy treat ``holder[key]`` (a list of objects) like any other
    string slot; what is written back is again a list (the JSON compressor keeps it one)."""

    def __init__(self, holder: Any, key: Any) -> None:
        self.holder = holder
        self.key = key

    def __getitem__(self, key: Any) -> str:
        return json.dumps(self.holder[self.key], ensure_ascii=False, separators=(",", ":"))

    def __setitem__(self, key: Any, text: str) -> None:
        try:
            value = json.loads(text)
        except ValueError:
            return  # never write something that is not JSON into the body
        if isinstance(value, list):
            self.holder[self.key] = value


def _is_records(value: Any) -> bool:
    return (isinstance(value, list) and len(value) >= RECORDS_MIN
            and all(isinstance(v, dict) for v in value))  # fmt: skip


def response_slots(response: Any, depth: int = 0) -> Iterator[tuple[Any, Any]]:
    """(container, key) of each string value and record array inside a ``response`` object.

    A record array is yielded as a `JsonView` (key None); other containers are walked."""
    if depth > MAX_DEPTH:
        return
    pairs = response.items() if isinstance(response, dict) else enumerate(response)
    for key, value in list(pairs):
        if isinstance(value, str):
            yield response, key
        elif _is_records(value):
            yield JsonView(response, key), None
        elif isinstance(value, (dict, list)):
            yield from response_slots(value, depth + 1)


def function_responses(body: dict[str, Any]) -> Iterator[tuple[int, int, dict[str, Any]]]:
    """(turn index, part index, functionResponse) of every tool result that may change."""
    for i, turn in enumerate(contents(body)):
        if not isinstance(turn, dict) or turn.get("role", "user") == "model":
            continue
        for j, part in enumerate(parts(turn)):
            if frozen(part):
                continue
            response = part.get("functionResponse")
            if isinstance(response, dict) and isinstance(response.get("response"), dict):
                yield i, j, response
