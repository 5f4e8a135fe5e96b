"""A recording upstream that also speaks the OpenAI Responses API (SSE included), and
agent-shaped tool outputs for the tool-result tests."""

from __future__ import annotations

import json
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
