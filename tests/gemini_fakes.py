"""A recording upstream that speaks the Gemini API wire format (in place of the paid API).

Serves ``POST /v1beta/models/{model}:generateContent`` (and the same under ``/v1``), ``:streamGenerateContent``
(``?alt=sse``: ``data: {...}`` events, CRLF-separated as Google sends them) and
``:countTokens``, records every request (path, query, headers, raw bytes, JSON), and
answers with ``usageMetadata`` including ``cachedContentTokenCount`` when the request
names a ``cachedContent``. A model named ``error-429`` answers Google's error shape.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from test_responses_fakes import ResponsesUpstream

PROMPT_TOKENS = 40
CACHED_TOKENS = 16


def usage(body: dict[str, Any], candidates: int = 3) -> dict[str, Any]:
    """The usageMetadata the fake reports for `body`."""
    out: dict[str, Any] = {
        "promptTokenCount": PROMPT_TOKENS,
        "candidatesTokenCount": candidates,
        "totalTokenCount": PROMPT_TOKENS + candidates,
    }
    if body.get("cachedContent"):
        out["cachedContentTokenCount"] = CACHED_TOKENS
    return out


def answer(text: str, body: dict[str, Any], model: str, final: bool = True) -> dict[str, Any]:
    """One GenerateContentResponse (or stream chunk) with `text`."""
    candidate: dict[str, Any] = {"content": {"role": "model", "parts": [{"text": text}]},
                                 "index": 0}  # fmt: skip
    if final:
        candidate["finishReason"] = "STOP"
    return {"candidates": [candidate], "usageMetadata": usage(body),
            "modelVersion": model, "responseId": "resp-gemini-1"}  # fmt: skip


class GeminiUpstream(ResponsesUpstream):
    """ResponsesUpstream (OpenAI chat, Responses, Anthropic) plus the Gemini routes."""

    def __init__(self) -> None:
        super().__init__()
        for version in ("v1beta", "v1"):  # google-genai 3.x speaks v1 unless told otherwise
            route = Route(f"/{version}/models/{{target}}", self.gemini, methods=["POST"])
            self.app.router.routes.insert(0, route)

    @property
    def gemini_requests(self) -> list[dict[str, Any]]:
        return [r for r in self.requests if ":" in r["path"]]

    async def gemini(self, request: Request) -> Response:
        entry = await self._record(request)
        target = request.path_params["target"]
        model, _, action = target.partition(":")
        body = entry["json"] or {}
        if model == "error-429":
            return JSONResponse({"error": {"code": 429, "message": "slow down",
                                           "status": "RESOURCE_EXHAUSTED"}},
                                status_code=429)  # fmt: skip
        if action == "countTokens":
            contents = body.get("contents") or (body.get("generateContentRequest") or {}).get(
                "contents", [])  # fmt: skip
            return JSONResponse({"totalTokens": len(json.dumps(contents)) // 4})
        text = f"seen {len(json.dumps(body.get('contents')))} chars"
        if action == "generateContent":
            return JSONResponse(answer(text, body, model))
        if action != "streamGenerateContent":
            return JSONResponse({"error": {"code": 404, "message": f"no action {action}",
                                           "status": "NOT_FOUND"}}, status_code=404)  # fmt: skip
        pieces = ["w0 ", "w1 ", "w2 "]
        chunks = [answer(p, body, model, final=i == len(pieces) - 1) for i, p in enumerate(pieces)]
        sse = entry["query"] == "alt=sse"
        if not sse:  # without alt=sse Google streams one JSON array
            return JSONResponse(chunks)
        events = [f"data: {json.dumps(c)}\r\n\r\n".encode() for c in chunks]
        return StreamingResponse(self._events(model, events), media_type="text/event-stream")
