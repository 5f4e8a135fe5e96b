"""LangChain drop-ins: a document compressor, an LCEL runnable and local embeddings.

`CtxzipDocumentCompressor` runs any registered ctxzip method by name inside
`ContextualCompressionRetriever` (or a `DocumentCompressorPipeline`): the budget is
met across all retrieved documents together, metadata is kept, per-document stats
land under ``metadata["ctxzip"]`` and documents that end up empty are dropped.
`compression_runnable` compresses a prompt string or the allowed parts of a chat
message list (`ctxzip.middleware.messages.MessagePolicy`) in LCEL chains.
`CtxzipEmbeddings` serves the packaged local encoders (with their shared cache) to
any LangChain vector store. Only `langchain_core` is imported.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from langchain_core.callbacks import Callbacks
from langchain_core.documents import BaseDocumentCompressor, Document
from langchain_core.embeddings import Embeddings
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.prompt_values import PromptValue
from langchain_core.runnables import Runnable, RunnableLambda
from pydantic import ConfigDict, Field, PrivateAttr, model_validator

from ctxzip.budget import Budget
from ctxzip.compressor import Compressor
from ctxzip.encoder import DEFAULT_ENCODER, get_encoder
from ctxzip.middleware.messages import MessagePolicy, plan_request
from ctxzip.registry import get_compressor
from ctxzip.result import CompressionResult
from ctxzip.tokens import DEFAULT_TOKENIZER, get_tokenizer

log = logging.getLogger(__name__)

METADATA_KEY = "ctxzip"


def _budget(rate: float | None, target_tokens: int | None) -> Budget:
    if rate is None and target_tokens is None:
        return Budget(rate=0.5)
    return Budget(rate=rate, target_tokens=target_tokens)


class CtxzipDocumentCompressor(BaseDocumentCompressor):
    """Compress retrieved documents with a ctxzip method, budget shared across them.

    ``CtxzipDocumentCompressor(method="extractive", rate=0.3)``; `options` go to the
    method's constructor (e.g. ``{"mmr": 0.3}``); `compressor` takes a ready instance
    instead. With no query (empty string) methods run task-agnostic.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    method: str = "extractive"
    rate: float | None = None
    target_tokens: int | None = None
    tokenizer: str = DEFAULT_TOKENIZER
    options: dict[str, Any] = Field(default_factory=dict)
    compressor: Any = None
    _compressor: Compressor | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _check(self) -> CtxzipDocumentCompressor:
        _budget(self.rate, self.target_tokens)  # fail at construction, not at query time
        return self

    @property
    def budget(self) -> Budget:
        return _budget(self.rate, self.target_tokens)

    def get_compressor(self) -> Compressor:
        """The ctxzip compressor (built on first use, then reused)."""
        if self._compressor is None:
            if self.compressor is not None:
                self._compressor = self.compressor
            else:
                self._compressor = get_compressor(
                    self.method, tokenizer=self.tokenizer, **self.options
                )
        return self._compressor

    def compress_documents(
        self, documents: Sequence[Document], query: str, callbacks: Callbacks | None = None
    ) -> Sequence[Document]:
        docs = list(documents)
        if not docs:
            return []
        result = self.get_compressor().compress(
            [d.page_content for d in docs], query=query or None, budget=self.budget
        )
        return self._rebuild(docs, result)

    async def acompress_documents(
        self, documents: Sequence[Document], query: str, callbacks: Callbacks | None = None
    ) -> Sequence[Document]:
        docs = list(documents)
        if not docs:
            return []
        result = await self.get_compressor().acompress(
            [d.page_content for d in docs], query=query or None, budget=self.budget
        )
        return self._rebuild(docs, result)

    def _rebuild(self, docs: list[Document], result: CompressionResult) -> list[Document]:
        if result.reason:
            log.info("ctxzip %s: %s", result.method, result.reason)
        tok = _reader_tokenizer(self.get_compressor(), self.tokenizer)
        shared = {
            "method": result.method,
            "budget": str(result.budget),
            "requested_rate": round(result.requested_rate, 6),
            "request_tokens_in": result.tokens_in,
            "request_tokens_out": result.tokens_out,
            "request_rate": round(result.rate, 6),
            "seconds": round(result.seconds, 6),
            "tokenizer": result.tokenizer,
        }
        out: list[Document] = []
        for doc, text, kept in zip(docs, result.texts, result.kept, strict=True):
            if not text.strip():
                continue
            tokens_in = tok.count(doc.page_content)
            tokens_out = tok.count(text)
            stats = {
                **shared,
                "tokens_in": tokens_in,
                "tokens_out": tokens_out,
                "rate": round(tokens_out / tokens_in, 6) if tokens_in else 1.0,
                "kept": [list(s) for s in kept],
            }
            out.append(
                Document(
                    page_content=text,
                    metadata={**doc.metadata, METADATA_KEY: stats},
                    id=doc.id,
                )
            )
        return out


