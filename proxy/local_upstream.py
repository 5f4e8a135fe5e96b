"""The embedded upstream: answers chat requests with a local model when none is configured.

So `ctxzip proxy` works end to end offline. It speaks both protocols' response formats
(OpenAI chat completions and Anthropic messages, streaming and not) from one local
causal LM (SmolLM2-135M-Instruct by default, from its registry package). Generation
runs in a worker thread under a lock (one generation at a time: the model is not
re-entrant), streamed token by token through a queue, and stops when the client goes
away.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import AsyncGenerator
from typing import Any

from ctxzip.proxy.errors import ProxyError

_DONE = object()


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            b.get("text", "") for b in content if isinstance(b, dict) and b.get("type") == "text"
        )
    return ""


def chat_messages(body: dict[str, Any], protocol: str) -> list[dict[str, str]]:
    """Plain role/content pairs the local model's chat template accepts."""
    out: list[dict[str, str]] = []
    if protocol == "anthropic" and body.get("system"):
        out.append({"role": "system", "content": _text_of(body["system"])})
    for message in body.get("messages", []):
        role = message.get("role")
        if role == "developer":
            role = "system"
        if role not in ("system", "user", "assistant"):
            continue  # the small local model has no tools
        out.append({"role": role, "content": _text_of(message.get("content"))})
    return out


def check_params(body: dict[str, Any]) -> None:
    """Reject sampling parameters the local model cannot use, as the real APIs would (400)."""
    for name in ("max_tokens", "max_completion_tokens", "seed"):
        value = body.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise ProxyError(400, f"'{name}' must be an integer", "invalid_request", name)
    for name, high in (("temperature", 2.0), ("top_p", 1.0)):
        value = body.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= high:
            raise ProxyError(
                400, f"'{name}' must be a number from 0 to {high:g}", "invalid_request", name
            )


class LocalModel:
    """A lazily loaded local chat model."""

    def __init__(self, model_id: str, device: str = "auto", max_tokens: int = 256) -> None:
        self.model_id = model_id
        self.device = device
        self.max_tokens = max_tokens
        self._model: Any = None
        self._tokenizer: Any = None
        self._load_lock = threading.Lock()
        self._gen_lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def load(self) -> None:
        with self._load_lock:
            if self._model is None:
                from ctxzip.models import load_causal_lm

                self._model, self._tokenizer = load_causal_lm(self.model_id, device=self.device)

    @property
    def model(self) -> Any:
        """The loaded model (soft-token methods read with these weights); call `load` first."""
        return self._model

    @property
    def tokenizer(self) -> Any:
        return self._tokenizer

    def _inputs(self, messages: list[dict[str, str]], soft: Any = None) -> Any:
        if soft is None:
            return self._tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
            ).to(self._model.device)
        from ctxzip.compressors.xrag.inject import chat_prompt_messages, prepare

        prompt = chat_prompt_messages(self._tokenizer, messages)
        embeds, mask = prepare(self._model, self._tokenizer, [prompt], [soft])
        return {"inputs_embeds": embeds, "attention_mask": mask}

    def _generate(self, body: dict[str, Any], protocol: str, streamer: Any = None,
                  stop: threading.Event | None = None,
                  soft: Any = None) -> tuple[str, int, int, str]:  # fmt: skip
        """(text, prompt tokens, completion tokens, finish) for one request.

        `soft`: vectors for the ``<xRAG>`` placeholders in the messages (xrag), in order.
        """
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList

        self.load()
        limit = body.get("max_completion_tokens") or body.get("max_tokens") or self.max_tokens
        limit = max(1, min(int(limit), self.max_tokens))
        # greedy unless asked otherwise: the same prompt gives the same answer, streamed or not
        temperature = float(body.get("temperature") or 0.0)
        inputs = self._inputs(chat_messages(body, protocol), soft)

        class Stop(StoppingCriteria):
            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> bool:
                return bool(stop is not None and stop.is_set())

        kwargs: dict[str, Any] = {
            "max_new_tokens": limit,
            "do_sample": temperature > 0,
            "pad_token_id": self._tokenizer.pad_token_id,
            "stopping_criteria": StoppingCriteriaList([Stop()]),
        }
        if temperature > 0:
            kwargs["temperature"] = temperature
            if body.get("top_p") is not None:
                kwargs["top_p"] = float(body["top_p"])
        seed = body.get("seed")
        with self._gen_lock, torch.inference_mode():
            if temperature > 0 and isinstance(seed, int) and not isinstance(seed, bool):
                torch.manual_seed(seed)  # under the lock: one generation owns the RNG
            output = self._model.generate(**inputs, streamer=streamer, **kwargs)
        prompt = inputs["attention_mask"].shape[1]
        # from embeddings alone, generate returns only the new tokens
        new = output[0, prompt:] if "input_ids" in inputs else output[0]
        text = self._tokenizer.decode(new, skip_special_tokens=True)
        finish = "length" if len(new) >= limit else "stop"
        return text, int(prompt), len(new), finish

    async def complete(self, body: dict[str, Any], protocol: str,
                       soft: Any = None) -> dict[str, Any]:  # fmt: skip
        try:
            text, prompt, completion, finish = await asyncio.to_thread(
                self._generate, body, protocol, None, None, soft
            )
        except Exception as exc:
            raise ProxyError(
                500, f"local model failed: {type(exc).__name__}", "local_model"
            ) from exc
        model = str(body.get("model") or self.model_id)
        if protocol == "anthropic":
            return {
                "id": f"msg_{uuid.uuid4().hex[:24]}", "type": "message", "role": "assistant",
                "model": model, "content": [{"type": "text", "text": text}],
                "stop_reason": "max_tokens" if finish == "length" else "end_turn",
                "stop_sequence": None,
                "usage": {"input_tokens": prompt, "output_tokens": completion},
            }  # fmt: skip
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "object": "chat.completion",
            "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": finish, "logprobs": None}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                      "total_tokens": prompt + completion},
        }  # fmt: skip

    async def stream(self, body: dict[str, Any], protocol: str,
                     soft: Any = None) -> AsyncGenerator[bytes, None]:  # fmt: skip
        """Server-sent events in the caller's protocol, one per generated piece."""
        from transformers import TextStreamer

        await asyncio.to_thread(self.load)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        stop = threading.Event()

        def put(kind: str, value: Any) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, (kind, value))

        class Streamer(TextStreamer):
            # called on the generating thread, in order, the final flush included, so every
            # piece is queued before "done" (a separate reader thread could lose the tail)
            def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
                if text:
                    put("piece", text)

        streamer = Streamer(self._tokenizer, skip_prompt=True, skip_special_tokens=True)

        def run() -> None:
            try:
                put("done", self._generate(body, protocol, streamer, stop, soft))
            except Exception as exc:
                put("error", exc)

        threading.Thread(target=run, daemon=True).start()
        fmt = (
            _AnthropicEvents(body, self.model_id)
            if protocol == "anthropic"
            else _OpenAIEvents(body, self.model_id)
        )
        try:
            yield fmt.start()
            while True:
                kind, value = await queue.get()
                if kind == "piece":
                    yield fmt.delta(value)
                elif kind == "error":
                    yield fmt.error(f"local model failed: {type(value).__name__}")
                    return
                else:
                    _, prompt, completion, finish = value
                    yield fmt.end(prompt, completion, finish)
                    return
        finally:
            stop.set()  # client gone or done: stop generating


