"""The proxy end to end: real SDK clients -> proxy -> recording upstream, all on loopback."""

from __future__ import annotations

import copy
import json

import anthropic
import httpx
import openai
import pytest
from test_proxy_fakes import (
    LONG_CONTEXT,
    FakeUpstream,
    make_config,
    run_proxy,
    running_upstream,
    serve,
)


@pytest.fixture(scope="module")
def upstream():
    with running_upstream() as fake:
        yield fake


@pytest.fixture(scope="module")
def proxy(upstream):
    with run_proxy(make_config(upstream.url)) as (url, state):
        yield url, state


@pytest.fixture(autouse=True)
def _reset(upstream):
    upstream.reset()


def oai(url: str, **kw) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key="sk-client-key-123", max_retries=0, **kw)


def claude(url: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=url, api_key="sk-ant-client-key", max_retries=0)


def openai_messages() -> list[dict]:
    return [
        {"role": "system", "content": "You are terse. " + LONG_CONTEXT},
        {"role": "user", "content": LONG_CONTEXT + "\nQuestion: how many boxes in room 3?"},
    ]


# ---- OpenAI ----------------------------------------------------------------------------


def test_openai_sdk_compresses_user_text_only(proxy, upstream):
    url, _ = proxy
    raw = oai(url).chat.completions.with_raw_response.create(
        model="gpt-4o", messages=openai_messages(), temperature=0, extra_body={"my_field": [1, 2]}
    )
    completion = raw.parse()
    assert completion.choices[0].message.content.startswith("seen ")
    sent = upstream.last["json"]
    original = openai_messages()
    assert sent["messages"][0] == original[0]  # system prompt untouched
    assert len(sent["messages"][1]["content"]) < len(original[1]["content"]) * 0.7
    assert sent["my_field"] == [1, 2] and sent["temperature"] == 0  # unknown fields pass
    tokens_in = int(raw.headers["x-ctxzip-tokens-in"])
    tokens_out = int(raw.headers["x-ctxzip-tokens-out"])
    assert tokens_out < tokens_in
    assert raw.headers["x-ctxzip-compression"] == "applied"
    # the client's key reaches the configured upstream; arbitrary client headers do not
    assert upstream.last["headers"]["authorization"] == "Bearer sk-client-key-123"
    assert int(upstream.last["headers"]["content-length"]) == len(upstream.last["raw"])


def test_openai_unknown_response_fields_relayed_byte_for_byte(proxy, upstream):
    url, _ = proxy
    direct = httpx.post(upstream.url + "/v1/chat/completions",
                        json={"model": "m", "messages": [{"role": "user", "content": "hi"}]})  # fmt: skip
    via = httpx.post(url + "/v1/chat/completions",
                     json={"model": "m", "messages": [{"role": "user", "content": "hi"}]})  # fmt: skip
    assert via.status_code == 200
    assert via.content == direct.content
    assert via.json()["x_unknown_field"] == {"kept": True}
    assert via.headers["x-ctxzip-compression"].startswith("unchanged")


def test_short_messages_untouched_and_original_bytes_forwarded(proxy, upstream):
    url, _ = proxy
    raw = b'{"model": "m",  "messages": [{"role": "user", "content": "short \\u00e9"}]}'
    r = httpx.post(url + "/v1/chat/completions", content=raw,
                   headers={"content-type": "application/json"})  # fmt: skip
    assert r.status_code == 200
    assert upstream.last["raw"] == raw  # nothing compressed: the exact bytes go upstream


def test_openai_streaming_relays_before_upstream_finishes(proxy, upstream):
    url, _ = proxy
    stream = oai(url).chat.completions.create(
        model="gated", messages=openai_messages(), stream=True,
        stream_options={"include_usage": True},
    )  # fmt: skip
    chunks = iter(stream)
    first = next(chunks)
    # the upstream is still holding back every later chunk: nothing was buffered
    assert first.choices[0].delta.content == "w0 "
    assert not upstream.finished.is_set()
    upstream.gate.set()
    rest = list(chunks)
    usage = [c for c in rest if c.usage is not None]
    assert len(usage) == 1 and usage[0].usage.total_tokens == 14 and usage[0].choices == []
    assert "".join(c.choices[0].delta.content or "" for c in [first, *rest] if c.choices) == (
        "w0 w1 w2 "
    )


def test_openai_stream_headers_carry_tokens(proxy, upstream):
    url, _ = proxy
    body = {"model": "m", "messages": openai_messages(), "stream": True}
    with httpx.stream("POST", url + "/v1/chat/completions", json=body) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        assert int(r.headers["x-ctxzip-tokens-in"]) > int(r.headers["x-ctxzip-tokens-out"]) > 0
        text = b"".join(r.iter_raw())
    assert text.endswith(b"data: [DONE]\n\n")