def _reader_tokenizer(compressor: Compressor, fallback: str) -> Any:
    """The tokenizer the compressor counts with (a method's own, else `fallback`)."""
    tok = getattr(compressor, "tokenizer", None)
    return tok if hasattr(tok, "count") else get_tokenizer(fallback)


# --------------------------------------------------------------------------- runnable

_ROLES = {
    "human": "user",
    "ai": "assistant",
    "system": "system",
    "tool": "tool",
    "function": "function",
    "developer": "developer",
}


def _as_openai(message: BaseMessage) -> dict[str, Any]:
    """Just enough of an OpenAI message for the shared policy to judge it."""
    role = _ROLES.get(message.type, getattr(message, "role", message.type))
    out: dict[str, Any] = {"role": role, "content": message.content}
    if isinstance(message, AIMessage) and (message.tool_calls or message.invalid_tool_calls):
        out["tool_calls"] = message.tool_calls or message.invalid_tool_calls
    if message.additional_kwargs.get("function_call"):
        out["function_call"] = message.additional_kwargs["function_call"]
    return out


def _last_user(body: dict[str, Any]) -> int | None:
    users = [i for i, m in enumerate(body["messages"]) if m["role"] == "user"]
    return users[-1] if users else None


def _last_paragraph(text: str) -> str:
    paragraphs = [p.strip() for p in text.strip().split("\n\n") if p.strip()]
    return paragraphs[-1] if paragraphs else text


