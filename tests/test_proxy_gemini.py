"""The Gemini route through the proxy with the real `google-genai` SDK (base URL pointed at
the proxy), stream and not, in front of a local upstream speaking the Gemini wire format."""

from __future__ import annotations

import json
import logging
import sqlite3
import time

import httpx
import pytest
from click.testing import CliRunner
from gemini_fakes import CACHED_TOKENS, GeminiUpstream
from google import genai
from google.genai import errors as genai_errors
from google.genai import types
from test_proxy_fakes import LONG_CONTEXT, make_config, run_proxy, running_upstream
from test_responses_fakes import build_log

from ctxzip.cli import cli
from ctxzip.proxy.config import GEMINI_URL, load_config
from ctxzip.proxy.ledger import Ledger
from ctxzip.proxy.upstream import Upstreams

SIGNATURE = b"\x01opaque-thought-signature\xff" * 4


def records(n: int = 120) -> list[dict]:
    rows = [{"name": f"package-{i:03d}", "version": f"{i % 7}.{i % 13}.{i}", "size": i * 1.5}
            for i in range(n)]  # fmt: skip
    rows[57] = {"name": "needle-lib", "version": "9.8.7", "size": 3.25}
    return rows


@pytest.fixture(scope="module")
def upstream():
    with running_upstream(GeminiUpstream) as fake:
        yield fake


@pytest.fixture(scope="module")
def proxy(upstream, tmp_path_factory):
    config = make_config(upstream.url, tool_results={"min_tokens": 200, "rate": 0.3},
                         upstreams={"gemini": {"url": upstream.url + "/v1beta"}})  # fmt: skip
    with run_proxy(config) as (url, state):
        yield url, state, config


@pytest.fixture(autouse=True)
def _reset(upstream):
    upstream.reset()


def client(url: str, version: str | None = None, **headers: str) -> genai.Client:
    options = types.HttpOptions(base_url=url, headers=headers or None, timeout=30_000,
                                api_version=version)  # fmt: skip
    return genai.Client(api_key="AIzaClientKey0123456789", http_options=options)


def conversation() -> list[types.Content]:
    """user question -> model call (signed) -> tool result (records + a log)."""
    return [
        types.Content(role="user", parts=[types.Part(
            text=LONG_CONTEXT + " Which version of needle-lib is installed?")]),
        types.Content(role="model", parts=[types.Part(
            function_call=types.FunctionCall(name="pip_list", args={"format": "json"}),
            thought_signature=SIGNATURE)]),
        types.Content(role="user", parts=[types.Part(function_response=types.FunctionResponse(
            name="pip_list", response={"packages": records(), "log": build_log(), "exit": 0}))]),
    ]  # fmt: skip


CONFIG = types.GenerateContentConfig(
    system_instruction="Be terse. " + LONG_CONTEXT,
    tools=[types.Tool(function_declarations=[types.FunctionDeclaration(
        name="pip_list", description="List packages.",
        parameters=types.Schema(type="OBJECT", properties={"format": types.Schema(type="STRING")}))])],
    cached_content="cachedContents/abc123",
)  # fmt: skip


def _frozen(body: dict) -> dict:
    """What must reach the upstream exactly as the SDK sent it."""
    return {"systemInstruction": body["systemInstruction"], "tools": body["tools"],
            "cachedContent": body["cachedContent"], "call": body["contents"][1]}  # fmt: skip


def test_generate_content_compresses_tool_results_and_keeps_the_rest(proxy, upstream):
    url, _, _ = proxy
    # the SDK's own bytes, through the proxy untouched (per-request bypass)
    plain = client(url, **{"x-ctxzip-disable": "true"})  # keep a reference: a dropped
    original = plain.models.generate_content(  # Client closes its HTTP client
        model="gemini-3-pro", contents=conversation(), config=CONFIG
    )
    sent_plain = upstream.last["json"]
    assert upstream.last["raw"] and sent_plain["contents"][2]["parts"][0]["functionResponse"][
        "response"]["packages"] == records()  # fmt: skip
    c = client(url)
    answer = c.models.generate_content(model="gemini-3-pro", contents=conversation(), config=CONFIG)
    assert answer.text.startswith("seen ") and original.text != answer.text
    assert answer.usage_metadata.cached_content_token_count == CACHED_TOKENS
    sent = upstream.last["json"]
    assert upstream.last["path"] == "/v1/models/gemini-3-pro:generateContent"  # SDK default
    assert upstream.last["headers"]["x-goog-api-key"] == "AIzaClientKey0123456789"
    assert "authorization" not in upstream.last["headers"]
    # systemInstruction, tools, cachedContent and the signed functionCall part: as sent
    assert _frozen(sent) == _frozen(sent_plain)
    assert sent["contents"][1]["parts"][0]["thoughtSignature"] == sent_plain["contents"][1][
        "parts"][0]["thoughtSignature"]  # fmt: skip
    # the tool result: same object shape, the record array still an array, shorter
    response = sent["contents"][2]["parts"][0]["functionResponse"]
    assert response["name"] == "pip_list" and set(response["response"]) == {"packages", "log",
                                                                             "exit"}  # fmt: skip
    packages = response["response"]["packages"]
    assert isinstance(packages, list) and len(packages) < 60
    assert {"name": "needle-lib", "version": "9.8.7", "size": 3.25} in packages
    assert packages[-1]["ctxzip_omitted"]["of"] == 120
    kept = [p for p in packages if "ctxzip_omitted" not in p]
    assert all(p in records() for p in kept)  # kept records unchanged
    log = response["response"]["log"]
    assert len(log) < len(build_log()) / 2 and "ERROR checksum mismatch" in log
    assert response["response"]["exit"] == 0
    # the user text followed the message policy (truncate at 0.5 in these tests)
    text = sent["contents"][0]["parts"][0]["text"]
    assert len(text) < len(sent_plain["contents"][0]["parts"][0]["text"])