def test_client_disconnect_cancels_upstream(proxy, upstream):
    url, _ = proxy
    body = {"model": "slow", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    with httpx.stream("POST", url + "/v1/chat/completions", json=body) as r:
        next(r.iter_raw())
    # we closed after the first chunk; the upstream must see its request cancelled
    assert upstream.cancelled.wait(5)
    assert not upstream.finished.is_set()


def test_upstream_http_errors_relayed_as_they_are(proxy, upstream):
    url, _ = proxy
    with pytest.raises(openai.RateLimitError) as info:
        oai(url).chat.completions.create(model="error-429", messages=openai_messages())
    assert info.value.status_code == 429
    assert info.value.response.headers["retry-after"] == "7"
    with pytest.raises(anthropic.RateLimitError):
        claude(url).messages.create(model="error-429", max_tokens=5,
                                    messages=[{"role": "user", "content": "hi"}])  # fmt: skip


def test_stream_cut_midway_ends_with_protocol_error(proxy, upstream):
    url, _ = proxy
    body = {"model": "cut", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    with httpx.stream("POST", url + "/v1/chat/completions", json=body) as r:
        text = b"".join(r.iter_raw()).decode()
    events = [e for e in text.split("\n\n") if e.strip()]
    last = json.loads(events[-1].removeprefix("data: "))
    assert last["error"]["code"] == "upstream_stream"
    assert all(e.startswith("data: {") for e in events)  # every event whole


# ---- Anthropic -------------------------------------------------------------------------


def anthropic_request() -> dict:
    return {
        "model": "claude-x",
        "max_tokens": 64,
        "system": [{"type": "text", "text": "System. " + LONG_CONTEXT,
                    "cache_control": {"type": "ephemeral"}}],
        "tools": [{"name": "lookup", "description": LONG_CONTEXT,
                   "input_schema": {"type": "object", "properties": {}}}],
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "Old turn. " + LONG_CONTEXT},
                {"type": "text", "text": "Cached. " + LONG_CONTEXT,
                 "cache_control": {"type": "ephemeral"}},
            ]},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": LONG_CONTEXT, "signature": "sig=="},
                {"type": "tool_use", "id": "tu_1", "name": "lookup", "input": {"q": "x"}},
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "tu_1", "content": LONG_CONTEXT},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                             "data": "iVBORw0KGgo="}},
                {"type": "text", "text": "New turn. " + LONG_CONTEXT, "x_custom": 1},
            ]},
        ],
    }  # fmt: skip


def test_anthropic_policy_keeps_protected_blocks_identical(proxy, upstream):
    url, _ = proxy
    req = anthropic_request()
    raw = claude(url).messages.with_raw_response.create(**copy.deepcopy(req))
    assert raw.parse().content[0].text == "hello from anthropic"
    sent = upstream.last["json"]
    assert sent["system"] == req["system"] and sent["tools"] == req["tools"]
    assert sent["messages"][0] == req["messages"][0]  # at/before the cache breakpoint
    assert sent["messages"][1] == req["messages"][1]  # thinking + tool_use
    new, old = sent["messages"][2]["content"], req["messages"][2]["content"]
    assert new[1] == old[1]  # the image
    # the tool result: still paired with its call, compressed under the tool-result policy
    assert new[0]["tool_use_id"] == "tu_1" and new[0]["type"] == "tool_result"
    assert raw.headers["x-ctxzip-tool-results"] == "applied"
    assert new[2]["x_custom"] == 1 and len(new[2]["text"]) < len(old[2]["text"]) * 0.7
    got = upstream.last["headers"]
    assert "sk-ant-client-key" in (got.get("x-api-key"), got.get("authorization", "")[7:])
    assert "anthropic-version" in upstream.last["headers"]
    assert raw.headers["x-ctxzip-compression"] == "applied"


def test_anthropic_streaming(proxy, upstream):
    url, _ = proxy
    with claude(url).messages.stream(
        model="gated", max_tokens=16, messages=[{"role": "user", "content": LONG_CONTEXT}]
    ) as stream:
        events = iter(stream)
        first = next(events)
        assert first.type == "message_start"
        assert not upstream.finished.is_set()
        upstream.gate.set()
        kinds = [e.type for e in events]
        message = stream.get_final_message()
    assert "message_stop" in kinds
    assert message.content[0].text == "w0 w1 w2 "
    assert message.usage.output_tokens == 4


def test_compression_is_deterministic_so_prompt_caches_hit(proxy, upstream):
    url, state = proxy
    client = claude(url)
    for _ in range(3):
        client.messages.create(**anthropic_request())
    bodies = [r["raw"] for r in upstream.requests]
    assert bodies[0] == bodies[1] == bodies[2]
    # a fresh compressor (no cache) gives the same text too
    state.service._cache.clear()
    client.messages.create(**anthropic_request())
    assert upstream.last["raw"] == bodies[0]


