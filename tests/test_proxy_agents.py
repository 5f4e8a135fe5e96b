"""Agent traffic through the proxy: the Responses API (real `openai` SDK, stream and not),
tool results in all three protocols, prompt-cache stable history, originals, metrics."""

from __future__ import annotations

import copy
import itertools
import json
import re

import anthropic
import httpx
import openai
import pytest
from test_proxy_fakes import LONG_CONTEXT, make_config, run_proxy, serve
from test_responses_fakes import ResponsesUpstream, build_log, grep_output, package_json

MARKER = re.compile(r"expand key ([0-9a-f]{12})")


@pytest.fixture(scope="module")
def upstream():
    fake = ResponsesUpstream()
    with serve(fake.app) as url:
        fake.url = url
        yield fake


@pytest.fixture(scope="module")
def proxy(upstream):
    config = make_config(upstream.url, tool_results={"min_tokens": 200, "rate": 0.3})
    with run_proxy(config) as (url, state):
        yield url, state


@pytest.fixture(autouse=True)
def _reset(upstream):
    upstream.reset()


def oai(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key="sk-client-key-123", max_retries=0)


TOOLS = [{"type": "function", "name": "pip_list", "description": "List packages.",
          "parameters": {"type": "object", "properties": {}}}]  # fmt: skip
REASONING = {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "abc=="}


def responses_input() -> list[dict]:
    return [
        {"role": "user", "content": [{"type": "input_text",
                                      "text": LONG_CONTEXT + " Which version of needle-lib?"}]},
        REASONING,
        {"type": "function_call", "call_id": "call_1", "name": "pip_list", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "call_1", "output": package_json()},
    ]  # fmt: skip


# ---- Responses API ---------------------------------------------------------------------


def test_responses_sdk_non_streaming(proxy, upstream):
    url, _ = proxy
    items = responses_input()
    raw = oai(url).responses.with_raw_response.create(
        model="gpt-4o", instructions="Be terse. " + LONG_CONTEXT, input=copy.deepcopy(items),
        tools=TOOLS, store=False, include=["reasoning.encrypted_content"],
        previous_response_id="resp_0", extra_body={"my_field": [1, 2]},
    )  # fmt: skip
    response = raw.parse()
    assert response.output_text.startswith("seen ")
    sent = upstream.last["json"]
    assert upstream.last["path"] == "/v1/responses"
    # instructions, tools and everything that is not message text or a tool output: as sent
    assert sent["instructions"] == "Be terse. " + LONG_CONTEXT and sent["tools"] == TOOLS
    assert sent["store"] is False and sent["include"] == ["reasoning.encrypted_content"]
    assert sent["previous_response_id"] == "resp_0" and sent["my_field"] == [1, 2]
    assert sent["input"][1] == REASONING and sent["input"][2] == items[2]
    # the user text was compressed under the message policy (truncate in these tests)
    assert len(sent["input"][0]["content"][0]["text"]) < len(items[0]["content"][0]["text"])
    # the tool output under the tool-result policy: valid JSON, the needle kept, a note
    output = sent["input"][3]["output"]
    records = json.loads(output)
    assert {"name": "needle-lib", "version": "9.8.7"} in records
    assert records[-1]["ctxzip_omitted"]["of"] == 120
    assert len(output) < 0.5 * len(items[3]["output"])
    assert raw.headers["x-ctxzip-tool-results"] == "applied"
    assert raw.headers["x-ctxzip-tool-tokens-saved"].startswith("json=")


def test_responses_sdk_streaming_relays_as_it_arrives(proxy, upstream):
    url, _ = proxy
    stream = oai(url).responses.create(model="gated", input=responses_input(), stream=True)
    events = iter(stream)
    first = next(events)
    assert first.type == "response.created"
    assert not upstream.finished.is_set()  # the upstream still holds back the rest
    upstream.gate.set()
    rest = list(events)
    deltas = [e.delta for e in rest if e.type == "response.output_text.delta"]
    assert deltas == ["w0 ", "w1 ", "w2 "]
    assert rest[-1].type == "response.completed"
    assert "ctxzip_omitted" in upstream.last["json"]["input"][3]["output"]


