"""Fail-open/closed, timeouts, retries, overrides, tags, ranges, secrets in logs, batching."""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import ClassVar

import httpx
import openai
import pytest
from test_proxy_fakes import (
    LONG_CONTEXT,
    FakeUpstream,
    free_port,
    make_config,
    run_proxy,
    running_upstream,
)

from ctxzip.compressor import BaseCompressor, Compressed
from ctxzip.compressors.truncate import TruncateCompressor


class ExplodingCompressor(BaseCompressor):
    name = "exploding"

    def _compress_requests(self, requests):
        raise RuntimeError("model crashed")


class SlowCompressor(BaseCompressor):
    name = "slow"

    def _compress_requests(self, requests):
        time.sleep(2.5)
        return [Compressed(kept=[[(0, 5)] for _ in r.contexts]) for r in requests]


class EmptyingCompressor(BaseCompressor):
    """Finds nothing relevant (as extractive does below its threshold)."""

    name = "emptying"

    def _compress_requests(self, requests):
        return [Compressed(kept=[[] for _ in r.contexts]) for r in requests]


class CountingCompressor(TruncateCompressor):
    """truncate, recording the size of every batch it is handed."""

    name = "counting"
    batches: ClassVar[list[int]] = []
    lock = threading.Lock()

    def _compress_requests(self, requests):
        time.sleep(0.05)  # long enough for concurrent requests to queue up
        with self.lock:
            CountingCompressor.batches.append(len(requests))
        return super()._compress_requests(requests)


EXPLODING = "test_proxy_failures:ExplodingCompressor"
SLOW = "test_proxy_failures:SlowCompressor"
COUNTING = "test_proxy_failures:CountingCompressor"
EMPTYING = "test_proxy_failures:EmptyingCompressor"


@pytest.fixture(scope="module")
def upstream():
    with running_upstream() as fake:
        yield fake


@pytest.fixture(autouse=True)
def _reset(upstream):
    upstream.reset()


def chat(url: str, content: str = LONG_CONTEXT, headers: dict | None = None, **extra):
    body = {"model": "m", "messages": [{"role": "user", "content": content}], **extra}
    return httpx.post(url + "/v1/chat/completions", json=body, headers=headers or {}, timeout=30)


def metric(url: str, name: str) -> float:
    for line in httpx.get(url + "/metrics").text.splitlines():
        if line.startswith(name + " ") or (line.startswith(name + "{") and line.split()[0] == name):
            return float(line.split()[-1])
    return 0.0


def test_compressor_error_fails_open_and_is_counted(upstream):
    config = make_config(upstream.url, compression={"method": EXPLODING})
    with run_proxy(config) as (url, _):
        r = chat(url)
        assert r.status_code == 200
        assert r.headers["x-ctxzip-compression"] == "skipped; reason=compression_error"
        assert upstream.last["json"]["messages"][0]["content"] == LONG_CONTEXT  # the original
        assert metric(url, 'ctxzip_proxy_failures_total{kind="compression_error"}') == 1


def test_a_message_never_goes_upstream_empty(upstream):
    config = make_config(upstream.url, compression={"method": EMPTYING})
    with run_proxy(config) as (url, _):
        assert chat(url).status_code == 200
        assert upstream.last["json"]["messages"][0]["content"] == LONG_CONTEXT


def test_compressor_error_fail_closed_answers_in_protocol(upstream):
    config = make_config(upstream.url, compression={"method": EXPLODING, "on_error": "fail_closed"})
    with run_proxy(config) as (url, _):
        r = chat(url)
        assert r.status_code == 500 and r.json()["error"]["code"] == "compression_error"
        r = httpx.post(
            url + "/v1/messages",
            json={
                "model": "m",
                "max_tokens": 5,
                "messages": [{"role": "user", "content": LONG_CONTEXT}],
            },
        )
        assert r.status_code == 500 and r.json()["type"] == "error"
    assert upstream.requests == []


def test_compressor_timeout_fails_open(upstream):
    # no admission budget: the slow compressor is queued, and the deadline is what stops it
    config = make_config(upstream.url, compression={"method": SLOW, "timeout_s": 0.2,
                                                    "latency_budget_s": None})  # fmt: skip
    with run_proxy(config) as (url, _):
        start = time.perf_counter()
        r = chat(url)
        assert time.perf_counter() - start < 2.0  # answered before the compressor finished
        assert r.status_code == 200
        assert r.headers["x-ctxzip-compression"] == "skipped; reason=compression_timeout"
        assert upstream.last["json"]["messages"][0]["content"] == LONG_CONTEXT
        assert metric(url, 'ctxzip_proxy_failures_total{kind="compression_timeout"}') == 1
        # the late result is kept: once it lands, the same request goes compressed at once
        deadline = time.perf_counter() + 10
        while (r := chat(url)).headers["x-ctxzip-compression"] != "applied":
            assert time.perf_counter() < deadline
            time.sleep(0.2)
        assert upstream.last["json"]["messages"][0]["content"] == LONG_CONTEXT[:5]


