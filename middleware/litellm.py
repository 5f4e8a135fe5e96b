"""The LiteLLM plugin: compress inside a LiteLLM proxy, as a guardrail or a pre-call callback.

Teams that run the LiteLLM proxy register ctxzip there instead of adding a second HTTP
hop (docs/integrations.md has the ``config.yaml``)::

    guardrails:
      - guardrail_name: ctxzip
        litellm_params: {guardrail: ctxzip_litellm.Guardrail, mode: pre_call, default_on: true}
    litellm_settings:
      callbacks: ctxzip_litellm.callback      # or, instead: a pre-call callback

with ``ctxzip_litellm.py`` beside it holding ``from ctxzip.middleware.litellm import *``.
Both run the same `Compression`: tool results under the tool-result policy (the
``content`` compressor), then message text under the message policy, for chat
completions, Anthropic messages, Responses and Gemini ``generateContent`` call types.

What never changes: system prompts, tool definitions and calls, thinking and signed
parts, everything at or before the last ``cache_control`` marker (the frozen prefix the
provider caches), and every request that carries ``x-ctxzip-disable: true`` (header) or
``"ctxzip": {"disable": true}`` in its metadata. Compression fails open: on any error
the request goes on as it came, and the reason is logged and put in the request's
metadata under ``ctxzip``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from litellm.integrations.custom_guardrail import CustomGuardrail
from litellm.integrations.custom_logger import CustomLogger
from litellm.types.guardrails import GuardrailEventHooks

from ctxzip.compressor import Compressor
from ctxzip.middleware.agent_items import AgentProtocol
from ctxzip.middleware.messages import MessagePolicy, compress_messages
from ctxzip.middleware.originals import OriginalsStore
from ctxzip.middleware.tool_results import ToolResultPolicy, compress_tool_results
from ctxzip.registry import get_compressor
from ctxzip.tokens import DEFAULT_TOKENIZER, get_tokenizer

log = logging.getLogger("ctxzip.litellm")

# LiteLLM call type -> the body format, and the key holding its conversation
CALL_TYPES: dict[str, tuple[AgentProtocol, str]] = {
    "completion": ("openai", "messages"), "acompletion": ("openai", "messages"),
    "anthropic_messages": ("anthropic", "messages"),
    "responses": ("responses", "input"), "aresponses": ("responses", "input"),
    "generate_content": ("gemini", "contents"), "agenerate_content": ("gemini", "contents"),
    "generate_content_stream": ("gemini", "contents"),
    "agenerate_content_stream": ("gemini", "contents"),
}  # fmt: skip
_TRUE = {"1", "true", "yes", "on"}


def _marked(value: Any) -> bool:
    """Whether a message/item (or a block inside it) carries ``cache_control``."""
    if isinstance(value, dict):
        return value.get("cache_control") is not None or any(
            _marked(v) for k, v in value.items() if k in ("content", "parts")
        )
    return isinstance(value, list) and any(_marked(v) for v in value)


def frozen_prefix(items: list[Any]) -> int:
    """How many leading items stay exactly as sent: up to the last ``cache_control`` mark."""
    marked = [i for i, item in enumerate(items) if _marked(item)]
    return marked[-1] + 1 if marked else 0


def bypassed(data: Mapping[str, Any]) -> bool:
    """The per-request bypass: the ``x-ctxzip-disable`` header or metadata flag."""
    request = data.get("proxy_server_request")
    headers = request.get("headers") if isinstance(request, dict) else None
    if isinstance(headers, dict):
        for key, value in headers.items():
            if str(key).lower() == "x-ctxzip-disable" and str(value).strip().lower() in _TRUE:
                return True
    for holder in (data.get("metadata"), data.get("litellm_metadata")):
        flags = holder.get("ctxzip") if isinstance(holder, dict) else None
        if isinstance(flags, dict) and flags.get("disable") is True:
            return True
    return False


class Compression:
    """Compresses one LiteLLM request body in place of its conversation (in process)."""

    def __init__(self, *, method: str = "truncate", options: Mapping[str, Any] | None = None,
                 message_policy: MessagePolicy | None = None,
                 tool_policy: ToolResultPolicy | None = None,
                 tokenizer: str = DEFAULT_TOKENIZER, prose_method: str = "none",
                 store: OriginalsStore | None = None) -> None:  # fmt: skip
        self.method = method
        self.options = dict(options or {})
        self.message_policy = message_policy or MessagePolicy()
        self.tool_policy = tool_policy or ToolResultPolicy()
        self.tokenizer = tokenizer
        self.prose_method = prose_method
        self.store = store if store is not None else OriginalsStore()
        self.count = get_tokenizer(tokenizer).count
        self._text: Compressor | None = None
        self._content: Compressor | None = None

    def _compressors(self) -> tuple[Compressor, Compressor]:
        if self._text is None or self._content is None:
            self._text = get_compressor(self.method, tokenizer=self.tokenizer, **self.options)
            self._content = get_compressor("content", tokenizer=self.tokenizer,
                                           prose_method=self.prose_method)  # fmt: skip
        return self._text, self._content

    def apply(self, data: dict[str, Any], call_type: str) -> dict[str, Any]:
        """`data` with its conversation compressed (a new list; `data` is updated and
        returned). Never raises: failures leave the request as it came, with the reason
        in ``data["metadata"]["ctxzip"]``."""
        start = time.perf_counter()
        report: dict[str, Any] = {"status": "unchanged"}
        try:
            found = CALL_TYPES.get(call_type)
            items = data.get(found[1]) if found else None
            if found is None or not isinstance(items, list):
                report = {"status": "skipped", "reason": f"call_type:{call_type}"}
            elif bypassed(data):
                report = {"status": "disabled", "reason": "bypass"}
            else:
                protocol, key = found
                report = self._compress(data, protocol, key, items)
        except Exception as exc:  # fail open: the request goes on as it came
            report = {"status": "skipped", "reason": f"error:{type(exc).__name__}"}
            log.warning("ctxzip compression skipped (%s): %s", report["reason"], exc)
        report["ms"] = round((time.perf_counter() - start) * 1000, 2)
        metadata = data.get("metadata")
        if isinstance(metadata, dict):
            metadata["ctxzip"] = {**(metadata.get("ctxzip") or {}), **report}
        log.info("ctxzip %s: %s", call_type, report)
        return data

    def _compress(self, data: dict[str, Any], protocol: AgentProtocol, key: str,
                  items: list[Any]) -> dict[str, Any]:  # fmt: skip
        text, content = self._compressors()
        frozen = frozen_prefix(items)
        view: dict[str, Any] = {key: items}
        view, originals, plan = compress_tool_results(view, protocol, content,
                                                      self.tool_policy, self.count)  # fmt: skip
        self.store.put(originals)
        view, results = compress_messages(view, text, protocol, self.message_policy)
        new = list(items[:frozen]) + list(view[key][frozen:])
        tool_tokens = plan.tokens_in
        message_in = sum(r.tokens_in for r in results)
        message_out = sum(r.tokens_out for r in results)
        if new == items:
            return {"status": "unchanged", "frozen": frozen, "skipped": plan.skipped}
        data[key] = new
        return {"status": "applied", "frozen": frozen, "tool_tokens_in": tool_tokens,
                "message_tokens_in": message_in, "message_tokens_out": message_out,
                "omitted_keys": len(originals)}  # fmt: skip


def _compression(kwargs: dict[str, Any]) -> Compression:
    """A `Compression` from constructor keywords; plain numbers (``rate``, ``min_tokens``,
    ``tool_rate``, ``tool_min_tokens``) may come from a guardrail's ``litellm_params``."""
    settings = {k: kwargs.pop(k) for k in list(kwargs) if k in (
        "method", "options", "message_policy", "tool_policy", "tokenizer", "prose_method",
        "store")}  # fmt: skip
    message = {k: kwargs.pop(k) for k in ("rate", "min_tokens") if k in kwargs}
    tool = {k[5:]: kwargs.pop(k) for k in ("tool_rate", "tool_min_tokens") if k in kwargs}
    if message:
        settings["message_policy"] = MessagePolicy(**message)
    if tool:
        settings["tool_policy"] = ToolResultPolicy(**tool)
    return Compression(**settings)


