"""xrag through the proxy: the embedded local model reads soft tokens; remote upstreams refuse.

Real HTTP over loopback with the real `openai` client, the real SmolLM2 + MiniLM models
and the shipped projector; the remote upstream is the recording fake from test_proxy_fakes.
"""

from __future__ import annotations

import openai
import pytest
from test_proxy_fakes import make_config, run_proxy, running_upstream

from ctxzip.compressors.xrag.compressor import soft_tokens
from ctxzip.compressors.xrag.inject import (
    PLACEHOLDER,
    SLOT,
    chat_prompt_messages,
    encode_with_slots,
    generate,
)

pytestmark = pytest.mark.slow

DOC = (
    "The pathlib module offers classes representing filesystem paths with semantics "
    "appropriate for different operating systems. Path classes are divided between pure "
    "paths, which provide purely computational operations without I/O, and concrete paths, "
    "which inherit from pure paths but also provide I/O operations."
)
QUESTION = "What does pathlib offer?"


def messages(doc: str = DOC) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": f"<doc>{doc}</doc>\n{QUESTION}"},
    ]


@pytest.fixture(scope="module")
def local_xrag():
    config = make_config(
        None,
        compression={"method": "xrag", "min_tokens": 20, "tags": ["doc"], "timeout_s": 60},
        local={"max_tokens": 8, "device": "cpu"},
    )
    with run_proxy(config) as (url, state):
        assert state.ready, state.ready_error
        yield url, state


def test_local_upstream_generates_from_soft_tokens(local_xrag):
    url, state = local_xrag
    client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="local", max_tokens=8, temperature=0, messages=messages()
    )
    completion = raw.parse()
    text = completion.choices[0].message.content
    assert text.strip()
    assert raw.headers["x-ctxzip-compression"] == "applied"
    assert raw.headers["x-ctxzip-method"] == "xrag"
    tokens_in = int(raw.headers["x-ctxzip-tokens-in"])
    assert tokens_in > 40
    assert int(raw.headers["x-ctxzip-tokens-out"]) == 1  # the document became one soft token

    # the answer is exactly what the local model says reading the projected vector in
    # place of the document (not the literal placeholder, not the text)
    compressor = state.soft.compressor()
    result = compressor.compress([DOC], query=QUESTION, budget=None)
    sent = messages(PLACEHOLDER)
    model, tok = state.local.model, state.local.tokenizer
    prompt = chat_prompt_messages(tok, sent)
    expected = generate(model, tok, [prompt], [soft_tokens(result)], max_new_tokens=8)[0]
    assert text.strip() == expected
    # the model read one position for the whole document
    slots = encode_with_slots(tok, prompt)
    assert slots.count(SLOT) == 1
    assert completion.usage.prompt_tokens == len(slots)
    assert completion.usage.prompt_tokens < len(tok(prompt.replace(PLACEHOLDER, DOC))["input_ids"])

    # streamed: the same greedy text
    chunks = list(
        client.chat.completions.create(
            model="local", max_tokens=8, temperature=0, messages=messages(), stream=True
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == text


def test_placeholder_in_the_request_is_served_as_text(local_xrag):
    url, _ = local_xrag
    client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="local", max_tokens=4, temperature=0, messages=messages(DOC + " " + PLACEHOLDER)
    )
    assert raw.headers["x-ctxzip-compression"].startswith("skipped")
    assert raw.parse().choices[0].message.content.strip()


def test_black_box_upstream_refuses_xrag_and_gets_the_text():
    with running_upstream() as fake:
        config = make_config(fake.url, compression={"method": "xrag", "min_tokens": 20})
        with run_proxy(config) as (url, _):
            client = openai.OpenAI(base_url=url + "/v1", api_key="sk-test", max_retries=0)
            raw = client.chat.completions.with_raw_response.create(
                model="gpt-4o-mini", messages=messages()
            )
    assert raw.headers["x-ctxzip-compression"].startswith("skipped")
    sent = fake.requests[-1]["json"]["messages"][1]["content"]
    assert DOC in sent and PLACEHOLDER not in sent