def test_connect_errors_retried_then_502_in_protocol():
    dead = f"http://127.0.0.1:{free_port()}"
    config = make_config(dead, timeouts={"retries": 2, "backoff_s": 0.05})
    with run_proxy(config) as (url, _):
        start = time.perf_counter()
        r = chat(url, "hi")
        assert time.perf_counter() - start >= 0.05 + 0.1  # two backoffs
        assert r.status_code == 502 and r.json()["error"]["code"] == "upstream_connect"
        assert "3 attempts" in r.json()["error"]["message"]
        r = httpx.post(
            url + "/v1/messages",
            json={"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]},
        )
        assert r.status_code == 502 and r.json()["type"] == "error"
        assert metric(url, 'ctxzip_proxy_failures_total{kind="upstream_connect"}') == 2


def test_connect_retry_succeeds_when_upstream_comes_up(upstream):
    port = free_port()
    late = FakeUpstream()
    config = make_config(f"http://127.0.0.1:{port}", timeouts={"retries": 8, "backoff_s": 0.1})
    with run_proxy(config) as (url, _):
        results = []
        t = threading.Thread(target=lambda: results.append(chat(url, "hi")))
        t.start()
        time.sleep(0.3)
        import uvicorn

        server = uvicorn.Server(uvicorn.Config(late.app, host="127.0.0.1", port=port,
                                               log_level="warning"))  # fmt: skip
        st = threading.Thread(target=server.run, daemon=True)
        st.start()
        t.join(20)
        server.should_exit = True
        st.join(5)
    assert results[0].status_code == 200 and len(late.requests) == 1


def test_stalled_upstream_times_out_with_504(upstream):
    config = make_config(upstream.url, timeouts={"read_s": 0.3})
    with run_proxy(config) as (url, _):
        body = {"model": "stall", "messages": [{"role": "user", "content": "hi"}]}
        r = httpx.post(url + "/v1/chat/completions", json=body, timeout=10)
        assert r.status_code == 504 and r.json()["error"]["code"] == "upstream_timeout"


def test_override_headers_only_where_allowed(upstream):
    config = make_config(upstream.url, overrides={"allow": ["disable"]})
    with run_proxy(config) as (url, _):
        r = chat(url, headers={"x-ctxzip-disable": "true"})
        assert r.status_code == 200 and r.headers["x-ctxzip-compression"] == "disabled"
        assert upstream.last["json"]["messages"][0]["content"] == LONG_CONTEXT
        r = chat(url, headers={"x-ctxzip-rate": "0.2"})
        assert r.status_code == 403 and r.json()["error"]["type"] == "permission_error"
        r = chat(url, headers={"x-ctxzip-method": "noop"})
        assert r.status_code == 403
    config = make_config(upstream.url,
                         overrides={"allow": ["rate", "method", "disable"], "methods": ["noop"]})  # fmt: skip
    with run_proxy(config) as (url, _):
        r = chat(url, headers={"x-ctxzip-rate": "0.2"})
        small = upstream.last["json"]["messages"][0]["content"]
        r2 = chat(url)
        default = upstream.last["json"]["messages"][0]["content"]
        assert r.status_code == 200 and len(small) < len(default) < len(LONG_CONTEXT)
        r = chat(url, headers={"x-ctxzip-method": "noop"})
        assert r.headers["x-ctxzip-method"] == "noop"
        assert upstream.last["json"]["messages"][0]["content"] == LONG_CONTEXT
        assert chat(url, headers={"x-ctxzip-method": "extractive-x"}).status_code == 403
        assert chat(url, headers={"x-ctxzip-rate": "2"}).status_code == 400
        assert r2.status_code == 200
    # the operator's master switch: headers cannot turn compression on
    config = make_config(upstream.url, compression={"enabled": False},
                         overrides={"allow": ["rate"]})  # fmt: skip
    with run_proxy(config) as (url, _):
        r = chat(url, headers={"x-ctxzip-rate": "0.2"})
        assert r.headers["x-ctxzip-compression"] == "disabled"
        assert upstream.last["json"]["messages"][0]["content"] == LONG_CONTEXT


def test_tagged_regions_and_range_table(upstream):
    config = make_config(upstream.url, compression={
        "tags": ["context"], "min_tokens": 40, "rate": 0.5,
        "ranges": [{"above": 40, "rate": 0.8}, {"above": 400, "rate": 0.3}],
    })  # fmt: skip
    with run_proxy(config) as (url, _):
        question = "Question: which room holds 21 boxes? Answer briefly."
        content = f"Instructions stay.\n<context>{LONG_CONTEXT}</context>\n{question}"
        chat(url, content)
        sent = upstream.last["json"]["messages"][0]["content"]
        assert sent.startswith("Instructions stay.\n<context>")
        assert sent.endswith(f"</context>\n{question}")
        inner = sent[len("Instructions stay.\n<context>") : -len(f"</context>\n{question}")]
        assert 0.2 * len(LONG_CONTEXT) < len(inner) < 0.45 * len(LONG_CONTEXT)  # >400: rate 0.3
        medium = LONG_CONTEXT[:700]  # about 150 tokens: the 0.8 row
        chat(url, f"<context>{medium}</context>")
        inner = upstream.last["json"]["messages"][0]["content"][9:-10]
        assert 0.7 * len(medium) < len(inner) < 0.9 * len(medium)
        chat(url, "<context>short text here</context>")  # under min_tokens: untouched
        assert upstream.last["json"]["messages"][0]["content"] == (
            "<context>short text here</context>"
        )
        chat(url, LONG_CONTEXT)  # no tags: nothing may change
        assert upstream.last["json"]["messages"][0]["content"] == LONG_CONTEXT


def test_server_side_key_replaces_client_key_and_no_secret_is_logged(upstream, caplog, capfd):
    canary_server = "canary-SERVER-9f8e7d6c5b4a"
    canary_client = "sk-canary-CLIENT-0a1b2c3d4e5f"
    from ctxzip.proxy.config import load_config

    env = {"CTXZIP_TEST_UPSTREAM_KEY": canary_server}
    config = load_config(None, environ=env, overrides={
        "upstreams": {"openai": {"url": upstream.url + "/v1",
                                 "api_key": "env:CTXZIP_TEST_UPSTREAM_KEY"}},
        "compression": {"method": EXPLODING},
        "server": {"log_level": "debug"},
    })  # fmt: skip
    caplog.set_level(logging.DEBUG)
    with run_proxy(config) as (url, state):
        client = openai.OpenAI(base_url=url + "/v1", api_key=canary_client, max_retries=0)
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
        client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": LONG_CONTEXT}]
        )  # compressor fails: a warning is logged
        assert upstream.last["headers"]["authorization"] == f"Bearer {canary_server}"
        # log lines that try hard to leak: messages, args, exceptions, extras
        log = logging.getLogger("ctxzip.proxy.test")
        log.debug("client sent Authorization: Bearer %s", canary_client)
        log.info("config key %s", canary_server)
        try:
            raise ValueError(f"bad key {canary_server}")
        except ValueError:
            log.exception("failure")
        logging.getLogger("httpx").debug("headers %r", {"x-api-key": canary_client})
        printed = httpx.get(url + "/metrics").text + str(state.config.to_dict())
    captured = capfd.readouterr()
    everything = caplog.text + captured.out + captured.err + printed
    assert "compression failed" in caplog.text and "[REDACTED]" in caplog.text
    assert canary_server not in everything
    assert canary_client not in everything
    assert "canary-SERVER" not in everything


def test_concurrent_requests_share_batched_compressor_calls(upstream):
    CountingCompressor.batches = []
    config = make_config(upstream.url, compression={"method": COUNTING, "cache_size": 0,
                                                    "latency_budget_s": None})  # fmt: skip
    with run_proxy(config) as (url, _):
        CountingCompressor.batches = []  # forget the warm-up call
        contents = [f"Request {i}. {LONG_CONTEXT}" for i in range(12)]
        with ThreadPoolExecutor(12) as pool:
            replies = list(pool.map(lambda c: chat(url, c), contents))
        assert all(r.status_code == 200 for r in replies)
        assert sum(CountingCompressor.batches) == 12
        assert max(CountingCompressor.batches) > 1  # some requests shared a forward pass
        assert len(CountingCompressor.batches) < 12
        # the event loop stayed free while compressing: health answered at once
        assert httpx.get(url + "/healthz", timeout=1).status_code == 200
