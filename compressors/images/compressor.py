"""`image-budget`: images for API models, fitted into a vision-token budget.

Providers bill images by their own rules (`billing`), so the budget is counted in them. Images
over their share are downscaled (`mode="downscale"`), or first cropped to the salient region
found by the real saliency model (`mode="crop"`), then downscaled as needed (`fitting`).
The proxy applies the same arithmetic to the images inside API request bodies
(`ctxzip.proxy.images`).
"""

from __future__ import annotations

import asyncio
import binascii
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ctxzip.budget import Budget
from ctxzip.compressors.images.billing import PROVIDERS, Provider, image_tokens
from ctxzip.compressors.images.fitting import Fitted, Mode, as_mode, decode_image, fit_image
from ctxzip.errors import InputError
from ctxzip.result import Accounting


@dataclass
class ImageBudgetResult(Accounting):
    """Fitted images (PIL) plus the accounting every ctxzip result carries."""

    images: list[Any]
    fitted: list[Fitted]
    tokens_in: int
    tokens_out: int
    requested_rate: float
    seconds: float
    method: str
    budget: Budget
    tokenizer: str
    reason: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return self.stats(sizes=[[list(f.size_in), list(f.size_out)] for f in self.fitted])


class ImageBudgetCompressor:
    """Images in (PIL, arrays or encoded bytes), the same images fitted to a token budget out,
    counted in `provider`'s accounting (`model` picks the OpenAI rule)."""

    name: ClassVar[str] = "image-budget"
    kind: ClassVar[str] = "image"

    def __init__(
        self,
        provider: Provider = "openai",
        *,
        model: str | None = None,
        detail: str = "high",
        mode: Mode = "downscale",
        saliency: Callable[[Any], Any] | None = None,
    ) -> None:
        if provider not in PROVIDERS:
            raise ValueError(f"unknown provider {provider!r} (openai or anthropic)")
        self.provider: Provider = provider
        self.model = model
        self.detail = detail
        self.mode: Mode = as_mode(mode)
        self.saliency = saliency

    def compress(
        self, images: Any, query: str | None = None, budget: Budget | None = None
    ) -> ImageBudgetResult:
        """Fit `images` into `budget` (a rate of their current cost, or target tokens)."""
        start = time.perf_counter()
        budget = budget or Budget(rate=0.5)
        pil = [_as_pil(i) for i in (images if isinstance(images, (list, tuple)) else [images])]
        if not pil:
            raise InputError("no images to compress")
        costs = []
        for image in pil:
            width, height = image.size
            costs.append(image_tokens(self.provider, width, height, self.detail, self.model))
        total = sum(costs)
        keep = max(1, budget.tokens_for(total))
        fitted = [
            fit_image(
                image, max(1, keep * c // total), self.provider, detail=self.detail,
                model=self.model, mode=self.mode, saliency=self.saliency,
            )
            for image, c in zip(pil, costs, strict=True)
        ]  # fmt: skip
        reasons = [f.reason for f in fitted if f.reason]
        return ImageBudgetResult(
            images=[
                f.image if f.image is not None else i for f, i in zip(fitted, pil, strict=True)
            ],
            fitted=fitted,
            tokens_in=total,
            tokens_out=sum(f.tokens_out for f in fitted),
            requested_rate=budget.requested_rate(total),
            seconds=time.perf_counter() - start,
            method=self.name,
            budget=budget,
            tokenizer=f"{self.provider}-image",
            reason=reasons[0] if reasons else None,
        )

    async def acompress(
        self, images: Any, query: str | None = None, budget: Budget | None = None
    ) -> ImageBudgetResult:
        return await asyncio.to_thread(self.compress, images, query, budget)

    def compress_batch(self, requests: Sequence[Any]) -> list[ImageBudgetResult]:
        """Each `(images, query, budget)` tuple (or `{images, query, budget}` dict) in turn."""
        out = []
        for r in requests:
            if isinstance(r, dict):
                out.append(self.compress(r["images"], r.get("query"), r.get("budget")))
            else:
                out.append(self.compress(*r))
        return out


def _as_pil(image: Any) -> Any:
    import numpy as np
    from PIL import Image

    if isinstance(image, Image.Image):
        return image
    if isinstance(image, (bytes, bytearray)):
        try:
            return decode_image(bytes(image))[0]
        except (OSError, ValueError, binascii.Error) as exc:
            raise InputError(f"cannot read image bytes: {exc}") from exc
    if isinstance(image, np.ndarray) and image.ndim in (2, 3):
        return Image.fromarray(image.astype(np.uint8))
    raise InputError(f"cannot read an image from {type(image).__name__}")
