"""The savings ledger end to end: real SDKs -> proxy -> an upstream that bills with a cache.

Every case goes over HTTP on loopback through the real proxy; the upstream
(`savings_fakes.BillingUpstream`) reports usage blocks shaped like the real APIs',
cached and uncached, streamed and not.
"""

from __future__ import annotations

import json
import sqlite3
import time
import zlib
from pathlib import Path

import anthropic
import httpx
import openai
import pytest
from savings_fakes import BillingUpstream
from test_proxy_fakes import LONG_CONTEXT, make_config, run_proxy, serve

from ctxzip.cli import main
from ctxzip.proxy.config import ConfigError, load_config
from ctxzip.proxy.ledger import CacheModel, Ledger, Record, prefix_marks
from ctxzip.proxy.pricing import PricingError, TokenSplit, cost, load_prices
from ctxzip.proxy.usage import UsageTap

SYSTEM = "You answer from the archive notes. " + LONG_CONTEXT  # ~600 tokens, never compressed
NOTES = " ".join(f"Note {i}: shelf {i} in hall {i % 7} keeps {i * 3} maps." for i in range(120))


@pytest.fixture()
def billing(tmp_path):
    fake = BillingUpstream()
    with serve(fake.app) as url:
        config = make_config(url, ledger={"path": str(tmp_path / "ledger.db")},
                             overrides={"allow": ["disable", "rate"]})  # fmt: skip
        with run_proxy(config) as (proxy_url, state):
            yield proxy_url, state, fake, tmp_path / "ledger.db"


def rows(state, path: Path, count: int) -> list[Record]:
    """The ledger's rows once `count` are there (a response is recorded after its last
    byte went out, so the client may be a moment ahead)."""
    deadline = time.time() + 10
    while True:
        state.recorder.flush()
        try:
            ledger = Ledger(path)
            try:
                found = ledger.records()
            finally:
                ledger.close()
        except sqlite3.OperationalError:  # the proxy's writer holds the file: look again
            if time.time() > deadline:
                raise
            found = []
        if len(found) >= count or time.time() > deadline:
            return found
        time.sleep(0.02)


def oai(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key="sk-secret-canary-1", max_retries=0)


def chat(question: str = "Which hall keeps shelf 9?") -> list[dict]:
    return [{"role": "system", "content": SYSTEM},
            {"role": "user", "content": NOTES + "\n" + question}]  # fmt: skip


# ---- OpenAI chat -------------------------------------------------------------------------


def test_openai_usage_recorded_uncached_then_cached(billing):
    url, state, _, path = billing
    client = oai(url)
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=chat())
    assert raw.headers["content-encoding"] == "gzip"  # relayed compressed: the tap decodes it
    first = raw.parse()
    second = client.chat.completions.create(model="gpt-4o", messages=chat())
    assert first.usage.prompt_tokens_details.cached_tokens == 0
    assert second.usage.prompt_tokens_details.cached_tokens > 1024  # same compressed prompt
    a, b = rows(state, path, 2)
    assert (a.route, a.protocol, a.model, a.method, a.compression) == (
        "chat", "openai", "gpt-4o", "truncate", "applied")  # fmt: skip
    assert a.tokens_before > a.tokens_after > 0 and a.has_usage
    assert (a.input_tokens, a.cache_read_tokens, a.output_tokens) == (
        first.usage.prompt_tokens, 0, first.usage.completion_tokens)  # fmt: skip
    assert b.cache_read_tokens == second.usage.prompt_tokens_details.cached_tokens
    prices = load_prices()
    paid, full = a.dollars(prices)
    assert full > paid > 0  # first time: every removed token saved at the full price
    # the repeat: the counterfactual would have read its longer prefix from the cache too,
    # so the removed tokens are worth the cached price, not the list price
    paid_b, full_b = b.dollars(prices)
    assert 0 < full_b - paid_b < full - paid
    assert b.est_cache_read_tokens > b.cache_read_tokens