class _Compressing:
    """Takes ctxzip's settings out of the constructor keywords; LiteLLM gets the rest."""

    def __init__(self, **kwargs: Any) -> None:
        self.compression = _compression(kwargs)
        super().__init__(**kwargs)


class Guardrail(_Compressing, CustomGuardrail):
    """ctxzip as a LiteLLM guardrail (``mode: pre_call``): modifies the request, never blocks."""

    async def async_pre_call_hook(self, user_api_key_dict: Any, cache: Any, data: dict[str, Any],
                                  call_type: str) -> dict[str, Any]:  # fmt: skip
        """LiteLLM calls this before the provider call; the returned body is what is sent."""
        if not self.should_run_guardrail(data=data, event_type=GuardrailEventHooks.pre_call):
            return data
        return self.compression.apply(data, str(call_type))


class Callback(_Compressing, CustomLogger):
    """ctxzip as a LiteLLM pre-call callback (``litellm_settings.callbacks``)."""

    async def async_pre_call_hook(self, user_api_key_dict: Any, cache: Any, data: dict[str, Any],
                                  call_type: str) -> dict[str, Any]:  # fmt: skip
        """LiteLLM calls this before the provider call; the returned body is what is sent."""
        return self.compression.apply(data, str(call_type))


callback = Callback()
"""A ready callback instance for ``litellm_settings.callbacks: <module>.callback``."""

__all__ = ["CALL_TYPES", "Callback", "Compression", "Guardrail", "callback", "frozen_prefix"]
