"""Issue 20: what a client sees when the upstream or the input misbehaves.

Real HTTP on loopback, the real `openai` and `anthropic` SDKs where client behaviour is
the point, and a raw upstream (`fault_upstream`) that breaks at the socket level.
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import socket
import time
import tracemalloc
import zlib

import anthropic
import fault_upstream
import httpx
import openai
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from test_proxy_fakes import (
    LONG_CONTEXT,
    make_config,
    run_proxy,
    running_upstream,
    serve,
)

from ctxzip.compressor import BaseCompressor, Compressed

KINDS_STREAM = ("cut", "short", "midevent", "malformed")


@pytest.fixture(scope="module")
def faulty():
    with fault_upstream.serve(stall_s=2.0) as url:
        yield url


@pytest.fixture(scope="module")
def proxy(faulty):
    config = make_config(faulty, timeouts={"read_s": 1.0, "retries": 0})
    with run_proxy(config) as (url, state):
        yield url, state


def metric(url: str, name: str) -> float:
    for line in httpx.get(url + "/metrics").text.splitlines():
        if line.split(" ")[0] == name:
            return float(line.split()[-1])
    return 0.0


def clients(url: str) -> tuple[openai.OpenAI, anthropic.Anthropic]:
    return (
        openai.OpenAI(base_url=url + "/v1", api_key="sk-test", max_retries=0),
        anthropic.Anthropic(base_url=url, api_key="sk-ant-test", max_retries=0),
    )


def test_lone_surrogate_is_handled_not_a_500(proxy):
    url, _ = proxy
    for path, extra in (("/v1/chat/completions", ""), ("/v1/messages", ',"max_tokens":5')):
        # the JSON escape as literal text, as JavaScript's JSON.stringify emits it
        body = (
            '{"model":"m","messages":[{"role":"user","content":"hi \\ud800 there '
            + LONG_CONTEXT
            + '"}]'
            + extra
            + "}"
        )
        r = httpx.post(url + path, content=body.encode(), timeout=30,
                       headers={"content-type": "application/json"})  # fmt: skip
        assert r.status_code == 200, r.text
        assert r.headers["x-ctxzip-compression"] == "skipped; reason=invalid_text"


def test_cut_or_reset_non_stream_reply_is_a_typed_error_never_half_json(proxy):
    url, _ = proxy
    oa, an = clients(url)
    for kind in ("cut", "reset", "malformed"):
        with pytest.raises(openai.APIStatusError) as err:
            oa.chat.completions.create(model=f"fault-{kind}",
                                       messages=[{"role": "user", "content": "hi"}])  # fmt: skip
        assert err.value.status_code == 502
        with pytest.raises(anthropic.APIStatusError) as aerr:
            an.messages.create(model=f"fault-{kind}", max_tokens=5,
                               messages=[{"role": "user", "content": "hi"}])  # fmt: skip
        assert aerr.value.status_code == 502
    # and a sound reply still parses in both
    assert (
        oa.chat.completions.create(model="ok", messages=[{"role": "user", "content": "hi"}])
        .choices[0]
        .message.content.startswith("hello")
    )
    assert (
        an.messages.create(model="ok", max_tokens=5, messages=[{"role": "user", "content": "hi"}])
        .content[0]
        .text.startswith("hello")
    )


@pytest.mark.parametrize("kind", KINDS_STREAM)
def test_broken_streams_raise_typed_errors_in_both_sdks(proxy, kind):
    url, _ = proxy
    oa, an = clients(url)
    got = []
    with pytest.raises(openai.APIError) as err:
        for chunk in oa.chat.completions.create(
            model=f"fault-{kind}", messages=[{"role": "user", "content": "hi"}], stream=True
        ):
            got += [c.delta.content for c in chunk.choices]
    assert not isinstance(err.value, json.JSONDecodeError)
    assert "upstream" in str(err.value)
    with (
        pytest.raises(anthropic.APIError) as aerr,
        an.messages.stream(
            model=f"fault-{kind}", max_tokens=5, messages=[{"role": "user", "content": "hi"}]
        ) as stream,
    ):
        for _ in stream:
            pass
    assert "upstream" in str(aerr.value)
    # a whole stream still completes in both
    text = "".join(
        c.choices[0].delta.content or ""
        for c in oa.chat.completions.create(
            model="ok", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        if c.choices
    )
    assert text.startswith("tok0 ")
    with an.messages.stream(model="ok", max_tokens=5,
                            messages=[{"role": "user", "content": "hi"}]) as stream:  # fmt: skip
        assert stream.get_final_message().stop_reason == "end_turn"


@pytest.mark.parametrize("kind", KINDS_STREAM)
def test_broken_responses_streams_raise_typed_errors(proxy, kind):
    url, _ = proxy
    oa, _ = clients(url)
    with pytest.raises(openai.APIError) as err:
        for _ in oa.responses.create(model=f"fault-{kind}", input="hi", stream=True):
            pass
    assert "upstream" in str(err.value)
    # a whole stream completes; a cut or malformed body is a 502, never half a JSON document
    events = list(oa.responses.create(model="ok", input="hi", stream=True))
    assert events[-1].type == "response.completed"
    assert events[-1].response.output_text.startswith("tok0 ")
    for bad in ("cut", "malformed"):
        with pytest.raises(openai.InternalServerError) as cut:
            oa.responses.create(model=f"fault-{bad}", input="hi")
        assert cut.value.status_code == 502
    assert oa.responses.create(model="ok", input="hi").output_text.startswith("hello")


def test_midevent_reset_never_sends_half_an_event(proxy):
    url, _ = proxy
    body = {"model": "fault-midevent", "stream": True,
            "messages": [{"role": "user", "content": "hi"}]}  # fmt: skip
    raw = httpx.post(url + "/v1/chat/completions", json=body, timeout=10).content
    events = [e for e in raw.split(b"\n\n") if e]
    for event in events:
        assert event.startswith(b"data: ")
        json.loads(event[6:])  # every event is whole
    assert b'"upstream_stream"' in events[-1]


def test_each_failure_is_counted_exactly_once(faulty):
    config = make_config(faulty, timeouts={"read_s": 1.0, "retries": 0})
    with run_proxy(config) as (url, _):
        for kind in ("cut", "short", "midevent"):
            for _ in range(3):
                httpx.post(url + "/v1/chat/completions", timeout=10, json={
                    "model": f"fault-{kind}", "stream": True,
                    "messages": [{"role": "user", "content": "hi"}]})  # fmt: skip
        for _ in range(4):
            httpx.post(url + "/v1/chat/completions", timeout=10, json={
                "model": "fault-cut", "messages": [{"role": "user", "content": "hi"}]})  # fmt: skip
        for _ in range(5):
            httpx.post(url + "/v1/messages", timeout=10, json={
                "model": "fault-reset", "max_tokens": 5,
                "messages": [{"role": "user", "content": "hi"}]})  # fmt: skip
        for _ in range(2):
            httpx.post(url + "/v1/chat/completions", timeout=10, json={
                "model": "fault-malformed", "messages": [{"role": "user", "content": "hi"}]})  # fmt: skip
        time.sleep(0.2)
        assert metric(url, 'ctxzip_proxy_failures_total{kind="upstream_stream"}') == 13
        assert metric(url, 'ctxzip_proxy_failures_total{kind="upstream_error"}') == 5
        assert metric(url, 'ctxzip_proxy_failures_total{kind="upstream_malformed"}') == 2
        assert metric(url, 'ctxzip_proxy_requests_total{route="chat",status="502"}') == 6


class _Capture(logging.Handler):
    """Formats with uvicorn's own access formatter, as a deployment would."""

    def __init__(self) -> None:
        from uvicorn.logging import AccessFormatter

        super().__init__(logging.DEBUG)
        self.stream = io.StringIO()
        self.setFormatter(AccessFormatter('%(client_addr)s - "%(request_line)s" %(status_code)s'))

    def emit(self, record: logging.LogRecord) -> None:
        self.stream.write(self.format(record) + "\n")  # raises on a broken record