# ---- /v1/compress, pass-through, health ------------------------------------------------


def test_compress_endpoint_returns_body_without_forwarding(proxy, upstream):
    url, _ = proxy
    body = {"model": "gpt-4o", "messages": openai_messages(), "extra": {"a": 1}}
    r = httpx.post(url + "/v1/compress", json=body)
    assert r.status_code == 200
    out = r.json()
    assert out["extra"] == {"a": 1} and out["messages"][0] == body["messages"][0]
    assert len(out["messages"][1]["content"]) < len(body["messages"][1]["content"])
    assert int(r.headers["x-ctxzip-tokens-out"]) < int(r.headers["x-ctxzip-tokens-in"])
    r = httpx.post(url + "/v1/compress?protocol=anthropic", json=anthropic_request())
    assert r.status_code == 200 and r.json()["system"] == anthropic_request()["system"]
    assert upstream.requests == []


def test_passthrough_reaches_only_the_configured_host(proxy, upstream):
    url, _ = proxy
    models = oai(url).models.list()
    assert [m.id for m in models.data] == ["fake-model"]
    r = httpx.get(url + "/v1/files/abc", params={"purpose": "x"})
    assert r.json() == {"path": "/v1/files/abc", "query": "purpose=x"}
    for evil in ("/v1/..%2f..%2fadmin", "/v1//evil.example.com/x", "/v1/a/../../etc",
                 "/v1/@evil.example.com", "/v1/x:80"):  # fmt: skip
        r = httpx.get(url + evil)
        assert r.status_code in (400, 404), evil
        assert "error" in r.json()
    assert all(req["path"].startswith("/v1/") for req in upstream.requests)
    # an absolute-form request target cannot pick the host either
    with httpx.Client() as c:
        r = c.send(c.build_request("GET", url + "/v1/models",
                                   headers={"host": "evil.example.com"}))  # fmt: skip
    assert r.status_code == 200 and upstream.last["headers"]["host"].startswith("127.0.0.1")


def test_anthropic_passthrough_goes_to_the_anthropic_upstream(upstream):
    other = FakeUpstream()
    with serve(other.app) as other_url:
        config = make_config(upstream.url, upstreams={"anthropic": {"url": other_url + "/v1"}})
        with run_proxy(config) as (url, _):
            count = {"model": "claude-x", "messages": [{"role": "user", "content": "hi"}]}
            r = httpx.post(url + "/v1/messages/count_tokens", json=count,
                           headers={"anthropic-version": "2023-06-01"})  # fmt: skip
            assert r.status_code == 200 and other.last["path"] == "/v1/messages/count_tokens"
            assert [m.id for m in claude(url).models.list().data] == ["fake-model"]
            assert other.last["path"] == "/v1/models" and len(other.requests) == 2
            assert [m.id for m in oai(url).models.list().data] == ["fake-model"]
            assert len(other.requests) == 2 and upstream.last["path"] == "/v1/models"
            r = httpx.get(url + "/v1/messages/..%2fx")
            assert r.status_code == 400 and r.json()["type"] == "error"  # Anthropic's shape


def test_header_allow_list(proxy, upstream):
    url, _ = proxy
    httpx.post(url + "/v1/chat/completions",
               json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
               headers={"x-internal-secret": "s3cr3t", "cookie": "a=b", "anthropic-beta": "b1",
                        "authorization": "Bearer sk-abc12345678"})  # fmt: skip
    got = upstream.last["headers"]
    assert "x-internal-secret" not in got and "cookie" not in got
    assert got["anthropic-beta"] == "b1" and got["authorization"] == "Bearer sk-abc12345678"


def test_health_ready_metrics(proxy):
    url, _ = proxy
    assert httpx.get(url + "/healthz").json() == {"status": "ok"}
    assert httpx.get(url + "/readyz").status_code == 200
    httpx.post(url + "/v1/chat/completions", json={"model": "m", "messages": openai_messages()})
    text = httpx.get(url + "/metrics").text
    for name in ("ctxzip_proxy_requests_total", "ctxzip_proxy_tokens_in_total",
                 "ctxzip_proxy_tokens_out_total", "ctxzip_proxy_tokens_saved_total",
                 "ctxzip_proxy_compression_seconds_bucket", "ctxzip_proxy_upstream_seconds_bucket",
                 'ctxzip_proxy_failures_total{kind="compression_timeout"}'):  # fmt: skip
        assert name in text, name
    saved = [line for line in text.splitlines()
             if line.startswith('ctxzip_proxy_tokens_saved_total{route="chat"}')]  # fmt: skip
    assert float(saved[0].split()[-1]) > 0


# ---- bad input -------------------------------------------------------------------------

