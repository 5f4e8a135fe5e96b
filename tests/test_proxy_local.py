"""With no upstream configured, the embedded SmolLM2 model answers (real model, offline)."""

from __future__ import annotations

import anthropic
import httpx
import openai
import pytest
from test_proxy_fakes import LONG_CONTEXT, make_config, run_proxy

pytestmark = pytest.mark.slow
CONTEXT = LONG_CONTEXT[:300]  # about 70 tokens: compressed, yet quick to read


@pytest.fixture(scope="module")
def local_proxy():
    config = make_config(None, local={"max_tokens": 12})
    with run_proxy(config) as (url, state):
        assert state.local.loaded  # readiness waited for the model
        yield url


def test_openai_sdk_against_local_model(local_proxy):
    client = openai.OpenAI(base_url=local_proxy + "/v1", api_key="unused", max_retries=0)
    messages = [{"role": "system", "content": "Answer in one word."},
                {"role": "user", "content": CONTEXT + "\nWhat is in the rooms?"}]  # fmt: skip
    raw = client.chat.completions.with_raw_response.create(
        model="local", max_tokens=5, temperature=0, messages=messages
    )
    completion = raw.parse()
    text = completion.choices[0].message.content
    assert text.strip()
    assert 0 < completion.usage.completion_tokens <= 5
    assert int(raw.headers["x-ctxzip-tokens-out"]) < int(raw.headers["x-ctxzip-tokens-in"])
    # temperature 0 is greedy, so deterministic: the same request streamed gives the same text
    chunks = list(client.chat.completions.create(
        model="local", max_tokens=5, temperature=0, messages=messages, stream=True,
        stream_options={"include_usage": True},
    ))  # fmt: skip
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == text
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens <= 5
    assert chunks[-2].choices[0].finish_reason in ("stop", "length")


def test_bad_sampling_parameters_are_400_not_500(local_proxy):
    client = openai.OpenAI(base_url=local_proxy + "/v1", api_key="unused", max_retries=0)
    for extra in ({"temperature": "hot"}, {"max_tokens": 2.5}, {"temperature": 9}):
        with pytest.raises(openai.BadRequestError) as info:
            client.chat.completions.create(
                model="local", messages=[{"role": "user", "content": "hi"}], **extra
            )
        assert info.value.body["param"] in extra


def test_anthropic_sdk_and_models_against_local_model(local_proxy):
    client = anthropic.Anthropic(base_url=local_proxy, api_key="unused", max_retries=0)
    message = client.messages.create(model="local", max_tokens=4, system="Be brief.",
                                     messages=[{"role": "user", "content": "Hi!"}])  # fmt: skip
    assert message.content[0].text.strip() and message.usage.output_tokens <= 4
    with client.messages.stream(model="local", max_tokens=4, system="Be brief.",
                                messages=[{"role": "user", "content": "Hi!"}]) as stream:  # fmt: skip
        final = stream.get_final_message()
    assert final.content[0].text == message.content[0].text  # greedy by default: same answer
    models = httpx.get(local_proxy + "/v1/models").json()
    assert models["data"][0]["owned_by"] == "ctxzip-local"


def test_abstractive_openai_backend_through_local_upstream(local_proxy):
    # the remote summariser backend, pointed at the proxy's own local model: a real summary
    from ctxzip.budget import Budget
    from ctxzip.registry import get_compressor

    comp = get_compressor(
        "abstractive",
        backend="openai",
        base_url=local_proxy + "/v1",
        model="local",
        api_key="unused",
        relevance_threshold=None,
    )
    result = comp.compress([CONTEXT], query="What is in the rooms?", budget=Budget(rate=0.5))
    assert result.method == "abstractive" and result.reason is None
    assert result.text.strip() and 0 < result.tokens_out <= result.tokens_in