@pytest.mark.parametrize("trusted", [False, True])
def test_access_log_works_redacts_query_secrets_and_ignores_forwarded_for(faulty, trusted, capfd):
    server = {"log_level": "debug"}
    if trusted:
        server |= {"proxy_headers": True, "forwarded_allow_ips": ["127.0.0.1"]}
    config = make_config(faulty, server=server)
    capture = _Capture()
    access = logging.getLogger("uvicorn.access")
    with run_proxy(config) as (url, _):
        access.addHandler(capture)
        try:
            secret = "S3cr3tV4lue"
            q = (f"?sig={secret}1&signature={secret}2&token={secret}3&key={secret}4"
                 f"&secret={secret}5&password={secret}6&X-Amz-Signature={secret}7&limit=3")  # fmt: skip
            r = httpx.get(url + "/v1/models" + q, headers={"x-forwarded-for": "10.9.9.9"})
            assert r.status_code == 200
        finally:
            access.removeHandler(capture)
    line = capture.stream.getvalue()
    err = capfd.readouterr().err
    assert "Logging error" not in err and "Traceback" not in err
    assert "/v1/models?sig=[REDACTED]" in line and "limit=3" in line
    assert secret not in line + err
    assert ("10.9.9.9" in line) is trusted


def _raw(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=10)