def test_responses_string_input_and_errors(proxy, upstream):
    url, _ = proxy
    r = oai(url).responses.create(model="m", input="hello")
    assert r.output_text.startswith("seen")
    assert upstream.last["json"]["input"] == "hello"
    bad = httpx.post(url + "/v1/responses", json={"model": "m", "input": 5})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "input"
    with pytest.raises(openai.RateLimitError):
        oai(url).responses.create(model="error-429", input="hi")


def test_compress_endpoint_takes_responses_bodies(proxy, upstream):
    url, _ = proxy
    body = {"model": "m", "input": responses_input(), "tools": TOOLS}
    r = httpx.post(url + "/v1/compress", json=body)
    assert r.status_code == 200 and not upstream.requests
    out = r.json()
    assert out["tools"] == TOOLS
    assert json.loads(out["input"][3]["output"])[-1]["ctxzip_omitted"]["count"] > 0
    assert r.headers["x-ctxzip-tool-results"] == "applied"
    r2 = httpx.post(url + "/v1/compress?protocol=responses", json=body)
    assert r2.content == r.content


# ---- tool results in chat and messages -------------------------------------------------


def chat_body(output: str, tool: str = "grep") -> dict:
    return {"model": "m", "messages": [
        {"role": "system", "content": "You are an agent."},
        {"role": "user", "content": "Where is find_the_needle defined?"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function",
         "function": {"name": tool, "arguments": "{\"q\": \"needle\"}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": output},
    ]}  # fmt: skip


def test_openai_tool_message_compressed_and_paired(proxy, upstream):
    url, _ = proxy
    body = chat_body(grep_output())
    r = httpx.post(url + "/v1/chat/completions", json=body)
    assert r.status_code == 200
    sent = upstream.last["json"]["messages"]
    assert sent[:3] == body["messages"][:3]  # the call is untouched
    assert sent[3]["tool_call_id"] == "c1" and sent[3]["role"] == "tool"
    text = sent[3]["content"]
    assert "src/special.py:77:def find_the_needle(haystack):\n" in text
    original = body["messages"][3]["content"].splitlines(keepends=True)
    kept = [x for x in text.splitlines(keepends=True) if not x.startswith("[ctxzip:")]
    assert all(x in original for x in kept)  # byte-identical lines, prefixes included
    assert [original.index(x) for x in kept] == sorted(original.index(x) for x in kept)
    assert len(text) < 0.5 * len(body["messages"][3]["content"])


def test_anthropic_tool_result_blocks(proxy, upstream):
    url, _ = proxy
    log = build_log()
    req = {"model": "claude-x", "max_tokens": 16, "messages": [
        {"role": "user", "content": "Did the install fail?"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "tu_1", "name": "sh",
                                           "input": {"cmd": "pip install"}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "tu_1", "content": log},
            {"type": "tool_result", "tool_use_id": "tu_1",
             "content": [{"type": "text", "text": log}]},
            {"type": "tool_result", "tool_use_id": "tu_1", "content": log, "is_error": True},
        ]},
    ]}  # fmt: skip
    client = anthropic.Anthropic(base_url=url, api_key="k", max_retries=0)
    raw = client.messages.with_raw_response.create(**copy.deepcopy(req))
    assert raw.parse().content[0].text == "hello from anthropic"
    blocks = upstream.last["json"]["messages"][2]["content"]
    for text in (blocks[0]["content"], blocks[1]["content"][0]["text"]):
        assert "ERROR checksum mismatch for package-150\n" in text
        assert "WARNING package-80 is deprecated\n" in text
        assert len(text) < 0.6 * len(log)
    assert blocks[2] == req["messages"][2]["content"][2]  # is_error results stay as they are
    assert "is_error=1" in raw.headers["x-ctxzip-tool-results-skipped"]


def test_cache_breakpoint_protects_earlier_tool_results(proxy, upstream):
    url, _ = proxy
    log = build_log()
    req = {"model": "claude-x", "max_tokens": 16, "messages": [
        {"role": "user", "content": "Did the install fail?"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "tu_1", "name": "sh",
                                           "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "tu_1",
                                      "content": log, "cache_control": {"type": "ephemeral"}}]},
    ]}  # fmt: skip
    httpx.post(url + "/v1/messages", json=req)
    assert upstream.last["json"]["messages"] == req["messages"]


