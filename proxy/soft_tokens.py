"""xrag for the embedded local upstream: context documents become soft tokens.

A black-box upstream takes text only, so there the xrag method is refused (it fails open
through `CompressionService`). The embedded local model is white-box: for a request it
will answer, the messages' compressible regions (the same `MessagePolicy` the text
methods use) are embedded, projected and replaced by ``<xRAG>`` placeholders; the local
model then generates from input embeddings with the projected vectors at those slots.
The client sends ordinary messages and never sees a placeholder.

`SoftTokens.compress` has `CompressionService.compress`'s shape and failure type, so the
route handler treats both alike (fail-open or fail-closed, metrics, headers). Soft tokens
count as tokens out. There is no result cache (the vectors are cheap to recompute and
the local model, not the compressor, is the slow part) and no cross-request batching
(the local model generates one request at a time).
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from ctxzip.compressors.xrag.inject import PLACEHOLDER
from ctxzip.errors import CtxzipError
from ctxzip.middleware.messages import MessagePolicy, Protocol, plan_request
from ctxzip.proxy.compression import CompressionFailed, Outcome
from ctxzip.proxy.local_upstream import LocalModel, chat_messages

SOFT_METHODS = ("xrag",)


class SoftTokens:
    """Turns a request's context into soft tokens for the local model (xrag)."""

    def __init__(self, local: LocalModel, policy: MessagePolicy, *, method: str,
                 options: dict[str, Any], timeout_s: float) -> None:  # fmt: skip
        self.local = local
        self.policy = policy
        self.options = dict(options) if method in SOFT_METHODS else {}
        self.timeout_s = timeout_s
        self._compressor: Any = None
        self._lock = threading.Lock()

    @staticmethod
    def handles(method: str) -> bool:
        return method in SOFT_METHODS

    def compressor(self) -> Any:
        """The xrag compressor reading with the local model's own weights (loaded once)."""
        with self._lock:
            if self._compressor is None:
                from ctxzip.compressors.xrag.compressor import XragCompressor

                self.local.load()
                options = {"device": self.local.device, **self.options}
                compressor = XragCompressor(lm=self.local.model_id, **options)
                compressor.use_lm(self.local.model, self.local.tokenizer)
                compressor.projector()  # a missing or mismatched pair fails here
                self._compressor = compressor
            return self._compressor

    def warm(self) -> None:
        self.compressor().compress(["ctxzip warm-up."], query="warm-up", budget=None)

    def _run(self, body: dict[str, Any], protocol: Protocol, rate: float | None) -> Outcome:
        import torch

        start = time.perf_counter()
        compressor = self.compressor()
        if any(PLACEHOLDER in m["content"] for m in chat_messages(body, protocol)):
            raise CompressionFailed(
                "compression_error", f"the request already contains {PLACEHOLDER!r}"
            )
        plan = plan_request(body, protocol, self.policy, compressor.tokenizer.count, rate=rate)
        requests = plan.requests()
        if not requests:
            return Outcome(None, "unchanged", "xrag", plan.tokens_in, plan.tokens_in,
                           time.perf_counter() - start, reason="nothing to compress")  # fmt: skip
        results = compressor.compress_batch(requests)
        out_body = plan.apply([list(r.texts) for r in results])
        from ctxzip.compressors.xrag.compressor import soft_tokens

        soft = torch.cat([soft_tokens(r) for r in results])  # placeholder order: message order
        n_soft = int(soft.shape[0])
        active = sum(u.tokens for u in plan.active)
        return Outcome(out_body, "applied", "xrag", plan.tokens_in,
                       plan.tokens_in - active + n_soft, time.perf_counter() - start,
                       extra={"messages": len(requests), "soft": soft})  # fmt: skip

    async def compress(self, body: dict[str, Any], protocol: Protocol, *,
                       method: str | None = None, rate: float | None = None,
                       large: bool = False) -> Outcome:  # fmt: skip
        """Like `CompressionService.compress`; ``outcome.extra["soft"]`` holds the vectors."""
        try:
            return await asyncio.wait_for(
                asyncio.to_thread(self._run, body, protocol, rate), self.timeout_s
            )
        except CompressionFailed:
            raise
        except TimeoutError:
            raise CompressionFailed(
                "compression_timeout", f"compression took over {self.timeout_s:g}s"
            ) from None
        except (CtxzipError, ValueError, RuntimeError) as exc:
            raise CompressionFailed("compression_error", f"{type(exc).__name__}: {exc}") from exc