def test_openai_stream_usage_from_the_last_chunk(billing):
    url, state, _, path = billing
    stream = oai(url).chat.completions.create(
        model="gpt-4o-mini", messages=chat(), stream=True, stream_options={"include_usage": True}
    )
    usage = [c.usage for c in stream if c.usage is not None]
    (row,) = rows(state, path, 1)
    assert row.stream == 1 and row.has_usage and row.result == "ok"
    assert (row.input_tokens, row.output_tokens) == (usage[0].prompt_tokens, 7)


def test_openai_stream_without_usage_is_recorded_without_money(billing):
    url, state, _, path = billing
    list(oai(url).chat.completions.create(model="gpt-4o", messages=chat(), stream=True))
    (row,) = rows(state, path, 1)
    assert row.has_usage == 0 and row.compression == "applied"
    assert row.dollars(load_prices()) is None


def test_compression_that_breaks_the_cache_shows_a_loss(billing):
    """Turn 1 goes uncompressed and the provider caches it; turn 2 repeats that history,
    compressed, so its prefix no longer matches and the cache misses: the ledger must
    price the miss as a loss, not a saving."""
    url, state, _, path = billing
    client = oai(url)
    turn1 = chat()
    client.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=turn1, extra_headers={"X-Ctxzip-Disable": "true"}
    )
    turn2 = [*turn1, {"role": "assistant", "content": "Hall 2."},
             {"role": "user", "content": "And shelf 10?"}]  # fmt: skip
    reply = client.chat.completions.create(model="gpt-4o", messages=turn2)
    assert reply.usage.prompt_tokens_details.cached_tokens == 0  # the miss, as billed
    first, second = rows(state, path, 2)
    assert first.compression == "disabled" and first.removed == 0
    assert first.est_input_tokens == first.input_tokens  # nothing changed: nothing estimated
    assert second.compression == "applied" and second.cache_read_tokens == 0
    assert second.est_cache_read_tokens > 1024  # uncompressed, it would have hit
    paid, uncompressed = second.dollars(load_prices())
    assert uncompressed - paid < 0
    out = httpx.get(url + "/metrics").text
    saved = [line for line in out.splitlines() if line.startswith("ctxzip_proxy_dollars_saved{")]
    assert saved and float(saved[0].split()[-1]) < 0


# ---- OpenAI Responses (pass-through route) -------------------------------------------------


def test_responses_usage_streamed_and_not(billing):
    url, state, _, path = billing
    client = oai(url)
    items = [{"role": "user", "content": NOTES}]
    response = client.responses.create(model="gpt-4.1", instructions=SYSTEM, input=items)
    with client.responses.stream(model="gpt-4.1", instructions=SYSTEM, input=items) as stream:
        final = stream.get_final_response()
    a, b = rows(state, path, 2)
    # /v1/responses is a compressing route: its rows carry the outcome like chat's do
    assert a.route == b.route == "responses" and a.compression == b.compression == "applied"
    assert a.tokens_after < a.tokens_before
    assert (a.input_tokens, a.output_tokens) == (response.usage.input_tokens, 5)
    assert b.stream == 1 and b.cache_read_tokens == final.usage.input_tokens_details.cached_tokens
    assert b.cache_read_tokens > 0 and b.model == "gpt-4.1"


# ---- Anthropic ---------------------------------------------------------------------------


def claude_body() -> dict:
    system = [{"type": "text", "text": SYSTEM + " " + NOTES[:2500],
               "cache_control": {"type": "ephemeral"}}]  # fmt: skip
    return {"model": "claude-sonnet-4-5", "max_tokens": 64, "system": system,
            "messages": [{"role": "user", "content": NOTES + "\nWhich hall keeps shelf 9?"}]}  # fmt: skip