def _sse(data: Any, event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data)}\n\n".encode()


class _OpenAIEvents:
    def __init__(self, body: dict[str, Any], default_model: str) -> None:
        self.id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        self.model = str(body.get("model") or default_model)
        self.created = int(time.time())
        options = body.get("stream_options")
        self.usage = isinstance(options, dict) and bool(options.get("include_usage"))

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        chunk: dict[str, Any] = {
            "id": self.id, "object": "chat.completion.chunk", "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
        }  # fmt: skip
        if self.usage:
            chunk["usage"] = None
        return _sse(chunk)

    def start(self) -> bytes:
        return self._chunk({"role": "assistant", "content": ""})

    def delta(self, text: str) -> bytes:
        return self._chunk({"content": text})

    def end(self, prompt: int, completion: int, finish: str) -> bytes:
        out = self._chunk({}, finish)
        if self.usage:
            out += _sse({
                "id": self.id, "object": "chat.completion.chunk", "created": self.created,
                "model": self.model, "choices": [],
                "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                          "total_tokens": prompt + completion},
            })  # fmt: skip
        return out + b"data: [DONE]\n\n"

    def error(self, message: str) -> bytes:
        return _sse({"error": {"message": message, "type": "api_error", "code": "local_model"}})


class _AnthropicEvents:
    def __init__(self, body: dict[str, Any], default_model: str) -> None:
        self.id = f"msg_{uuid.uuid4().hex[:24]}"
        self.model = str(body.get("model") or default_model)

    def start(self) -> bytes:
        message: dict[str, Any] = {
            "id": self.id, "type": "message", "role": "assistant", "model": self.model,
            "content": [], "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }  # fmt: skip
        return _sse({"type": "message_start", "message": message}, "message_start") + _sse(
            {"type": "content_block_start", "index": 0,
             "content_block": {"type": "text", "text": ""}},
            "content_block_start",
        )  # fmt: skip

    def delta(self, text: str) -> bytes:
        return _sse(
            {"type": "content_block_delta", "index": 0,
             "delta": {"type": "text_delta", "text": text}},
            "content_block_delta",
        )  # fmt: skip

    def end(self, prompt: int, completion: int, finish: str) -> bytes:
        stop = "max_tokens" if finish == "length" else "end_turn"
        return (
            _sse({"type": "content_block_stop", "index": 0}, "content_block_stop")
            + _sse({"type": "message_delta",
                    "delta": {"stop_reason": stop, "stop_sequence": None},
                    "usage": {"input_tokens": prompt, "output_tokens": completion}},
                   "message_delta")
            + _sse({"type": "message_stop"}, "message_stop")
        )  # fmt: skip

    def error(self, message: str) -> bytes:
        return _sse({"type": "error", "error": {"type": "api_error", "message": message}}, "error")
