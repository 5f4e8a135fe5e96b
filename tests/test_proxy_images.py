"""Image-token budgets in the proxy: big images shrink before they go upstream (both protocols)."""

from __future__ import annotations

import base64
import io

import anthropic
import openai
import pytest
from PIL import Image
from test_proxy_fakes import make_config, run_proxy, running_upstream

from ctxzip.compressors.images.billing import anthropic_image_tokens, openai_image_tokens
from ctxzip.proxy.config import ConfigError

IMAGES = {"enabled": True, "max_tokens": 400}


def png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 40, 90)).save(buffer, format="PNG")
    return buffer.getvalue()


def size_of(b64: str) -> tuple[int, int]:
    return Image.open(io.BytesIO(base64.b64decode(b64))).size


@pytest.fixture(scope="module")
def upstream():
    with running_upstream() as fake:
        yield fake


@pytest.fixture(scope="module")
def proxy(upstream):
    with run_proxy(make_config(upstream.url, images=IMAGES)) as (url, _):
        yield url


def test_openai_image_is_downscaled_to_the_budget(proxy, upstream):
    data = base64.b64encode(png(2048, 1536)).decode()
    client = openai.OpenAI(base_url=proxy + "/v1", api_key="sk-x", max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o",
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What colour is this?"},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{data}"}},
                ],
            }
        ],
    )
    assert raw.headers["x-ctxzip-image-tokens-in"] == str(openai_image_tokens(2048, 1536))
    out = int(raw.headers["x-ctxzip-image-tokens-out"])
    assert out <= IMAGES["max_tokens"]
    part = upstream.last["json"]["messages"][0]["content"][1]["image_url"]
    sent = part["url"].split(",", 1)[1]
    width, height = size_of(sent)
    assert width < 2048 and abs(width / height - 4 / 3) < 0.02  # aspect ratio kept
    assert upstream.last["json"]["messages"][0]["content"][0]["text"] == "What colour is this?"


def test_anthropic_image_is_downscaled_and_small_images_pass_untouched(proxy, upstream):
    big = base64.b64encode(png(1500, 1500)).decode()
    small = base64.b64encode(png(64, 64)).decode()
    client = anthropic.Anthropic(base_url=proxy, api_key="sk-ant-x", max_retries=0)
    blocks = [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": d}}
        for d in (big, small)
    ]
    raw = client.messages.with_raw_response.create(
        model="claude-test",
        max_tokens=16,
        messages=[{"role": "user", "content": [*blocks, {"type": "text", "text": "Compare."}]}],
    )
    tokens_in = anthropic_image_tokens(1500, 1500) + anthropic_image_tokens(64, 64)
    assert int(raw.headers["x-ctxzip-image-tokens-in"]) == tokens_in
    assert int(raw.headers["x-ctxzip-image-tokens-out"]) <= IMAGES["max_tokens"]
    sent = upstream.last["json"]["messages"][0]["content"]
    assert size_of(sent[0]["source"]["data"])[0] < 1500
    assert sent[1]["source"]["data"] == small  # already within its share: byte-identical


def test_text_only_requests_are_unaffected(proxy, upstream):
    client = openai.OpenAI(base_url=proxy + "/v1", api_key="sk-x", max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=[{"role": "user", "content": "hi"}]
    )
    assert "x-ctxzip-image-tokens-in" not in raw.headers
    assert upstream.last["json"]["messages"] == [{"role": "user", "content": "hi"}]


def test_bad_image_settings_fail_at_config_time():
    with pytest.raises(ConfigError, match="mode"):
        make_config(None, images={"enabled": True, "mode": "explode"})
    with pytest.raises(ConfigError, match="allowed_hosts"):
        make_config(None, images={"enabled": True, "allow_remote_urls": True})
