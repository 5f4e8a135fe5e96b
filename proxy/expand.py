"""The optional `ctxzip_expand` tool: the model asks for an omitted original, the proxy answers.

When `tool_results.expand_tool` is on and a request already declares tools, the proxy
appends one tool definition (the same bytes on every request, so prompt caches hold).
If the model's answer calls only that tool, the proxy answers the calls from the
originals store, appends the call and its results to the conversation and asks again,
at most `expand_rounds` times (then one last round with ``tool_choice`` none); the client only
ever sees the final answer. Responses are read whole before they are relayed (a
stream is relayed once its round is known to be the last), since the proxy must know
whether the model called the tool before the client sees anything. When the model calls
the expand tool next to the client's own tools, the expand calls are removed from a
non-streamed answer (a streamed one is relayed as it came).
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import Any

from ctxzip.middleware.agent_items import AgentProtocol

NAME = "ctxzip_expand"
DESCRIPTION = (
    "Fetch the original text that a compressed tool result left out. Pass the 12-hex-digit "
    "key of a marker such as '[ctxzip: 120 lines omitted; expand key 0123456789ab]' or of a "
    "'ctxzip_omitted' note."
)
PARAMETERS = {
    "type": "object",
    "properties": {"key": {"type": "string", "description": "the key shown in the marker"}},
    "required": ["key"],
}


def definition(protocol: AgentProtocol) -> dict[str, Any]:
    """The tool definition in `protocol`'s shape."""
    if protocol == "anthropic":
        return {"name": NAME, "description": DESCRIPTION, "input_schema": PARAMETERS}
    if protocol == "responses":
        return {"type": "function", "name": NAME, "description": DESCRIPTION,
                "parameters": PARAMETERS}  # fmt: skip
    return {"type": "function",
            "function": {"name": NAME, "description": DESCRIPTION, "parameters": PARAMETERS}}  # fmt: skip


def _tool_name(tool: Any) -> Any:
    if not isinstance(tool, dict):
        return None
    fn = tool.get("function")
    return fn.get("name") if isinstance(fn, dict) else tool.get("name")


def declares_tools(body: dict[str, Any]) -> bool:
    """The request declares tools of its own (and not ours already)."""
    tools = body.get("tools")
    return isinstance(tools, list) and bool(tools) and all(_tool_name(t) != NAME for t in tools)


def with_tool(body: dict[str, Any], protocol: AgentProtocol) -> dict[str, Any]:
    """A shallow copy of `body` whose tools end with the expand tool."""
    return {**body, "tools": [*body["tools"], definition(protocol)]}


def final_round(body: dict[str, Any], protocol: AgentProtocol) -> dict[str, Any]:
    """A shallow copy of `body` that lets the model call no tool (its last round).

    The tool stays declared: Anthropic refuses ``tool_use`` history without tool definitions.
    """
    return {**body, "tool_choice": {"type": "none"} if protocol == "anthropic" else "none"}


@dataclass
class Call:
    id: str
    key: str


def _key(arguments: Any) -> str:
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except ValueError:
            return ""
    key = arguments.get("key") if isinstance(arguments, dict) else None
    return key.strip() if isinstance(key, str) else ""


def calls(answer: dict[str, Any], protocol: AgentProtocol) -> tuple[list[Call], int]:
    """(expand calls, number of other tool calls) in a complete answer."""
    ours: list[Call] = []
    others = 0
    if protocol == "openai":
        choices = answer.get("choices") or [{}]
        message = choices[0].get("message") or {}
        for call in message.get("tool_calls") or []:
            fn = call.get("function") or {}
            if fn.get("name") == NAME:
                ours.append(Call(str(call.get("id")), _key(fn.get("arguments"))))
            else:
                others += 1
    elif protocol == "anthropic":
        for block in answer.get("content") or []:
            if isinstance(block, dict) and block.get("type") == "tool_use":
                if block.get("name") == NAME:
                    ours.append(Call(str(block.get("id")), _key(block.get("input"))))
                else:
                    others += 1
    else:
        for item in answer.get("output") or []:
            if isinstance(item, dict) and item.get("type") == "function_call":
                if item.get("name") == NAME:
                    ours.append(Call(str(item.get("call_id")), _key(item.get("arguments"))))
                else:
                    others += 1
    return ours, others


def strip_calls(answer: dict[str, Any], protocol: AgentProtocol) -> dict[str, Any]:
    """`answer` without its expand calls (the client's own calls stay)."""
    answer = copy.deepcopy(answer)
    if protocol == "openai":
        for choice in answer.get("choices") or []:
            message = choice.get("message") or {}
            message["tool_calls"] = [c for c in message.get("tool_calls") or []
                                     if (c.get("function") or {}).get("name") != NAME]  # fmt: skip
    elif protocol == "anthropic":
        answer["content"] = [b for b in answer.get("content") or []
                             if not (b.get("type") == "tool_use" and b.get("name") == NAME)]  # fmt: skip
    else:
        answer["output"] = [i for i in answer.get("output") or []
                            if not (i.get("type") == "function_call" and i.get("name") == NAME)]  # fmt: skip
    return answer