def _closed(sock: socket.socket, within: float) -> tuple[bool, bytes]:
    sock.settimeout(within)
    got = b""
    try:
        while chunk := sock.recv(65536):
            got += chunk
        return True, got
    except TimeoutError:
        return False, got
    except ConnectionResetError:
        return True, got


def test_slow_and_idle_clients_are_closed(faulty):
    config = make_config(faulty, server={"header_timeout_s": 0.5, "body_timeout_s": 0.5,
                                         "idle_timeout_s": 1.0, "max_connections": 6})  # fmt: skip
    with run_proxy(config) as (url, _):
        idle = _raw(url)  # half-open: connects, sends nothing
        trickle = _raw(url)
        trickle.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n")  # never ends
        body = _raw(url)
        body.sendall(b"POST /v1/messages HTTP/1.1\r\nhost: x\r\ncontent-type: application/json"
                     b"\r\ncontent-length: 100\r\n\r\n{\"model\"")  # fmt: skip
        start = time.perf_counter()
        assert _closed(idle, 3)[0]
        assert _closed(trickle, 3)[0]
        closed, got = _closed(body, 3)
        assert closed and got.startswith(b"HTTP/1.1 408")
        assert json.loads(got.split(b"\r\n\r\n", 1)[1])["error"]["type"] == "timeout_error"
        assert time.perf_counter() - start < 2.5
        # the connection cap: past it, a new connection is closed at once
        held = [_raw(url) for _ in range(6)]
        time.sleep(0.1)
        extra = _raw(url)
        assert _closed(extra, 0.3)[0]
        for s in [*held, idle, trickle, body, extra]:
            s.close()
        assert httpx.get(url + "/healthz").status_code == 200


def test_streaming_body_limit_stops_reading_and_closes(faulty):
    config = make_config(faulty, limits={"max_body_bytes": 64 * 1024})
    with run_proxy(config) as (url, _):
        sock = _raw(url)
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n"
                     b"transfer-encoding: chunked\r\ncontent-type: application/json\r\n\r\n")  # fmt: skip
        chunk = b"x" * 16384
        sent = 0
        sock.settimeout(0.05)
        reply = b""
        while sent < 64 * 1024 * 1024:
            try:
                sock.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
                sent += len(chunk)
            except OSError:
                break
            try:
                reply += sock.recv(65536)
            except TimeoutError:
                continue
            if b"\r\n\r\n" in reply:
                break
        assert reply.startswith(b"HTTP/1.1 413"), reply[:100]
        assert b"connection: close" in reply.lower()
        assert sent < 8 * 1024 * 1024  # it stopped reading long before the client stopped
        assert _closed(sock, 3)[0]


