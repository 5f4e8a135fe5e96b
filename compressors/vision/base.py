"""The vision side of the one compressor interface.

Text compressors (`ctxzip.compressor.BaseCompressor`) count tokens in a reader's tokenizer and
return kept character spans; images have neither. A vision compressor has the same methods
(`compress(images, query, budget)`, `acompress`, `compress_batch`) and the same accounting
(tokens in/out, requested and achieved rate, seconds, method, budget, reason), where a token is
one vision-encoder token (CLS included: it is kept and counts against the budget). Instead of
texts it returns the reduced token tensor, each token's size (patches it stands for) and the map
from original tokens to output tokens.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from ctxzip.budget import Budget
from ctxzip.compressors.vision.backbone import converted_folder, preprocess
from ctxzip.compressors.vision.tokens import TokenState
from ctxzip.errors import InputError
from ctxzip.models import pick_device, pick_dtype
from ctxzip.result import Accounting

VISION_TOKENIZER = "vision-patches"
"""The `tokenizer` a vision result reports: counts are encoder tokens, not text tokens."""


@dataclass(frozen=True)
class VisionRequest:
    """One call's images (PIL images, HxWx3 arrays, or a `[B, 3, H, W]` pixel tensor)."""

    images: Any
    query: str | None = None
    budget: Budget = field(default_factory=lambda: Budget(rate=0.25))

    @classmethod
    def of(
        cls, images: Any, query: str | None = None, budget: Budget | None = None
    ) -> VisionRequest:
        if images is None or (isinstance(images, (list, tuple)) and not images):
            raise InputError("no images to compress")
        if isinstance(images, torch.Tensor) and (images.ndim != 4 or images.shape[1] != 3):
            raise InputError(f"pixel tensors must be [B, 3, H, W], got {tuple(images.shape)}")
        if query is not None and not isinstance(query, str):
            raise InputError(f"query must be a string, got {type(query).__name__}")
        if budget is not None and not isinstance(budget, Budget):
            raise InputError(f"budget must be a Budget, got {type(budget).__name__}")
        return cls(images, query, budget or Budget(rate=0.25))


@dataclass
class VisionCompressionResult(Accounting):
    """Reduced vision tokens plus the accounting every ctxzip result carries."""

    tokens: torch.Tensor  # [B, K, C]
    sizes: torch.Tensor  # [B, K]: original tokens each output token stands for
    source: torch.Tensor  # [B, N]: output index of each original token (-1: dropped)
    tokens_in: int
    tokens_out: int
    requested_rate: float
    seconds: float
    method: str
    budget: Budget
    tokenizer: str = VISION_TOKENIZER
    reason: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def kept(self) -> list[list[int]]:
        """Per image, the output token index of each original token (the text results' `kept`)."""
        return [row.tolist() for row in self.source.cpu()]

    def to_dict(self) -> dict[str, Any]:
        return self.stats(shape=list(self.tokens.shape))