def test_anthropic_cache_write_then_read(billing):
    url, state, _, path = billing
    client = anthropic.Anthropic(base_url=url, api_key="sk-ant-canary-2", max_retries=0)
    first = client.messages.create(**claude_body())
    with client.messages.stream(**claude_body()) as stream:
        second = stream.get_final_message()
    a, b = rows(state, path, 2)
    assert first.usage.cache_creation_input_tokens > 1024
    assert a.cache_write_tokens == first.usage.cache_creation_input_tokens
    assert a.input_tokens == (first.usage.input_tokens + first.usage.cache_creation_input_tokens
                              + first.usage.cache_read_input_tokens)  # fmt: skip
    assert b.stream == 1 and b.cache_read_tokens == second.usage.cache_read_input_tokens > 1024
    assert (b.cache_write_tokens, b.output_tokens) == (0, 6)
    assert a.compression == b.compression == "applied" and a.protocol == "anthropic"
    prices = load_prices()
    for row in (a, b):  # the compressed text sits after the breakpoint: always a saving
        paid, full = row.dollars(prices)
        assert full > paid
    # a cache write costs 1.25x, a read 0.1x: the write request cost far more
    assert a.dollars(prices)[0] > 2 * b.dollars(prices)[0]


def test_anthropic_automatic_caching_broken_by_compression_is_a_loss(billing):
    """With top-level automatic caching the whole history is cached; compressing a turn
    that first went uncompressed turns the next request's cache read into a cache write."""
    url, state, _, path = billing
    client = anthropic.Anthropic(base_url=url, api_key="sk-ant-canary-3", max_retries=0)
    body = {"model": "claude-haiku-4-5", "max_tokens": 64, "system": SYSTEM,
            "extra_body": {"cache_control": {"type": "ephemeral"}},
            "messages": [{"role": "user", "content": NOTES + "\nWhich hall keeps shelf 9?"}]}  # fmt: skip
    client.messages.create(**body, extra_headers={"X-Ctxzip-Disable": "true"})
    body["messages"] += [{"role": "assistant", "content": "Hall 2."},
                         {"role": "user", "content": "And shelf 10?"}]  # fmt: skip
    with client.messages.stream(**body) as stream:
        usage = stream.get_final_message().usage
    assert usage.cache_read_input_tokens == 0 and usage.cache_creation_input_tokens > 1024
    first, second = rows(state, path, 2)
    assert first.cache_write_tokens > 1024 and first.compression == "disabled"
    assert second.compression == "applied" and second.cache_write_tokens > 1024
    assert second.est_cache_read_tokens > 1024 and second.est_cache_write_tokens == 0
    paid, uncompressed = second.dollars(load_prices())
    assert uncompressed < paid  # the re-write at 1.25x cost more than compression saved


# ---- no secrets, no text ---------------------------------------------------------------------


def test_ledger_holds_no_text_or_keys(billing):
    url, state, _, path = billing
    oai(url).chat.completions.create(model="gpt-4o", messages=chat())
    rows(state, path, 1)
    raw = path.read_bytes() + b"".join(p.read_bytes() for p in path.parent.glob("ledger.db*"))
    assert b"sk-secret-canary-1" not in raw
    assert b"shelf" not in raw and b"archive" not in raw


def test_ledger_off_or_unwritable_never_fails_a_request(tmp_path):
    fake = BillingUpstream()
    blocked = tmp_path / "file"
    blocked.write_text("")  # a file where the ledger's folder should be
    with serve(fake.app) as up:
        for ledger in ({"enabled": False, "path": str(tmp_path / "off.db")},
                       {"path": str(blocked / "ledger.db")}):  # fmt: skip
            with run_proxy(make_config(up, ledger=ledger)) as (url, state):
                for stream in (False, True):
                    r = httpx.post(url + "/v1/chat/completions", json={
                        "model": "gpt-4o", "messages": chat(), "stream": stream})  # fmt: skip
                    assert r.status_code == 200
                state.recorder.flush()
    assert not (tmp_path / "off.db").exists()


