"""Image budgets for API requests: provider accounting against the providers' worked examples,
request rewriting for OpenAI and Anthropic bodies, and salient cropping with the real model."""

from __future__ import annotations

import base64
import copy
import io

import numpy as np
import pytest
from PIL import Image

from ctxzip.budget import Budget
from ctxzip.compressors.images import ImageBudgetCompressor
from ctxzip.compressors.images.billing import (
    anthropic_image_tokens,
    anthropic_size,
    openai_image_tokens,
)
from ctxzip.compressors.images.fitting import default_saliency, fit_image, salient_box
from ctxzip.errors import InputError
from ctxzip.proxy.config import ConfigError, ImagesConfig
from ctxzip.proxy.images import aapply_images, apply_image_budget, apply_images


# -- worked examples from the providers' documentation ---------------------------------------
@pytest.mark.parametrize(
    ("size", "detail", "model", "tokens"),
    [
        ((1024, 1024), "high", "gpt-4o", 765),  # 768x768: 4 tiles, 170*4 + 85
        ((2048, 4096), "high", "gpt-4o", 1105),  # 1024x2048 -> 768x1536: 6 tiles
        ((4096, 8192), "low", "gpt-4o", 85),  # low detail: flat
        ((1024, 1024), "high", "gpt-4.1", 765),
        ((1024, 1024), "high", "gpt-4o-mini-2024-07-18", 2833 + 4 * 5667),
        ((1024, 1024), "high", "o3", 75 + 4 * 150),
        ((512, 512), "high", "gpt-4o", 85 + 170),  # small images are not scaled up
        ((1024, 1024), "auto", "gpt-4o", 765),  # auto counted as high (upper bound)
        ((1024, 1024), "high", "gpt-4.1-mini", 1659),  # 32x32 patches = 1024, x1.62
        ((1800, 2400), "high", "o4-mini", 2498),  # 1056x1408: 33x44 = 1452 patches, x1.72
        ((1800, 2400), "high", "gpt-4.1-nano", 3572),  # 1452 x 2.46
    ],
)
def test_openai_worked_examples(size, detail, model, tokens) -> None:  # type: ignore[no-untyped-def]
    assert openai_image_tokens(*size, detail=detail, model=model) == tokens


@pytest.mark.parametrize(
    ("size", "tokens"),
    [((200, 200), 54), ((1000, 1000), 1334), ((1092, 1092), 1590)],  # "~54", "~1334", "~1590"
)
def test_anthropic_worked_examples(size, tokens) -> None:  # type: ignore[no-untyped-def]
    assert anthropic_image_tokens(*size) == tokens


def test_anthropic_resize_rule() -> None:
    # the documented largest sizes that are not resized, per aspect ratio
    for size in [(1092, 1092), (951, 1268), (896, 1344), (819, 1456), (784, 1568)]:
        assert anthropic_size(*size) == size
    w, h = anthropic_size(4000, 1000)  # long edge capped at 1568
    assert w == 1568 and h == 392
    w, h = anthropic_size(3000, 3000)  # area capped (about 1600 tokens)
    assert w == h and 1100 <= w <= 1110
    assert anthropic_image_tokens(3000, 3000) <= 1640
    with pytest.raises(InputError):
        anthropic_image_tokens(0, 10)


