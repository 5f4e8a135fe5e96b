"""Image-token budgets for API requests: the images inside an OpenAI chat or Anthropic
messages body, fitted into the `[images]` budget before the request goes upstream.

Only inline images (base64 data URLs, Anthropic base64 sources) are touched; a remote URL is
fetched only when the configuration allows it (`allow_remote_urls` with `allowed_hosts`), and
is then sent inline. Anything that cannot be read is left exactly as it was, with a reason. The
arithmetic is the `image-budget` compressor's (`ctxzip.compressors.images`).
"""

from __future__ import annotations

import asyncio
import base64
import copy
import io
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from ctxzip.compressors.images.billing import PROVIDERS, Provider, image_tokens
from ctxzip.compressors.images.fitting import MAX_PIXELS, Fitted, Mode, decode_image, fit_image
from ctxzip.errors import InputError
from ctxzip.proxy.config import ImagesConfig


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


def apply_images(
    config: ImagesConfig, body: dict[str, Any], protocol: Provider
) -> ImageBudgetOutcome | None:
    """The outcome of the `[images]` configuration for `body`, or None when it is off."""
    if not config.enabled:
        return None
    fetch = None
    if config.allow_remote_urls:
        fetch = fetch_remote_image(config.allowed_hosts, config.max_image_bytes)
    return apply_image_budget(
        body, protocol, config.max_tokens, mode=config.mode, fetch=fetch,
        max_image_bytes=config.max_image_bytes,
    )  # fmt: skip


async def aapply_images(
    config: ImagesConfig, body: dict[str, Any], protocol: Provider
) -> ImageBudgetOutcome | None:
    """`apply_images` off the event loop (decoding and resizing images is CPU work)."""
    if not config.enabled:
        return None
    return await asyncio.to_thread(apply_images, config, body, protocol)


def apply_image_budget(
    body: dict[str, Any],
    protocol: Provider,
    max_tokens: int,
    *,
    model: str | None = None,
    mode: Mode = "downscale",
    fetch: Callable[[str], bytes] | None = None,
    max_image_bytes: int = 20 * 1024 * 1024,
    max_pixels: int = MAX_PIXELS,
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
    if protocol not in PROVIDERS:
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


def fetch_remote_image(
    allowed_hosts: Sequence[str], max_bytes: int = 20 * 1024 * 1024, timeout_s: float = 10.0
) -> Callable[[str], bytes]:
    """A `fetch` for `apply_image_budget` that reads https URLs on `allowed_hosts` only
    (size-capped, no redirects to other hosts). Pass it only when configuration allows it."""
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


# -- reading and rewriting a body ------------------------------------------------------------
@dataclass
class _Slot:
    path: str
    part: dict[str, Any]
    kind: Provider
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
                slot.image, slot.media_type = decode_image(data, max_pixels)
                width, height = slot.image.size
                slot.report.size_in = (width, height)
                slot.report.tokens_in = image_tokens(protocol, width, height, slot.detail, model)
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
        url = str(spec["url"])
    else:
        source = part.get("source")
        if not isinstance(source, dict):
            raise InputError("image block needs a source")
        if source.get("type") == "base64":
            payload = str(source.get("data", ""))
            if len(payload) * 3 // 4 > max_image_bytes:
                raise InputError(f"image over {max_image_bytes} bytes")
            return _b64(payload)
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


def _rewrite(part: dict[str, Any], kind: Provider, fitted: Fitted, media_type: str) -> None:
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