def test_ledger_config_from_environment():
    config = load_config(None, environ={"CTXZIP_PROXY__LEDGER__MAX_ROWS": "5",
                                        "CTXZIP_PROXY__LEDGER__PATH": "/tmp/x.db",
                                        "CTXZIP_PROXY__PRICING__PATH": "p.toml"})  # fmt: skip
    assert (config.ledger.max_rows, config.ledger.path, config.pricing.path) == (
        5, "/tmp/x.db", "p.toml")  # fmt: skip
    with pytest.raises(ConfigError):
        load_config(None, environ={"CTXZIP_PROXY__LEDGER__MAX_ROWS": "0"})


# ---- the report ----------------------------------------------------------------------------


def test_savings_command_table_json_and_plot(billing, capsys):
    url, state, _, path = billing
    client = oai(url)
    client.chat.completions.create(model="gpt-4o", messages=chat())
    client.chat.completions.create(model="gpt-4o-mini", messages=chat())
    rows(state, path, 2)
    plot = path.parent / "savings.png"
    code = main(["savings", "--ledger", str(path), "--by", "model", "--plot", str(plot)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "gpt-4o-mini" in out and "total" in out
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    code = main(["savings", "--ledger", str(path), "--by", "method", "--json", "--no-plot",
                 "--since", "1h"])  # fmt: skip
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["groups"][0]["key"] == "truncate"
    assert report["total"]["requests"] == 2 and report["total"]["saved_usd"] > 0


def test_savings_command_errors(tmp_path, capsys):
    assert main(["savings", "--ledger", str(tmp_path / "none.db")]) == 2
    assert "no ledger" in capsys.readouterr().err
    Ledger(tmp_path / "l.db").close()
    assert main(["savings", "--ledger", str(tmp_path / "l.db"), "--since", "soon"]) == 2


# ---- pieces --------------------------------------------------------------------------------


def test_tap_reads_usage_fed_byte_by_byte_and_stays_bounded():
    events = [b'data: {"choices":[],"usage":null}\n\n',
              b'data: {"model":"m","usage":{"prompt_tokens":50,"completion_tokens":2,'
              b'"prompt_tokens_details":{"cached_tokens":32}}}\r\n\r\n', b"data: [DONE]\n\n"]  # fmt: skip
    tap = UsageTap("openai", is_sse=True)
    for byte in b"".join(events):
        tap.feed(bytes([byte]))
    usage = tap.usage()
    assert (usage.input, usage.cache_read, usage.output, usage.model) == (50, 32, 2, "m")
    big = UsageTap("anthropic", is_sse=True)
    big.feed(b"data: " + b"x" * (3 * 1024 * 1024))  # an event over the cap: dropped
    big.feed(b'\n\ndata: {"type":"message_delta","usage":{"output_tokens":3}}\n\n')
    assert len(big._buf) == 0 and big.usage().output == 3
    body = b'{"content":"' + b"y" * (5 * 1024 * 1024) + b'","usage":{"input_tokens":9,' \
        b'"cache_read_input_tokens":4,"output_tokens":1}}'  # fmt: skip
    whole = UsageTap("anthropic", is_sse=False)
    for i in range(0, len(body), 65536):
        whole.feed(body[i : i + 65536])
    assert len(whole._buf) <= 4 * 1024 * 1024
    assert (whole.usage().input, whole.usage().cache_read) == (13, 4)
    assert UsageTap("openai", is_sse=False).usage() is None


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "zstd", "br"])
def test_tap_decodes_compressed_responses(encoding):
    body = json.dumps({"id": "x", "content": "z" * 100_000, "usage": {
        "prompt_tokens": 70, "completion_tokens": 2}}).encode()  # fmt: skip
    if encoding == "gzip":
        packed = zlib.compressobj(9, zlib.DEFLATED, 31)
        data = packed.compress(body) + packed.flush()
    elif encoding == "deflate":
        data = zlib.compress(body)
    elif encoding == "zstd":
        zstandard = pytest.importorskip("zstandard")
        data = zstandard.ZstdCompressor().compress(body)
    else:
        data = b"\x0b\x02\x80not really brotli"
    tap = UsageTap("openai", is_sse=False, encoding=encoding)
    for i in range(0, len(data), 100):
        tap.feed(data[i : i + 100])
    usage = tap.usage()
    if encoding == "br":  # not readable here: no usage, and no error either
        assert usage is None
    else:
        assert (usage.input, usage.output) == (70, 2)


