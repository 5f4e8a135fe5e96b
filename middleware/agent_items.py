"""Where agent traffic keeps its text: tool results and the guiding query, per protocol.

Four wire formats carry tool results: OpenAI chat (``role: "tool"`` messages answering
an assistant's ``tool_calls``), Anthropic messages (``tool_result`` blocks answering
``tool_use`` blocks), the OpenAI Responses API (``function_call_output`` items
answering ``function_call`` items of ``input``) and Gemini (``functionResponse`` parts
answering ``functionCall`` parts; see `ctxzip.middleware.gemini_items`). This module only
finds things; it never changes a body. The query for a tool result is the last user text *before the
tool call*, so it depends on earlier messages only (prompt caches keep hitting).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

from ctxzip.middleware import gemini_items as gemini

AgentProtocol = Literal["openai", "anthropic", "responses", "gemini"]
RESPONSES_TEXT_PARTS = frozenset({"input_text", "output_text", "text"})


@dataclass
class ToolSlot:
    """One tool result's text: the string at ``container[key]``.

    `index`: the message (or input item) holding it; `block`: the content block within
    it (Anthropic) or -1; `call_index`: the message/item holding the matching call, or -1
    when none was found; `tool`: the tool's name when the call was found.
    """

    index: int
    block: int
    container: Any
    key: Any
    tool: str | None
    call_index: int
    is_error: bool = False

    @property
    def text(self) -> str:
        return str(self.container[self.key])


def items(body: dict[str, Any], protocol: AgentProtocol) -> list[Any]:
    """The conversation list: ``messages``, the Responses ``input`` when it is a list, or
    Gemini ``contents``."""
    if protocol == "gemini":
        return gemini.contents(body)
    key = "input" if protocol == "responses" else "messages"
    value = body.get(key)
    return value if isinstance(value, list) else []


def text_of(content: Any) -> str:
    """The plain text of a message's content (string, or text parts/blocks joined)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            b["text"]
            for b in content
            if isinstance(b, dict)
            and b.get("type") in RESPONSES_TEXT_PARTS
            and isinstance(b.get("text"), str)
        )
    return ""


def is_message(item: Any) -> bool:
    """A chat message, or a Responses ``message`` item (``type`` may be left out)."""
    return isinstance(item, dict) and item.get("type", "message") == "message" and "role" in item


def user_texts(body: dict[str, Any], protocol: AgentProtocol) -> list[tuple[int, str]]:
    """(index, text) of every user message with text, in order (-1: a string ``input``)."""
    if protocol == "responses" and isinstance(body.get("input"), str):
        return [(-1, body["input"])]
    out = []
    if protocol == "gemini":
        for i, turn in enumerate(gemini.contents(body)):
            text = gemini.text_of(turn).strip() if gemini.role(turn) == "user" else ""
            if text:
                out.append((i, text))
        return out
    for i, item in enumerate(items(body, protocol)):
        if is_message(item) and item.get("role") == "user":
            text = text_of(item.get("content")).strip()
            if text:
                out.append((i, text))
    return out


def query_before(texts: list[tuple[int, str]], index: int) -> str | None:
    """The last user text at an index below `index`."""
    found = None
    for i, text in texts:
        if i >= index:
            break
        found = text
    return found


def _calls(body: dict[str, Any], protocol: AgentProtocol) -> dict[str, tuple[int, str | None]]:
    """Tool-call id -> (index of the message/item holding the call, tool name)."""
    out: dict[str, tuple[int, str | None]] = {}
    for i, item in enumerate(items(body, protocol)):
        if not isinstance(item, dict):
            continue
        if protocol == "responses":
            if item.get("type") == "function_call" and isinstance(item.get("call_id"), str):
                name = item.get("name")
                out[item["call_id"]] = (i, name if isinstance(name, str) else None)
            continue
        if item.get("role") != "assistant":
            continue
        if protocol == "openai":
            for call in item.get("tool_calls") or []:
                if isinstance(call, dict) and isinstance(call.get("id"), str):
                    fn = call.get("function")
                    name = fn.get("name") if isinstance(fn, dict) else None
                    out[call["id"]] = (i, name if isinstance(name, str) else None)
        else:
            content = item.get("content")
            for block in content if isinstance(content, list) else []:
                if (isinstance(block, dict) and block.get("type") == "tool_use"
                        and isinstance(block.get("id"), str)):  # fmt: skip
                    name = block.get("name")
                    out[block["id"]] = (i, name if isinstance(name, str) else None)
    return out


def _string_slots(holder: Any, key: Any) -> Iterator[tuple[Any, Any]]:
    """(container, key) of the strings in a tool result's content: the string itself, or
    each text part of a list of parts."""
    value = holder[key]
    if isinstance(value, str):
        yield holder, key
    elif isinstance(value, list):
        for part in value:
            if (isinstance(part, dict) and part.get("type") in RESPONSES_TEXT_PARTS
                    and isinstance(part.get("text"), str)):  # fmt: skip
                yield part, "text"


def _gemini_slots(body: dict[str, Any]) -> list[ToolSlot]:
    """Strings and record arrays inside Gemini ``functionResponse.response`` objects; the
    call is found by id, else as the last call of that name in an earlier turn."""
    by_id, by_name = gemini.calls(body)
    out: list[ToolSlot] = []
    for i, j, response in gemini.function_responses(body):
        name = response.get("name") if isinstance(response.get("name"), str) else None
        call_index = -1
        if isinstance(response.get("id"), str) and response["id"] in by_id:
            call_index = by_id[response["id"]][0]
        elif name is not None:
            call_index = max((k for k in by_name.get(name, []) if k < i), default=-1)
        for c, k in gemini.response_slots(response["response"]):
            out.append(ToolSlot(i, j, c, k, name, call_index))
    return out


def tool_slots(body: dict[str, Any], protocol: AgentProtocol) -> list[ToolSlot]:
    """Every tool-result string in `body`, in conversation order."""
    if protocol == "gemini":
        return _gemini_slots(body)
    calls = _calls(body, protocol)
    out: list[ToolSlot] = []
    for i, item in enumerate(items(body, protocol)):
        if not isinstance(item, dict):
            continue
        if protocol == "responses":
            if item.get("type") == "function_call_output" and "output" in item:
                call_index, name = calls.get(str(item.get("call_id")), (-1, None))
                for c, k in _string_slots(item, "output"):
                    out.append(ToolSlot(i, -1, c, k, name, call_index))
        elif protocol == "openai":
            if item.get("role") == "tool" and "content" in item:
                call_index, name = calls.get(str(item.get("tool_call_id")), (-1, None))
                for c, k in _string_slots(item, "content"):
                    out.append(ToolSlot(i, -1, c, k, name, call_index))
        elif item.get("role") == "user" and isinstance(item.get("content"), list):
            for j, block in enumerate(item["content"]):
                if not (isinstance(block, dict) and block.get("type") == "tool_result"):
                    continue
                if "content" not in block:
                    continue
                call_index, name = calls.get(str(block.get("tool_use_id")), (-1, None))
                error = block.get("is_error") is True
                for c, k in _string_slots(block, "content"):
                    out.append(ToolSlot(i, j, c, k, name, call_index, error))
    return out
