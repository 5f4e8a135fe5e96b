"""A recording upstream that also speaks the OpenAI Responses API (SSE included), and
agent-shaped tool outputs for the tool-result tests."""

from __future__ import annotations

import json
import re
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from test_proxy_fakes import FakeUpstream


def _response(model: str, text: str, status: str) -> dict[str, Any]:
    output = [] if status == "in_progress" else [_message(text)]
    return {
        "id": "resp_1", "object": "response", "created_at": 1, "status": status,
        "model": model, "output": output, "parallel_tool_calls": True, "tool_choice": "auto",
        "tools": [], "x_unknown_field": {"kept": True},
        "usage": None if status == "in_progress" else {
            "input_tokens": 20, "output_tokens": 3, "total_tokens": 23,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens_details": {"reasoning_tokens": 0}},
    }  # fmt: skip


def _message(text: str) -> dict[str, Any]:
    return {"type": "message", "id": "msg_1", "status": "completed", "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": []}]}  # fmt: skip


class ResponsesUpstream(FakeUpstream):
    """FakeUpstream plus ``POST /v1/responses``."""

    def __init__(self) -> None:
        super().__init__()
        self.app.router.routes.insert(0, Route("/v1/responses", self.responses, methods=["POST"]))

    async def responses(self, request: Request) -> Response:
        entry = await self._record(request)
        body = entry["json"]
        model = body.get("model", "")
        error = self._error(model, "openai")
        if error:
            return error
        text = f"seen {len(json.dumps(body.get('input')))} chars"
        if not body.get("stream"):
            return JSONResponse(_response(model, text, "completed"))
        pieces = ["w0 ", "w1 ", "w2 "]

        def ev(kind: str, seq: int, **data: Any) -> bytes:
            payload = json.dumps({"type": kind, "sequence_number": seq, **data})
            return f"event: {kind}\ndata: {payload}\n\n".encode()

        part = {"type": "output_text", "text": "", "annotations": []}
        ids = {"item_id": "msg_1", "output_index": 0, "content_index": 0}
        events = [
            ev("response.created", 0, response=_response(model, "", "in_progress")),
            ev("response.output_item.added", 1, output_index=0,
               item={**_message(""), "status": "in_progress", "content": []}),
            ev("response.content_part.added", 2, part=part, **ids),
            *[ev("response.output_text.delta", 3 + i, delta=p, logprobs=[], **ids)
              for i, p in enumerate(pieces)],
            ev("response.output_text.done", 6, text="".join(pieces), logprobs=[], **ids),
            ev("response.content_part.done", 7, part={**part, "text": "".join(pieces)}, **ids),
            ev("response.output_item.done", 8, output_index=0, item=_message("".join(pieces))),
            ev("response.completed", 9, response=_response(model, "".join(pieces), "completed")),
        ]  # fmt: skip
        return StreamingResponse(self._events(model, events), media_type="text/event-stream")


def package_json(n: int = 120) -> str:
    """A `pip list --format json`-like inventory."""
    rows = [{"name": f"package-{i:03d}", "version": f"{i % 7}.{i % 13}.{i}"} for i in range(n)]
    rows[57] = {"name": "needle-lib", "version": "9.8.7"}
    return json.dumps(rows)


def grep_output(n: int = 200) -> str:
    """`grep -rn`-like search results."""
    lines = [f"src/mod_{i % 17}.py:{i * 3 + 1}:    value_{i} = compute({i})" for i in range(n)]
    lines[120] = "src/special.py:77:def find_the_needle(haystack):"
    return "\n".join(lines) + "\n"