# -- fitting and request rewriting -----------------------------------------------------------
def _png(width: int, height: int, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    array = rng.integers(0, 255, (height // 8, width // 8, 3), dtype=np.uint8)
    image = Image.fromarray(array).resize((width, height), Image.NEAREST)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _data_url(data: bytes, media: str = "image/png") -> str:
    return f"data:{media};base64,{base64.b64encode(data).decode()}"


def _decoded_size(url_or_b64: str) -> tuple[int, int]:
    payload = url_or_b64.partition(",")[2] if url_or_b64.startswith("data:") else url_or_b64
    return Image.open(io.BytesIO(base64.b64decode(payload))).size


def test_fit_image_downscales_to_budget() -> None:
    image = Image.open(io.BytesIO(_png(2048, 1024)))
    assert openai_image_tokens(2048, 1024) == 85 + 170 * 6
    fitted = fit_image(image, 600, "openai", model="gpt-4o")
    assert fitted.action == "downscaled" and fitted.tokens_out <= 600
    assert fitted.image.size == fitted.size_out
    assert abs(fitted.size_out[0] / fitted.size_out[1] - 2.0) < 0.01  # aspect kept
    # the largest size that fits: a few pixels wider would cost more than 600
    w = fitted.size_out[0]
    assert openai_image_tokens(w + 8, round((w + 8) / 2)) > 600
    low = fit_image(image, 100, "openai", model="gpt-4o")  # below one high tile (255)
    assert (low.action, low.tokens_out, low.detail) == ("low-detail", 85, "low")
    assert max(low.image.size) == 512
    kept = fit_image(image, 5000, "openai")
    assert kept.image is None and kept.action == "kept"
    claude = fit_image(image, 400, "anthropic")
    assert claude.tokens_out <= 400 and anthropic_image_tokens(*claude.size_out) <= 400


def test_openai_request_rewritten_within_budget() -> None:
    body = {
        "model": "gpt-4o",
        "messages": [
            {"role": "system", "content": "You describe images."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is in these?"},
                    {"type": "image_url", "image_url": {"url": _data_url(_png(2048, 1024))}},
                    {
                        "type": "image_url",
                        "image_url": {"url": _data_url(_png(1024, 1024, 1)), "detail": "high"},
                    },
                    {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
                ],
            },
        ],
        "temperature": 0,
    }
    original = copy.deepcopy(body)
    out = apply_image_budget(body, "openai", 800)
    assert body == original  # the caller's body is never modified
    assert out.tokens_in == 1105 + 765 and out.tokens_out <= 800 and out.changed
    assert [r.action for r in out.images] == ["downscaled", "downscaled", "skipped"]
    assert out.images[2].reason == "remote URL (not fetched)"
    parts = out.body["messages"][1]["content"]
    assert parts[0] == body["messages"][1]["content"][0]  # text untouched
    assert parts[3] == body["messages"][1]["content"][3]  # remote URL untouched
    assert parts[2]["image_url"]["detail"] == "high"
    sizes = [_decoded_size(parts[i]["image_url"]["url"]) for i in (1, 2)]
    assert sizes == [r.size_out for r in out.images[:2]]
    assert sum(openai_image_tokens(*s) for s in sizes) == out.tokens_out
    assert out.body["temperature"] == 0 and out.body["messages"][0] == body["messages"][0]

    roomy = apply_image_budget(body, "openai", 5000)
    assert roomy.body is None and roomy.tokens_in == roomy.tokens_out == 1870


def test_remote_urls_only_through_fetch() -> None:
    body = {
        "model": "gpt-4o",
        "messages": [
            {"role": "user", "content": [{"type": "image_url", "image_url": "https://x.test/a"}]}
        ],
    }
    calls: list[str] = []

    def fetch(url: str) -> bytes:
        calls.append(url)
        return _png(1024, 1024)

    skipped = apply_image_budget(body, "openai", 300)
    assert skipped.body is None and skipped.images[0].action == "skipped" and not calls
    fetched = apply_image_budget(body, "openai", 300, fetch=fetch)
    assert calls == ["https://x.test/a"]
    url = fetched.body["messages"][0]["content"][0]["image_url"]["url"]
    assert url.startswith("data:image/png;base64,") and fetched.tokens_out <= 300


def test_anthropic_request_and_bad_images_left_alone() -> None:
    jpeg = io.BytesIO()
    Image.open(io.BytesIO(_png(1600, 1200))).convert("RGB").save(jpeg, format="JPEG")
    body = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 100,
        "messages": [
            {
                "role": "user",
                "content": [
                    {
                        "type": "image",
                        "source": {
                            "type": "base64",
                            "media_type": "image/jpeg",
                            "data": base64.b64encode(jpeg.getvalue()).decode(),
                        },
                    },
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": "@@@"},
                    },
                    {"type": "text", "text": "Describe it."},
                ],
            }
        ],
    }
    out = apply_image_budget(body, "anthropic", 500)
    assert out.images[0].tokens_in == anthropic_image_tokens(1600, 1200)
    assert out.tokens_out <= 500 and out.images[0].action == "downscaled"
    block = out.body["messages"][0]["content"][0]
    assert block["source"]["media_type"] == "image/jpeg"
    assert anthropic_image_tokens(*_decoded_size(block["source"]["data"])) == out.tokens_out
    assert out.images[1].action == "skipped" and "unreadable" in out.images[1].reason
    assert out.body["messages"][0]["content"][1] == body["messages"][0]["content"][1]
    with pytest.raises(ValueError, match="max_tokens"):
        apply_image_budget(body, "anthropic", 0)


# -- saliency crop with the real model, and the compressor interface --------------------------
@pytest.mark.slow
def test_crop_to_salient_region_with_real_model() -> None:
    pytest.importorskip("onnxruntime")
    from skimage import data

    # a photo pasted into a wide flat canvas: the salient box must find the photo
    photo = Image.fromarray(data.astronaut()).resize((256, 256))
    canvas = Image.new("RGB", (1024, 512), (128, 128, 128))
    canvas.paste(photo, (640, 128))
    box = salient_box(canvas, default_saliency())
    left, top, right, bottom = box
    assert (right - left) * (bottom - top) < 0.5 * 1024 * 512
    assert left >= 512 and right <= 1024  # on the photo's side
    fitted = fit_image(canvas, 300, "anthropic", mode="crop")
    assert fitted.action == "cropped" and fitted.crop == box and fitted.tokens_out <= 300
    plain = fit_image(canvas, 300, "anthropic")
    # the same budget spends its pixels on the region that matters
    crop_w = right - left
    assert fitted.size_out[0] / crop_w > plain.size_out[0] / 1024


def test_compressor_interface() -> None:
    from ctxzip.registry import compressor_class

    assert compressor_class("image-budget") is ImageBudgetCompressor
    assert ImageBudgetCompressor.kind == "image"
    compressor = ImageBudgetCompressor("openai", model="gpt-4o")
    images = [Image.open(io.BytesIO(_png(2048, 1024))), _png(1024, 1024)]
    result = compressor.compress(images, budget=Budget(rate=0.5))
    assert result.tokens_in == 1870 and result.tokens_out <= 935
    assert result.requested_rate == pytest.approx(935 / 1870)
    assert len(result.images) == 2 and result.to_dict()["method"] == "image-budget"
    with pytest.raises(InputError):
        compressor.compress([])
    with pytest.raises(InputError, match="cannot read"):
        compressor.compress([b"not an image"])


def test_images_config_for_the_proxy() -> None:
    import asyncio

    body = {
        "model": "gpt-4o",
        "messages": [
            {"role": "user", "content": [{"type": "image_url", "image_url": "https://x.test/a"}]},
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": _data_url(_png(1024, 1024))}}
                ],
            },
        ],
    }
    assert apply_images(ImagesConfig(), body, "openai") is None  # off by default
    config = ImagesConfig(enabled=True, max_tokens=300)
    out = asyncio.run(aapply_images(config, body, "openai"))
    assert out is not None and out.tokens_in == 765 and out.tokens_out <= 300
    assert out.images[0].action == "skipped"  # remote URLs stay remote by default
    with pytest.raises(ConfigError, match="allowed_hosts"):
        ImagesConfig(enabled=True, allow_remote_urls=True)
    with pytest.raises(ConfigError, match="mode"):
        ImagesConfig(mode="blur")  # type: ignore[arg-type]
    # an allow-listed fetcher refuses other hosts and plain http before any network use
    fetch = ImagesConfig(enabled=True, allow_remote_urls=True, allowed_hosts=["img.test"])
    refused = apply_images(fetch, body, "openai")
    assert refused is not None and "not allowed" in (refused.images[0].reason or "")