class _PromptCompression:
    """What the runnable does; sync and async share the planning."""

    def __init__(
        self, compressor: Compressor, budget: Budget, policy: MessagePolicy, query: str | None
    ) -> None:
        self.compressor = compressor
        self.budget = budget
        self.policy = policy
        self.query = query
        self.count = _reader_tokenizer(compressor, DEFAULT_TOKENIZER).count

    def invoke(self, value: Any) -> Any:
        if isinstance(value, str):
            if not value.strip():
                return value
            return self.compressor.compress(value, query=self.query, budget=self.budget).text
        messages, plan = self._plan(value)
        requests = plan.requests()
        if not requests:
            return messages
        results = self.compressor.compress_batch(requests)
        return self._apply(messages, plan, results)

    async def ainvoke(self, value: Any) -> Any:
        if isinstance(value, str):
            if not value.strip():
                return value
            result = await self.compressor.acompress(value, query=self.query, budget=self.budget)
            return result.text
        messages, plan = self._plan(value)
        requests = plan.requests()
        if not requests:
            return messages
        results = await asyncio.to_thread(self.compressor.compress_batch, requests)
        return self._apply(messages, plan, results)

    def _plan(self, value: Any) -> tuple[list[BaseMessage], Any]:
        if isinstance(value, PromptValue):
            value = value.to_messages()
        if not isinstance(value, Sequence) or not all(isinstance(m, BaseMessage) for m in value):
            raise TypeError(
                "ctxzip runnable takes a string, a PromptValue or a list of messages, "
                f"got {type(value).__name__}"
            )
        messages = list(value)
        body = {"messages": [_as_openai(m) for m in messages]}
        rate = self.budget.rate if self.budget.rate is not None else None
        plan = plan_request(body, "openai", self.policy, self.count, rate=rate)
        if self.query is not None:
            plan.query = self.query
        elif plan.query and any(u.index == _last_user(body) for u in plan.active):
            # the question sits in the very message being compressed (a RAG prompt
            # template): its last paragraph is the question, not the whole message
            plan.query = _last_paragraph(plan.query)
        for unit in plan.units:
            # one call, one prompt: every message is ranked by the final question (the
            # proxy's per-message prefix rule is about provider caches across turns)
            unit.query = plan.query
        if self.budget.target_tokens is not None:
            for unit in plan.units:  # an absolute budget is shared out by size
                if unit.tokens >= max(self.policy.min_tokens, 1):
                    unit.rate = min(1.0, self.budget.target_tokens / max(plan.tokens_in, 1))
        return messages, plan

    def _apply(
        self, messages: list[BaseMessage], plan: Any, results: list[CompressionResult]
    ) -> list[BaseMessage]:
        body = plan.apply([r.texts for r in results])
        out = list(messages)
        for unit, result in zip(plan.active, results, strict=True):
            i = unit.index
            stats = {
                "method": result.method,
                "tokens_in": result.tokens_in,
                "tokens_out": result.tokens_out,
                "reason": result.reason,
            }
            content = body["messages"][i]["content"]
            if not any(t.strip() for t in result.texts):
                # nothing kept (selective augmentation, tiny budget): a chat message is
                # not a retrieved document, and an empty turn breaks providers' APIs,
                # so the message stays as it was; the metadata says why
                content = messages[i].content
                stats["unchanged"] = True
            meta = {**messages[i].response_metadata, METADATA_KEY: stats}
            out[i] = messages[i].model_copy(update={"content": content, "response_metadata": meta})
        return out


def compression_runnable(
    method: str = "extractive",
    *,
    rate: float | None = None,
    target_tokens: int | None = None,
    query: str | None = None,
    policy: MessagePolicy | None = None,
    compressor: Compressor | None = None,
    tokenizer: str = DEFAULT_TOKENIZER,
    **options: Any,
) -> Runnable[Any, Any]:
    """An LCEL step: a string comes back compressed; a message list (or PromptValue)
    comes back with only the parts `policy` allows compressed (system prompts, tool
    calls and results never change). With messages, the last user turn is the query
    unless `query` is given. ``prompt | compression_runnable(rate=0.4) | llm``.
    """
    budget = _budget(rate, target_tokens)
    if budget.rate is not None and policy is None:
        policy = MessagePolicy(rate=budget.rate)
    policy = policy or MessagePolicy()
    comp = compressor or get_compressor(method, tokenizer=tokenizer, **options)
    step = _PromptCompression(comp, budget, policy, query)
    return RunnableLambda(step.invoke, afunc=step.ainvoke, name=f"ctxzip_{comp.name}")


# --------------------------------------------------------------------------- embeddings


class CtxzipEmbeddings(Embeddings):
    """LangChain `Embeddings` over a local sentence-transformers model.

    Uses the same process-wide encoder (and LRU cache) as the `extractive` method, so
    texts embedded for a vector store are not encoded again when compressed.
    """

    def __init__(
        self,
        model: str = DEFAULT_ENCODER,
        *,
        device: str = "auto",
        quantize: str = "none",
        batch_size: int = 64,
        cache_size: int = 100_000,
    ) -> None:
        self.model = model
        self.encoder = get_encoder(
            model, device=device, quantize=quantize, batch_size=batch_size, cache_size=cache_size
        )

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [list(map(float, v)) for v in self.encoder.encode(list(texts))]

    def embed_query(self, text: str) -> list[float]:
        return list(map(float, self.encoder.encode([text])[0]))

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        return await asyncio.to_thread(self.embed_documents, texts)

    async def aembed_query(self, text: str) -> list[float]:
        return await asyncio.to_thread(self.embed_query, text)


__all__ = [
    "METADATA_KEY",
    "CtxzipDocumentCompressor",
    "CtxzipEmbeddings",
    "compression_runnable",
]