class VisionCompressor:
    """Shared plumbing: input checks, preprocessing, batching, timing, accounting.

    Subclasses set `name` and implement `_reduce(pixels, request)` for one batch of
    preprocessed pixels, returning the final `TokenState` (and optionally a reason).
    Model work runs under a per-instance lock: hooks keep per-forward state on the model.
    """

    name: ClassVar[str] = "vision-base"
    kind: ClassVar[str] = "vision"

    def __init__(
        self,
        model: Any = None,
        *,
        device: str = "auto",
        dtype: str = "auto",
        attn_implementation: str = "sdpa",
        image_size: int = 224,
        batch_size: int = 8,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if model is None:
            from transformers import Dinov2Model

            dev = pick_device(device)
            # a private instance: hooks installed on it never touch anyone else's model
            model = Dinov2Model.from_pretrained(
                str(converted_folder()),
                dtype=pick_dtype(dtype, dev),
                attn_implementation=attn_implementation,
            )
            model = model.to(dev).eval()
        self.model = model
        self.image_size = image_size
        self.batch_size = batch_size
        self._lock = threading.Lock()

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def compress(
        self, images: Any, query: str | None = None, budget: Budget | None = None
    ) -> VisionCompressionResult:
        """Encode `images` and keep about `budget` of each image's tokens."""
        return self.compress_batch([VisionRequest.of(images, query, budget)])[0]

    async def acompress(
        self, images: Any, query: str | None = None, budget: Budget | None = None
    ) -> VisionCompressionResult:
        request = VisionRequest.of(images, query, budget)
        return (await asyncio.to_thread(self.compress_batch, [request]))[0]

    def compress_batch(self, requests: Sequence[VisionRequest]) -> list[VisionCompressionResult]:
        """Many requests, in model batches of `batch_size`: requests that share a budget, a
        query and an image size go through the encoder together (`seconds` is a request's own
        preprocessing plus the wall time of the group that carried it)."""
        requests = [r if isinstance(r, VisionRequest) else VisionRequest.of(*r) for r in requests]
        pixels, prep = [], []
        for request in requests:
            start = time.perf_counter()
            pixels.append(self.pixels(request.images))
            prep.append(time.perf_counter() - start)
        groups: dict[tuple[Any, ...], list[int]] = {}
        for i, (request, p) in enumerate(zip(requests, pixels, strict=True)):
            groups.setdefault((request.budget, request.query, tuple(p.shape[1:])), []).append(i)
        results: list[VisionCompressionResult | None] = [None] * len(requests)
        for members in groups.values():
            start = time.perf_counter()
            state, reason = self._encode(
                torch.cat([pixels[i] for i in members]), requests[members[0]]
            )
            seconds = time.perf_counter() - start
            offset = 0
            for i in members:
                n = pixels[i].shape[0]
                part = TokenState(
                    state.tokens[offset : offset + n],
                    state.sizes[offset : offset + n],
                    state.source[offset : offset + n],
                )
                results[i] = self._result(part, requests[i], prep[i] + seconds, reason)
                offset += n
        return [r for r in results if r is not None]

    def pixels(self, images: Any) -> torch.Tensor:
        if isinstance(images, torch.Tensor):
            return images.to(device=self.device, dtype=self.dtype)
        try:
            return preprocess(images, self.image_size, device=str(self.device), dtype=self.dtype)
        except (TypeError, ValueError, OSError) as exc:
            raise InputError(f"cannot read images: {exc}") from exc

    def _encode(
        self, pixels: torch.Tensor, request: VisionRequest
    ) -> tuple[TokenState, str | None]:
        states, reasons = [], []
        with self._lock, torch.inference_mode():
            for i in range(0, pixels.shape[0], self.batch_size):
                state, reason = self._reduce(pixels[i : i + self.batch_size], request)
                states.append(state)
                reasons.append(reason)
        merged = TokenState(
            torch.cat([s.tokens for s in states]),
            torch.cat([s.sizes for s in states]),
            torch.cat([s.source for s in states]),
        )
        return merged, next((r for r in reasons if r), None)

    def _result(
        self, state: TokenState, request: VisionRequest, seconds: float, reason: str | None
    ) -> VisionCompressionResult:
        n_images, n_tokens = state.tokens.shape[0], state.source.shape[1]
        return VisionCompressionResult(
            tokens=state.tokens,
            sizes=state.sizes,
            source=state.source,
            tokens_in=n_images * n_tokens,
            tokens_out=n_images * state.tokens.shape[1],
            requested_rate=request.budget.requested_rate(n_tokens),
            seconds=seconds,
            method=self.name,
            budget=request.budget,
            reason=reason,
            extra={"tokens_per_image_in": n_tokens, "tokens_per_image_out": state.tokens.shape[1]},
        )

    def _reduce(
        self, pixels: torch.Tensor, request: VisionRequest
    ) -> tuple[TokenState, str | None]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(device={self.device}, dtype={self.dtype})"