BAD = [
    (b"{not json", 400, "not valid JSON"),
    (b"[1, 2]", 400, "must be a JSON object"),
    (b'{"model": "m"}', 400, "'messages' is required"),
    (b'{"model": 5, "messages": [{"role": "user", "content": "x"}]}', 400, "'model'"),
    (b'{"model": "m", "messages": "hi"}', 400, "'messages'"),
    (b'{"model": "m", "messages": [{"role": "wizard", "content": "x"}]}', 400, "role"),
    (b'{"model": "m", "messages": [{"role": "user", "content": 7}]}', 400, "content"),
    (b'{"model": "m", "stream": "yes", "messages": [{"role": "user", "content": "x"}]}', 400,
     "'stream'"),
    (b'{"model": "m", "messages": [{"role": "user", "content": "\xff\xfe"}]}', 400, "UTF-8"),
    (b"", 400, "empty"),
    (b'{"model": "m", "messages": [{"role": "user", "content": "x"}], "t": NaN}', 400, "NaN"),
    (b"[" * 5000 + b"]" * 5000, 400, "nested"),
]  # fmt: skip


@pytest.mark.parametrize(("raw", "status", "words"), BAD)
def test_bad_openai_input_gets_clear_error(proxy, upstream, raw, status, words):
    url, _ = proxy
    r = httpx.post(url + "/v1/chat/completions", content=raw,
                   headers={"content-type": "application/json"})  # fmt: skip
    assert r.status_code == status
    error = r.json()["error"]
    assert words in error["message"] and error["type"] == "invalid_request_error"
    assert upstream.requests == []
    assert httpx.get(url + "/healthz").status_code == 200  # still serving


def test_bad_anthropic_input_in_anthropic_shape(proxy, upstream):
    url, _ = proxy
    with pytest.raises(anthropic.BadRequestError) as info:
        claude(url).messages.create(model="m", max_tokens=0,
                                    messages=[{"role": "user", "content": "x"}])  # fmt: skip
    assert info.value.body["type"] == "error"
    assert "max_tokens" in info.value.body["error"]["message"]
    r = httpx.post(url + "/v1/messages", content=b"{oops")
    assert r.status_code == 400 and r.json()["type"] == "error"


def test_unknown_routes_and_methods(proxy):
    url, _ = proxy
    r = httpx.get(url + "/nope")
    assert r.status_code == 404 and "unknown route" in r.json()["error"]["message"]
    r = httpx.get(url + "/v1/compress")
    assert r.status_code == 405 and r.json()["error"]["type"] == "invalid_request_error"
    r = httpx.put(url + "/v1/messages", content=b"{}")  # other methods pass through
    assert r.status_code == 200


def test_oversized_body_413_before_reading(upstream):
    config = make_config(upstream.url, limits={"max_body_bytes": 4096})
    with run_proxy(config) as (url, _):
        r = httpx.post(url + "/v1/chat/completions", content=b"x" * 5000)
        assert r.status_code == 413 and r.json()["error"]["code"] == "too_large"
        # a declared length far beyond the limit is refused with no body sent at all
        import socket

        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=5) as s:
            s.sendall(b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                      b"\r\nContent-Length: 999999999\r\n\r\n")  # fmt: skip
            reply = s.recv(4096)
        assert reply.startswith(b"HTTP/1.1 413") and b'"type": "error"' in reply

        def chunks():
            for _ in range(10):
                yield b"y" * 1000

        r = httpx.post(url + "/v1/chat/completions", content=chunks())  # chunked, no length
        assert r.status_code == 413
        assert httpx.get(url + "/healthz").status_code == 200
    assert upstream.requests == []


def test_langchain_chat_openai_through_proxy(proxy, upstream):
    from langchain_openai import ChatOpenAI

    url, _ = proxy
    llm = ChatOpenAI(model="gpt-4o", base_url=url + "/v1", api_key="sk-lc-key-123456",
                     max_retries=0)  # fmt: skip
    answer = llm.invoke([("system", "Be brief."), ("user", LONG_CONTEXT)])
    assert answer.content.startswith("seen ")
    sent = upstream.last["json"]["messages"]
    assert sent[0] == {"role": "system", "content": "Be brief."}
    assert len(sent[1]["content"]) < len(LONG_CONTEXT)
    chunks = list(llm.stream([("user", "hi")]))
    assert "".join(c.content for c in chunks) == "w0 w1 w2 "


def test_time_to_first_byte_not_delayed_by_stream_length(proxy, upstream):
    url, _ = proxy
    body = {"model": "slow", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    with httpx.stream("POST", url + "/v1/chat/completions", json=body) as r:
        chunks = r.iter_raw()
        next(chunks)
        # 40 chunks 30 ms apart: the first is relayed while the upstream is still sending
        assert not upstream.finished.is_set()
        rest = b"".join(chunks)
    assert upstream.finished.is_set() and rest.endswith(b"data: [DONE]\n\n")
