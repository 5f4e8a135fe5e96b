"""Tool-result compression for the proxy: policy, the `content` compressor, the originals.

Runs before message compression on every chat, messages and responses request. Fails
open: an error or a timeout forwards the results as they were, counted by reason. What
each result lost is stored by marker key in the originals store, served at
``GET /v1/ctxzip/originals/{key}``.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from ctxzip.compressor import Compressor
from ctxzip.middleware.agent_items import AgentProtocol, tool_slots
from ctxzip.middleware.originals import OriginalsStore
from ctxzip.middleware.tool_results import ToolPlan, plan_tool_results
from ctxzip.proxy.config import ToolResultsConfig
from ctxzip.registry import get_compressor
from ctxzip.result import CompressionRequest
from ctxzip.tokens import get_tokenizer

log = logging.getLogger("ctxzip.proxy")


@dataclass
class ToolOutcome:
    """What happened to one request's tool results."""

    body: dict[str, Any] | None  # None: nothing changed
    status: str  # applied | unchanged | disabled | skipped | none
    tokens_in: int = 0
    tokens_out: int = 0
    by_type: dict[str, list[int]] = field(default_factory=dict)  # type -> [in, out]
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> results
    seconds: float = 0.0
    reason: str | None = None

    def skip(self, reason: str, n: int = 1) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + n

    def headers(self) -> list[tuple[bytes, bytes]]:
        """``x-ctxzip-tool-*`` response headers (none when the request had no results)."""
        if self.status == "none":
            return []
        status = self.status + (f"; reason={self.reason}" if self.reason else "")
        out = [(b"x-ctxzip-tool-results", status.encode())]
        if self.by_type:
            out += [
                (b"x-ctxzip-tool-tokens-in", str(self.tokens_in).encode()),
                (b"x-ctxzip-tool-tokens-out", str(self.tokens_out).encode()),
                (b"x-ctxzip-tool-tokens-saved", ",".join(
                    f"{k}={v[0] - v[1]}" for k, v in sorted(self.by_type.items())).encode()),
            ]  # fmt: skip
        if self.skipped:
            text = ",".join(f"{k}={v}" for k, v in sorted(self.skipped.items()))
            out.append((b"x-ctxzip-tool-results-skipped", text.encode()))
        return out


_Done = tuple[str, dict[str, Any], int]  # (text, context info, tokens out)


class ToolResultService:
    """Owns the content compressor, its result cache and the originals store."""

    def __init__(self, config: ToolResultsConfig, *, tokenizer: str, text_method: str,
                 text_options: dict[str, Any]) -> None:  # fmt: skip
        self.config = config
        self.policy = config.policy()
        self.tokenizer_name = tokenizer
        prose = config.prose_method or text_method
        self.prose_options = text_options if prose == text_method else {}
        self.prose_method = prose
        self.store = OriginalsStore(config.store_path, config.store_ttl_s, config.store_max_bytes)
        self._compressor: Compressor | None = None
        self._tokenizer = get_tokenizer(tokenizer)
        self._cache: OrderedDict[str, _Done] = OrderedDict()

    def compressor(self) -> Compressor:
        if self._compressor is None:
            self._compressor = get_compressor(
                "content", tokenizer=self.tokenizer_name, prose_method=self.prose_method,
                prose_options=self.prose_options,
            )  # fmt: skip
        return self._compressor

    def _key(self, request: CompressionRequest) -> str:
        h = hashlib.sha256()
        for part in (str(request.budget), request.query or "", *request.contexts):
            h.update(part.encode("utf-8", "surrogatepass") + b"\x00")
        return h.hexdigest()

    def _run(self, requests: list[CompressionRequest]) -> list[_Done]:
        results = self.compressor().compress_batch(requests)
        out = []
        for result in results:
            info = result.extra["contexts"][0]
            out.append((result.texts[0], info, result.tokens_out))
        return out

    def _keep_originals(self, done: list[_Done]) -> None:
        originals: dict[str, str] = {}
        for _, info, _ in done:
            originals.update(info.get("originals") or {})
        self.store.put(originals)

    async def apply(self, data: dict[str, Any], protocol: AgentProtocol,
                    disabled: bool) -> ToolOutcome:  # fmt: skip
        """Compress the tool results of `data` (fail-open; never raises for content)."""
        start = time.perf_counter()
        slots = tool_slots(data, protocol)
        if not slots:
            return ToolOutcome(None, "none")
        if disabled or not self.policy.enabled:
            n = len(slots)
            return ToolOutcome(
                None, "disabled" if n else "none", skipped={"disabled": n} if n else {}
            )
        plan = await asyncio.to_thread(
            plan_tool_results, data, protocol, self.policy, self._tokenizer.count
        )
        outcome = ToolOutcome(None, "unchanged", skipped=dict(plan.skipped))
        if not plan.units:
            if not plan.skipped:
                outcome.status = "none"
            return outcome
        try:
            done = await asyncio.wait_for(self._compress(plan), self.config.timeout_s)
        except TimeoutError:
            outcome.status, outcome.reason = "skipped", "compression_timeout"
            outcome.skip("compression_timeout", len(plan.units))
            return outcome
        except Exception as exc:  # fail open: the results go as they were
            log.warning("tool-result compression failed: %s: %s", type(exc).__name__, exc)
            outcome.status, outcome.reason = "skipped", "compression_error"
            outcome.skip("compression_error", len(plan.units))
            return outcome
        texts = []
        for unit, (text, info, tokens_out) in zip(plan.units, done, strict=True):
            if info.get("omitted", 0) > 0 and text != unit.slot.text:
                texts.append(text)
                pair = outcome.by_type.setdefault(str(info["content_type"]), [0, 0])
                pair[0] += unit.tokens
                pair[1] += tokens_out
                outcome.tokens_in += unit.tokens
                outcome.tokens_out += tokens_out
            else:
                texts.append(unit.slot.text)
                outcome.skip(str(info.get("reason") or "no_gain"))
        if outcome.by_type:
            outcome.body = plan.apply(texts)
            outcome.status = "applied"
        outcome.seconds = time.perf_counter() - start
        return outcome

    async def _compress(self, plan: ToolPlan) -> list[_Done]:
        requests = plan.requests()
        keys = [self._key(r) for r in requests]
        done: list[_Done | None] = [self._cache.get(k) for k in keys]
        missing = [i for i, d in enumerate(done) if d is None]
        if missing:
            fresh = await asyncio.to_thread(self._run, [requests[i] for i in missing])
            for i, item in zip(missing, fresh, strict=True):
                done[i] = item
                self._remember(keys[i], item)
        for k in keys:
            if k in self._cache:
                self._cache.move_to_end(k)
        final = [d for d in done if d is not None]
        await asyncio.to_thread(self._keep_originals, final)  # refreshed on every use
        return final

    def _remember(self, key: str, item: _Done) -> None:
        if self.config.cache_size <= 0:
            return
        self._cache[key] = item
        while len(self._cache) > self.config.cache_size:
            self._cache.popitem(last=False)

    def close(self) -> None:
        self.store.close()