def test_stream_generate_content_relays_sse(proxy, upstream):
    url, _, _ = proxy
    c = client(url, "v1beta")
    chunks = list(c.models.generate_content_stream(
        model="gemini-3-flash", contents=conversation(), config=CONFIG))  # fmt: skip
    assert "".join(c.text for c in chunks) == "w0 w1 w2 "
    assert chunks[-1].usage_metadata.cached_content_token_count == CACHED_TOKENS
    last = upstream.last
    assert last["path"] == "/v1beta/models/gemini-3-flash:streamGenerateContent"
    assert last["query"] == "alt=sse"
    packages = last["json"]["contents"][2]["parts"][0]["functionResponse"]["response"]["packages"]
    assert len(packages) < 60


def test_count_tokens_passes_through(proxy, upstream):
    url, _, _ = proxy
    c = client(url)
    result = c.models.count_tokens(model="gemini-3-pro", contents=conversation())
    assert result.total_tokens > 0
    last = upstream.last
    assert last["path"] == "/v1/models/gemini-3-pro:countTokens"
    assert last["json"]["contents"][2]["parts"][0]["functionResponse"]["response"][
        "packages"] == records()  # fmt: skip


def test_query_key_is_forwarded_and_never_logged(proxy, upstream, caplog):
    url, _, _ = proxy
    secret = "AIzaQuerySecret9876543210"
    body = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
    with caplog.at_level(logging.DEBUG):
        r = httpx.post(f"{url}/v1beta/models/gemini-3-pro:generateContent?key={secret}",
                       json=body, timeout=30)  # fmt: skip
    assert r.status_code == 200, r.text
    assert upstream.last["query"] == f"key={secret}"
    assert secret not in caplog.text


def test_server_key_replaces_the_clients(upstream):
    config = make_config(upstream.url, upstreams={
        "gemini": {"url": upstream.url + "/v1beta", "api_key": "AIzaServerKey000000000"}})  # fmt: skip
    with run_proxy(config) as (url, _):
        body = {"contents": [{"parts": [{"text": "hi"}]}]}
        r = httpx.post(f"{url}/v1beta/models/m:generateContent?key=client&alt=json", json=body,
                       headers={"x-goog-api-key": "client"}, timeout=30)  # fmt: skip
    assert r.status_code == 200
    assert upstream.last["query"] == "alt=json"
    assert upstream.last["headers"]["x-goog-api-key"] == "AIzaServerKey000000000"