def test_ledger_rotates(tmp_path):
    ledger = Ledger(tmp_path / "l.db", max_rows=5)
    row = Record(0, "chat", "openai", "gpt-4o", "truncate", "applied", "", 200, "ok", 0,
                 10, 5, 1, 100, 0, 0, 0, 1, 105, 0, 0)  # fmt: skip
    for i in range(12):
        ledger.add([Record(**{**row.__dict__, "ts": float(i)})])
    kept = ledger.records()
    assert [r.ts for r in kept] == [7.0, 8.0, 9.0, 10.0, 11.0]
    assert len(ledger.records(since=10.0)) == 2
    ledger.close()
    assert (tmp_path / "l.db").stat().st_mode & 0o077 == 0


def test_prices_override_and_cost(tmp_path):
    table = load_prices()
    assert table.as_of and table.lookup("gpt-4o-mini-2024-07-18").input == 0.15
    assert table.lookup("claude-sonnet-4-5-20250929").cache_write == 1.25
    assert table.lookup("local-model") is None
    # 1M cached-read tokens on Claude cost a tenth, written ones a quarter more
    price = table.lookup("claude-sonnet-4-5")
    assert cost(price, TokenSplit(0, 1_000_000, 0, 0)) == pytest.approx(0.3)
    assert cost(price, TokenSplit(0, 0, 1_000_000, 0, 1_000_000)) == pytest.approx(6.0)
    override = tmp_path / "prices.yaml"
    override.write_text("as_of: '2026-12-01'\nmodels:\n  - {match: 'gpt-4o', provider: openai, "
                        "input: 1.0, output: 2.0}\n  - {match: 'my-*', input: 0.5, output: 1}\n")  # fmt: skip
    table = load_prices(override)
    assert table.as_of == "2026-12-01" and table.lookup("gpt-4o").input == 1.0
    assert table.lookup("gpt-4o-2024-08-06").input == 2.5  # the default glob still applies
    assert table.lookup("my-model").cache_read == 0.5  # provider factors by default
    override.write_text("models:\n  - {match: 'x', input: -1, output: 1}\n")
    with pytest.raises(PricingError):
        load_prices(override)


def test_cache_model_expires_and_needs_a_minimum():
    body = {"model": "m", "messages": [{"role": "user", "content": "a" * 100},
                                       {"role": "user", "content": "b"}]}  # fmt: skip
    marks, cacheable = prefix_marks(body, "openai")
    assert cacheable == len(marks) == 3
    model = CacheModel(ttl_s=10)
    now = time.time()
    assert model.observe(marks, cacheable, 5000, "openai", now) == 0  # first sight: no hit
    assert model.observe(marks, cacheable, 5000, "openai", now + 5) == 4992  # 128-token steps
    assert model.observe(marks, cacheable, 500, "openai", now + 6) == 0  # under the minimum
    assert model.observe(marks, cacheable, 5000, "openai", now + 100) == 0  # expired
    # Anthropic caches only up to its last breakpoint (none: nothing)
    assert prefix_marks(body, "anthropic")[1] == 0
    marked = {**body, "system": [{"type": "text", "text": "s", "cache_control": {}}]}
    assert prefix_marks(marked, "anthropic")[1] == 1