def test_routes_paths_and_headers(faulty):
    with running_upstream() as fake:
        config = make_config(fake.url)
        with run_proxy(config) as (url, _):
            # trailing slash: the chat route (validated, compressed), not a pass-through
            r = httpx.post(url + "/v1/chat/completions/", json={"model": "m", "messages": []})
            assert r.status_code == 400 and r.json()["error"]["param"] == "messages"
            r = httpx.post(url + "/v1/messages/", json={
                "model": "m", "max_tokens": 5,
                "messages": [{"role": "user", "content": LONG_CONTEXT}]})  # fmt: skip
            assert r.status_code == 200 and r.headers["x-ctxzip-compression"] == "applied"
            # 404s in the caller's protocol
            r = httpx.get(url + "/nope", headers={"anthropic-version": "2023-06-01"})
            assert r.status_code == 404 and r.json()["type"] == "error"
            r = httpx.get(url + "/nope")
            assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error"
            # no server key: only the credential header of the upstream's protocol travels
            both = {"authorization": "Bearer sk-openai-key", "x-api-key": "sk-ant-key"}
            body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
            httpx.post(url + "/v1/chat/completions", json=body, headers=both)
            assert fake.last["headers"].get("authorization") == "Bearer sk-openai-key"
            assert "x-api-key" not in fake.last["headers"]
            httpx.post(url + "/v1/messages", json={**body, "max_tokens": 5}, headers=both)
            assert fake.last["headers"].get("x-api-key") == "sk-ant-key"
            assert "authorization" not in fake.last["headers"]
            oauth = {"authorization": "Bearer oauth-token"}
            httpx.post(url + "/v1/messages", json={**body, "max_tokens": 5}, headers=oauth)
            assert fake.last["headers"].get("authorization") == "Bearer oauth-token"
            # header syntax errors: a 400 in the protocol's shape
            for path, shape in (("/v1/messages", "type"), ("/v1/chat/completions", "error")):
                sock = _raw(url)
                sock.sendall(f"POST {path} HTTP/1.1\r\nhost: x\r\nbad header line\r\n\r\n"
                             .encode())  # fmt: skip
                _, got = _closed(sock, 3)
                assert got.startswith(b"HTTP/1.1 400"), got[:80]
                error = json.loads(got.split(b"\r\n\r\n", 1)[1])
                assert shape in error and (shape == "error" or error["type"] == "error")


# ---- the prefix rule and nothing dropped silently ----------------------------------------


class QueryDependent(BaseCompressor):
    """Keeps the sentences sharing a word with a digit in it (``topic3``) with the query."""

    name = "query-dependent"

    def _compress_requests(self, requests):
        out = []
        for r in requests:
            words = {w.strip("?.:") for w in (r.query or "").lower().split()}
            words = {w for w in words if any(ch.isdigit() for ch in w)}
            kept = []
            for text in r.contexts:
                spans, pos = [], 0
                for sentence in text.split(". "):
                    end = pos + len(sentence)
                    if words & {w.strip("?.:") for w in sentence.lower().split()}:
                        spans.append((pos, end))
                    pos = end + 2
                kept.append(spans or [(0, min(len(text), 40))])
            out.append(Compressed(kept=kept))
        return out


class Emptying(BaseCompressor):
    name = "emptying-all"

    def _compress_requests(self, requests):
        return [Compressed(kept=[[] for _ in r.contexts]) for r in requests]


def _turn_text(t: int) -> str:
    facts = ". ".join(
        f"Turn {t} fact {i}: room {i + t} stores {i * 3 + t} crates of topic{(i + t) % 9}"
        for i in range(30)
    )
    return f"<context>{facts}.</context> Question {t}: which room stores crates of topic{t}?"