def test_disable_header_exclude_and_off_switch(proxy, upstream):
    url, _ = proxy
    body = chat_body(grep_output())
    r = httpx.post(url + "/v1/chat/completions", json=body, headers={"x-ctxzip-disable": "1"})
    assert upstream.last["json"] == body
    assert r.headers["x-ctxzip-tool-results"] == "disabled"
    with run_proxy(make_config(upstream.url, tool_results={"min_tokens": 10,
                                                           "exclude": ["gr*"]})) as (u2, _):  # fmt: skip
        r = httpx.post(u2 + "/v1/chat/completions", json=body)
        assert upstream.last["json"] == body
        assert "excluded=1" in r.headers["x-ctxzip-tool-results-skipped"]
        r = httpx.post(u2 + "/v1/chat/completions", json=chat_body(grep_output(), "search"))
        assert r.headers["x-ctxzip-tool-results"] == "applied"
    with run_proxy(make_config(upstream.url, tool_results={"enabled": False})) as (u3, _):
        httpx.post(u3 + "/v1/chat/completions", json=body)
        assert upstream.last["json"] == body


def test_unparseable_and_short_results_pass_through_counted(proxy, upstream):
    url, _ = proxy
    broken = '{"items": [' + ", ".join(f'{{"id": {i}}}' for i in range(300))  # cut off
    r = httpx.post(url + "/v1/chat/completions", json=chat_body(broken))
    assert upstream.last["json"]["messages"][3]["content"] == broken
    assert "unparseable=1" in r.headers["x-ctxzip-tool-results-skipped"]
    r = httpx.post(url + "/v1/chat/completions", json=chat_body("3 files"))
    assert "below_threshold=1" in r.headers["x-ctxzip-tool-results-skipped"]
    metrics = httpx.get(url + "/metrics").text
    assert 'ctxzip_proxy_tool_results_skipped_total{protocol="openai",reason="unparseable"}' in (
        metrics
    )


# ---- prompt-cache stability, originals, metrics ----------------------------------------


def test_six_turn_agent_conversation_keeps_prefixes_identical(proxy, upstream):
    """Each turn's request repeats the previous turn's compressed request byte for byte."""
    url, _ = proxy
    outputs = [package_json(), grep_output(), build_log(), package_json(90), grep_output(150),
               build_log(120)]  # fmt: skip
    messages: list[dict] = [{"role": "system", "content": "You are an agent."}]
    sent_turns = []
    for turn, output in enumerate(outputs):
        messages.append({"role": "user", "content": f"Turn {turn}: " + LONG_CONTEXT})
        messages.append({"role": "assistant", "content": None, "tool_calls": [
            {"id": f"c{turn}", "type": "function",
             "function": {"name": "tool", "arguments": "{}"}}]})  # fmt: skip
        messages.append({"role": "tool", "tool_call_id": f"c{turn}", "content": output})
        r = httpx.post(url + "/v1/chat/completions", json={"model": "m", "messages": messages})
        assert r.status_code == 200
        sent_turns.append(upstream.last["json"]["messages"])
        messages.append({"role": "assistant", "content": f"answer {turn}"})
    for prev, cur in itertools.pairwise(sent_turns):
        assert cur[: len(prev)] == prev
        encode = lambda m: json.dumps(m, ensure_ascii=False, separators=(",", ":"))  # noqa: E731
        assert encode(cur[: len(prev)]) == encode(prev)
    assert all("[ctxzip:" in m["content"] or "ctxzip_omitted" in m["content"]
               for m in sent_turns[-1] if m["role"] == "tool")  # fmt: skip


def test_originals_endpoint_returns_what_was_left_out(proxy, upstream):
    url, _ = proxy
    output = grep_output()
    httpx.post(url + "/v1/chat/completions", json=chat_body(output))
    text = upstream.last["json"]["messages"][3]["content"]
    keys = MARKER.findall(text)
    assert keys
    rebuilt = text
    for key in keys:
        r = httpx.get(f"{url}/v1/ctxzip/originals/{key}")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
        rebuilt = re.sub(rf"\[ctxzip: \d+ \w+ omitted; expand key {key}\]\n",
                         lambda _m, t=r.text: t, rebuilt)  # fmt: skip
    assert rebuilt == output
    missing = httpx.get(url + "/v1/ctxzip/originals/000000000000")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