def test_a_gemini_key_never_reaches_another_provider(proxy, upstream):
    url, _, _ = proxy
    r = httpx.post(f"{url}/v1/chat/completions", timeout=30,
                   headers={"x-goog-api-key": "AIzaNotForOpenAI", "authorization": "Bearer sk-o"},
                   json={"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]})  # fmt: skip
    assert r.status_code == 200
    assert "x-goog-api-key" not in upstream.last["headers"]
    assert upstream.last["headers"]["authorization"] == "Bearer sk-o"


def test_bad_bodies_get_gemini_errors(proxy, upstream):
    url, _, _ = proxy
    r = httpx.post(f"{url}/v1beta/models/m:generateContent", json={"contents": "hi"}, timeout=30)
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["status"] == "INVALID_ARGUMENT" and "contents" in error["message"]
    r = httpx.post(f"{url}/v1beta/models/m:generateContent", content=b"{", timeout=30)
    assert r.status_code == 400 and r.json()["error"]["code"] == 400
    r = httpx.post(f"{url}/v1beta/models/..%2f..%2fx:generateContent", json={}, timeout=30)
    assert r.status_code in (400, 404) and "error" in r.json()
    c = client(url)
    with pytest.raises(genai_errors.ClientError) as info:
        c.models.generate_content(model="error-429", contents="hi")
    assert info.value.code == 429
    assert not upstream.gemini_requests or all(
        "..%2f" not in r["path"] for r in upstream.gemini_requests)  # fmt: skip


def test_compress_endpoint_takes_gemini_bodies(proxy, upstream):
    url, _, _ = proxy
    body = {"contents": [
        {"role": "user", "parts": [{"text": "Which version of needle-lib?"}]},
        {"role": "model", "parts": [{"functionCall": {"name": "pip_list", "args": {}},
                                     "thoughtSignature": "c2lnbmF0dXJl"}]},
        {"role": "user", "parts": [{"functionResponse": {"name": "pip_list",
                                                          "response": {"packages": records()}}}]}],
        "systemInstruction": {"parts": [{"text": LONG_CONTEXT}]}}  # fmt: skip
    for query in ("?protocol=gemini", ""):  # explicit, and guessed from `contents`
        r = httpx.post(f"{url}/v1/compress{query}", json=body, timeout=30)
        assert r.status_code == 200, r.text
        out = r.json()
        assert out["systemInstruction"] == body["systemInstruction"]
        assert out["contents"][1] == body["contents"][1]
        packages = out["contents"][2]["parts"][0]["functionResponse"]["response"]["packages"]
        assert len(packages) < 60 and "applied" in r.headers["x-ctxzip-tool-results"]
    assert not upstream.requests  # nothing was forwarded
    r = httpx.post(f"{url}/v1/compress?protocol=gemini", json={"contents": []}, timeout=30)
    assert r.status_code == 400 and r.json()["error"]["status"] == "INVALID_ARGUMENT"


def test_prefix_rule_across_turns(proxy, upstream):
    url, _, _ = proxy
    history = conversation()
    c = client(url)
    c.models.generate_content(model="gemini-3-pro", contents=history, config=CONFIG)
    first = upstream.last["json"]["contents"]
    history += [types.Content(role="model", parts=[types.Part(text="needle-lib 9.8.7")]),
                types.Content(role="user", parts=[types.Part(text="And its size?")])]  # fmt: skip
    c.models.generate_content(model="gemini-3-pro", contents=history, config=CONFIG)
    second = upstream.last["json"]["contents"]
    assert second[: len(first)] == first
    assert json.dumps(second[: len(first)]) == json.dumps(first)


def test_usage_feeds_metrics_and_ledger(proxy, upstream):
    url, state, config = proxy
    c = client(url)
    c.models.generate_content(model="gemini-3-pro", contents=conversation(), config=CONFIG)
    metrics = httpx.get(url + "/metrics", timeout=30).text
    assert 'protocol="gemini"' in metrics
    deadline = time.time() + 10
    found = []
    while time.time() < deadline:
        state.recorder.flush()
        try:
            ledger = Ledger(config.ledger.path)
            try:
                found = [r for r in ledger.records() if r.route == "gemini"]
            finally:
                ledger.close()
        except sqlite3.OperationalError:
            found = []
        if found:
            break
        time.sleep(0.05)
    assert found, "no gemini row in the ledger"
    row = found[-1]
    assert row.model == "gemini-3-pro" and row.has_usage == 1
    assert row.input_tokens == 40 and row.cache_read_tokens == CACHED_TOKENS
    assert row.output_tokens == 3


def test_a_cut_stream_ends_with_a_gemini_error_event(proxy, upstream):
    url, _, _ = proxy
    body = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
    r = httpx.post(f"{url}/v1beta/models/cut:streamGenerateContent?alt=sse", json=body,
                   timeout=30)  # fmt: skip
    assert r.status_code == 200
    events = [e for e in r.text.replace("\r\n", "\n").split("\n\n") if e.strip()]
    assert len(events) == 3  # two chunks, then the error
    error = json.loads(events[-1].removeprefix("data: "))["error"]
    assert error["status"] == "UNAVAILABLE" and error["code"] == 502


def test_the_gemini_upstream_is_configurable_three_ways(tmp_path, monkeypatch):
    default = load_config(None, environ={})
    assert Upstreams(default).pick("gemini", "m").upstream.url == GEMINI_URL
    path = tmp_path / "proxy.toml"
    path.write_text('[upstreams.gemini]\nurl = "http://file:1/v1beta"\n')
    assert load_config(path, environ={}).upstreams["gemini"].url == "http://file:1/v1beta"
    env = {"CTXZIP_PROXY__UPSTREAMS__GEMINI__URL": "http://env:2/v1beta"}
    config = load_config(path, environ=env)
    assert Upstreams(config).pick("gemini", "m").upstream.url == "http://env:2/v1beta"
    monkeypatch.setenv("CTXZIP_PROXY__UPSTREAMS__GEMINI__URL", "http://env:2/v1beta")
    result = CliRunner().invoke(cli, ["proxy", "--config", str(path), "--gemini-upstream",
                                      "http://flag:3/v1beta", "--print-config"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["upstreams"]["gemini"]["url"] == "http://flag:3/v1beta"