@pytest.mark.parametrize("protocol", ["openai", "anthropic"])
def test_prefix_rule_six_turns_byte_identical_prefixes(protocol):
    with running_upstream() as fake:
        config = make_config(fake.url, compression={
            "method": "test_proxy_faults:QueryDependent", "min_tokens": 40, "rate": 0.5,
            "tags": ["context"]})  # fmt: skip
        path = "/v1/chat/completions" if protocol == "openai" else "/v1/messages"
        with run_proxy(config) as (url, _):
            messages: list[dict] = []
            sent: list[list[dict]] = []
            raws: list[bytes] = []
            for t in range(6):
                messages.append({"role": "user", "content": _turn_text(t)})
                body = {"model": "m", "messages": messages, "max_tokens": 5}
                r = httpx.post(url + path, json=body, timeout=30)
                assert r.status_code == 200
                assert r.headers["x-ctxzip-compression"] == "applied"
                sent.append(fake.last["json"]["messages"])
                raws.append(fake.last["raw"])
                messages.append({"role": "assistant", "content": f"answer {t}"})
            for t in range(1, 6):
                assert sent[t][: len(sent[t - 1])] == sent[t - 1]
                # byte for byte: the earlier request's messages are a prefix of this one's
                old = raws[t - 1]
                cut = old.index(b'"messages":[') + len(b'"messages":[')
                last = json.dumps(sent[t - 1][-1], ensure_ascii=False, separators=(",", ":"))
                end = old.index(last.encode()) + len(last.encode())
                assert raws[t][:end] == old[:end] and end > cut


def test_giant_word_passes_through_with_a_reason_and_emptied_is_not_applied(faulty):
    with running_upstream() as fake:
        config = make_config(fake.url, compression={"min_tokens": 40, "rate": 0.5})
        with run_proxy(config) as (url, _):
            content = "Please summarise this blob: " + "Q" * 200_000
            body = {"model": "m", "messages": [{"role": "user", "content": content}]}
            r = httpx.post(url + "/v1/chat/completions", json=body, timeout=60)
            assert r.status_code == 200
            assert r.headers["x-ctxzip-compression"] == "unchanged; reason=oversized_word"
            assert fake.last["json"]["messages"][0]["content"] == content
        config = make_config(fake.url, compression={
            "method": "test_proxy_faults:Emptying", "min_tokens": 40})  # fmt: skip
        with run_proxy(config) as (url, _):
            body = {"model": "m", "messages": [{"role": "user", "content": LONG_CONTEXT}]}
            r = httpx.post(url + "/v1/chat/completions", json=body, timeout=30)
            assert r.headers["x-ctxzip-compression"] == "unchanged; reason=emptied"
            assert fake.last["json"]["messages"][0]["content"] == LONG_CONTEXT
            assert metric(url, 'ctxzip_proxy_uncompressed_total{reason="emptied"}') == 1


def _gzip_json_bomb(decoded_mb: int) -> bytes:
    """A gzip JSON reply of `decoded_mb` MiB once decoded, a few hundred KiB as sent."""
    pack = zlib.compressobj(9, zlib.DEFLATED, 31)
    parts = [pack.compress(b'{"text": "')]
    block = b"x" * (1024 * 1024)
    parts += [pack.compress(block) for _ in range(decoded_mb)]
    parts += [pack.compress(b'"}'), pack.flush()]
    return b"".join(parts)


def test_a_gzip_reply_is_checked_with_bounded_memory():
    """The "never half a JSON" check decodes a gzip reply; a reply that decodes to far more
    than any answer is relayed as sent once the check passes its cap, instead of being
    inflated whole in the proxy (74 MiB at the peak here; 605 MiB before the cap)."""
    bomb, broken = _gzip_json_bomb(300), gzip.compress(b'{"text": "cut')

    async def reply(request: Request) -> Response:
        body = bomb if (await request.json())["model"] == "bomb" else broken
        return Response(body, headers={"content-type": "application/json",
                                       "content-encoding": "gzip"})  # fmt: skip

    app = Starlette(routes=[Route("/v1/chat/completions", reply, methods=["POST"])])
    with serve(app) as upstream, run_proxy(make_config(upstream)) as (url, _):
        chat = {"messages": [{"role": "user", "content": "hi"}]}
        tracemalloc.start()
        try:
            with httpx.stream("POST", url + "/v1/chat/completions", timeout=60,
                              json={"model": "bomb", **chat}) as raw:  # fmt: skip
                sent = b"".join(raw.iter_raw())
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert raw.status_code == 200 and sent == bomb  # relayed byte for byte
        assert peak < 128 * 1024 * 1024, f"peak {peak / 2**20:.0f} MiB"
        cut = httpx.post(url + "/v1/chat/completions", json={"model": "cut", **chat}, timeout=10)
        assert cut.status_code == 502  # a small broken body is still caught