def test_metrics_per_content_type_and_protocol(proxy, upstream):
    url, _ = proxy
    httpx.post(url + "/v1/chat/completions", json=chat_body(grep_output()))
    oai(url).responses.create(model="m", input=responses_input())
    text = httpx.get(url + "/metrics").text
    saved = {
        (m.group(1), m.group(2)): float(m.group(3))
        for m in re.finditer(r'ctxzip_proxy_tool_result_tokens_saved_total\{content_type="(\w+)",'
                             r'protocol="(\w+)"\} ([\d.e+]+)', text)
    }  # fmt: skip
    assert saved[("search", "openai")] > 0 and saved[("json", "responses")] > 0


# ---- the ctxzip_expand tool ------------------------------------------------------------


@pytest.fixture(scope="module")
def expander():
    from test_responses_fakes import ExpandingUpstream

    fake = ExpandingUpstream()
    with serve(fake.app) as url:
        fake.url = url
        config = make_config(url, tool_results={"min_tokens": 200, "expand_tool": True})
        with run_proxy(config) as (proxy_url, _):
            yield fake, proxy_url


CLIENT_TOOL = {"type": "function", "function": {"name": "grep", "parameters": {"type": "object"}}}


@pytest.mark.parametrize("stream", [False, True])
def test_expand_tool_answered_by_the_proxy_openai(expander, stream):
    fake, url = expander
    fake.requests.clear()
    body = {**chat_body(grep_output()), "model": "expander", "tools": [CLIENT_TOOL]}
    client = oai(url)
    if stream:
        chunks = list(client.chat.completions.create(**body, stream=True))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        calls = [c for c in chunks if c.choices and c.choices[0].delta.tool_calls]
    else:
        message = client.chat.completions.create(**body).choices[0].message
        text, calls = message.content, message.tool_calls or []
    assert text.startswith("expanded ") and int(text.split()[1]) > 100 and not calls
    first, second = fake.requests[-2]["json"], fake.requests[-1]["json"]
    assert first["tools"][0] == CLIENT_TOOL and first["tools"][1]["function"]["name"] == (
        "ctxzip_expand"
    )
    assert second["tools"] == first["tools"]  # the same definition every round
    assert second["messages"][-1]["role"] == "tool"
    assert second["messages"][-1]["content"] in grep_output()  # the original, served here


def test_expand_tool_anthropic_and_responses(expander):
    fake, url = expander
    req = {"model": "expander", "max_tokens": 16, "tools": [
        {"name": "sh", "input_schema": {"type": "object"}}], "messages": [
        {"role": "user", "content": "Did the install fail?"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "tu_1", "name": "sh",
                                           "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "tu_1",
                                      "content": build_log()}]},
    ]}  # fmt: skip
    answer = anthropic.Anthropic(base_url=url, api_key="k", max_retries=0).messages.create(**req)
    assert answer.content[0].text.startswith("expanded ")
    assert fake.requests[-1]["json"]["tools"][-1]["name"] == "ctxzip_expand"
    r = oai(url).responses.create(model="expander", input=responses_input(), tools=TOOLS)
    assert r.output_text.startswith("expanded ")
    assert [o.type for o in r.output] == ["message"]


def test_expand_tool_not_added_without_client_tools(expander):
    fake, url = expander
    fake.requests.clear()
    httpx.post(url + "/v1/chat/completions", json={**chat_body(grep_output()), "model": "m"})
    assert "tools" not in fake.requests[-1]["json"]


def test_expand_rounds_are_bounded(expander):
    fake, url = expander
    fake.requests.clear()
    body = {**chat_body(grep_output()), "model": "expander-loop", "tools": [CLIENT_TOOL]}
    raw = oai(url).chat.completions.with_raw_response.create(**body)
    assert raw.parse().choices[0].message.content == "expanded enough"
    assert len(fake.requests) == 3  # expand_rounds = 2, then one round without tool calls
    assert raw.headers["x-ctxzip-expand-calls"] == "2"
    assert fake.requests[-1]["json"]["tool_choice"] == "none"