def build_log(n: int = 200) -> str:
    """A package-manager-like log with one warning and one error."""
    lines = [
        f"2026-01-01 10:00:{i % 60:02d} INFO fetched package-{i} ({i * 11} kB)" for i in range(n)
    ]
    lines[n // 2 - 20] = f"2026-01-01 10:01:20 WARNING package-{n // 2 - 20} is deprecated"
    lines[n * 3 // 4] = f"2026-01-01 10:02:30 ERROR checksum mismatch for package-{n * 3 // 4}"
    return "\n".join(lines) + "\n"


_KEY = re.compile(r"expand key ([0-9a-f]{12})|\"key\": \"([0-9a-f]{12})\"")


def _first_key(body: dict[str, Any]) -> str:
    m = _KEY.search(json.dumps(body.get("messages") or body.get("input"), ensure_ascii=False)
                    .replace('\\"', '"'))  # fmt: skip
    return (m.group(1) or m.group(2)) if m else "000000000000"


class ExpandingUpstream(ResponsesUpstream):
    """Model "expander": calls `ctxzip_expand` once (with the first marker key it sees), then
    answers with the length of what the tool returned."""

    async def chat(self, request: Request) -> Response:
        body = json.loads(await request.body())
        if body.get("model") not in ("expander", "expander-loop"):
            return await super().chat(request)
        self.requests.append({"json": body, "path": request.url.path})
        last = body["messages"][-1]
        loop = body["model"] == "expander-loop"  # calls the tool whenever it may
        if loop and body.get("tool_choice") == "none":
            message: dict[str, Any] = {"role": "assistant", "content": "expanded enough"}
        elif not loop and last.get("role") == "tool" and last.get("tool_call_id") == "xp_1":
            message = {"role": "assistant", "content": f"expanded {len(last['content'])}"}
        else:
            args = json.dumps({"key": _first_key(body)})
            message = {"role": "assistant", "content": None, "tool_calls": [{
                "id": "xp_1", "type": "function",
                "function": {"name": "ctxzip_expand", "arguments": args}}]}  # fmt: skip
        if not body.get("stream"):
            return JSONResponse({"id": "c", "object": "chat.completion", "created": 1,
                                 "model": "expander", "choices": [{"index": 0, "message": message,
                                 "finish_reason": "stop"}]})  # fmt: skip
        base = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "expander"}
        delta: dict[str, Any] = {"role": "assistant"}
        if message.get("tool_calls"):
            call = message["tool_calls"][0]
            delta["tool_calls"] = [{"index": 0, **call}]
        else:
            delta["content"] = message["content"]
        chunks = [{**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]},
                  {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}]  # fmt: skip
        data = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"
        return Response(data, media_type="text/event-stream")

    async def messages(self, request: Request) -> Response:
        body = json.loads(await request.body())
        if body.get("model") != "expander":
            return await super().messages(request)
        self.requests.append({"json": body, "path": request.url.path})
        last = body["messages"][-1]["content"]
        block = last[0] if isinstance(last, list) and last else {}
        if block.get("type") == "tool_result" and block.get("tool_use_id") == "xp_1":
            content = [{"type": "text", "text": f"expanded {len(block['content'])}"}]
        else:
            content = [{"type": "tool_use", "id": "xp_1", "name": "ctxzip_expand",
                        "input": {"key": _first_key(body)}}]  # fmt: skip
        return JSONResponse({"id": "m", "type": "message", "role": "assistant",
                             "model": "expander", "content": content, "stop_reason": "end_turn",
                             "stop_sequence": None,
                             "usage": {"input_tokens": 1, "output_tokens": 1}})  # fmt: skip

    async def responses(self, request: Request) -> Response:
        body = json.loads(await request.body())
        if body.get("model") != "expander":
            return await super().responses(request)
        self.requests.append({"json": body, "path": request.url.path})
        last = body["input"][-1]
        if last.get("type") == "function_call_output" and last.get("call_id") == "xp_1":
            return JSONResponse(_response("expander", f"expanded {len(last['output'])}",
                                          "completed"))  # fmt: skip
        out = _response("expander", "", "completed")
        out["output"] = [{"type": "function_call", "id": "fc_1", "call_id": "xp_1",
                          "name": "ctxzip_expand", "status": "completed",
                          "arguments": json.dumps({"key": _first_key(body)})}]  # fmt: skip
        return JSONResponse(out)