def next_body(body: dict[str, Any], answer: dict[str, Any], protocol: AgentProtocol,
              results: dict[str, str]) -> dict[str, Any]:  # fmt: skip
    """`body` continued with the model's answer and the expand results (call id -> text)."""
    body = dict(body)
    if protocol == "openai":
        message = dict((answer.get("choices") or [{}])[0].get("message") or {})
        message = {k: v for k, v in message.items() if k in ("role", "content", "tool_calls")}
        message.setdefault("role", "assistant")
        body["messages"] = [*body["messages"], message, *(
            {"role": "tool", "tool_call_id": cid, "content": text}
            for cid, text in results.items())]  # fmt: skip
    elif protocol == "anthropic":
        blocks = [{"type": "tool_result", "tool_use_id": cid, "content": text}
                  for cid, text in results.items()]  # fmt: skip
        body["messages"] = [*body["messages"],
                            {"role": "assistant", "content": answer.get("content") or []},
                            {"role": "user", "content": blocks}]  # fmt: skip
    else:
        items = body.get("input")
        if isinstance(items, str):
            items = [{"role": "user", "content": items}]
        output = [o for o in answer.get("output") or [] if isinstance(o, dict)]
        body["input"] = [*(items or []), *output, *(
            {"type": "function_call_output", "call_id": cid, "output": text}
            for cid, text in results.items())]  # fmt: skip
    return body


# ---- reading a streamed answer back into a whole one ----------------------------------


def _events(raw: bytes) -> list[tuple[str, Any]]:
    out = []
    for block in raw.decode("utf-8", "replace").replace("\r\n", "\n").split("\n\n"):
        kind, data = "", []
        for line in block.split("\n"):
            if line.startswith("event:"):
                kind = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].strip())
        if not data or data == ["[DONE]"]:
            continue
        try:
            out.append((kind, json.loads("\n".join(data))))
        except ValueError:
            continue
    return out


def assemble(raw: bytes, protocol: AgentProtocol) -> dict[str, Any]:
    """The whole answer a server-sent-event stream carried (enough for `calls`/`next_body`)."""
    events = _events(raw)
    if protocol == "responses":
        for _, data in events:
            if data.get("type") in ("response.completed", "response.incomplete"):
                return dict(data.get("response") or {})
        return {}
    if protocol == "anthropic":
        message: dict[str, Any] = {}
        blocks: dict[int, dict[str, Any]] = {}
        partial: dict[int, str] = {}
        for _, data in events:
            kind = data.get("type")
            if kind == "message_start":
                message = dict(data.get("message") or {})
            elif kind == "content_block_start":
                blocks[data["index"]] = dict(data.get("content_block") or {})
            elif kind == "content_block_delta":
                block, delta = blocks.setdefault(data["index"], {}), data.get("delta") or {}
                if delta.get("type") == "text_delta":
                    block["text"] = block.get("text", "") + delta.get("text", "")
                elif delta.get("type") == "input_json_delta":
                    partial[data["index"]] = partial.get(data["index"], "") + delta.get(
                        "partial_json", "")  # fmt: skip
                elif delta.get("type") == "thinking_delta":
                    block["thinking"] = block.get("thinking", "") + delta.get("thinking", "")
                elif delta.get("type") == "signature_delta":
                    block["signature"] = delta.get("signature", "")
        for index, text in partial.items():
            try:
                blocks[index]["input"] = json.loads(text) if text else {}
            except ValueError:
                blocks[index]["input"] = {}
        message["content"] = [blocks[i] for i in sorted(blocks)]
        return message
    content: list[str] = []
    tool_calls: dict[int, dict[str, Any]] = {}
    for _, data in events:
        for choice in data.get("choices") or []:
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            if isinstance(delta.get("content"), str):
                content.append(delta["content"])
            for call in delta.get("tool_calls") or []:
                slot = tool_calls.setdefault(call.get("index", 0), {
                    "id": "", "type": "function", "function": {"name": "", "arguments": ""}})  # fmt: skip
                slot["id"] = call.get("id") or slot["id"]
                fn = call.get("function") or {}
                slot["function"]["name"] += fn.get("name") or ""
                slot["function"]["arguments"] += fn.get("arguments") or ""
    message = {"role": "assistant", "content": "".join(content) or None}
    if tool_calls:
        message["tool_calls"] = [tool_calls[i] for i in sorted(tool_calls)]
    return {"choices": [{"index": 0, "message": message}]}
