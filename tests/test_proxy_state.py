"""Shared proxy state: the in-process LRU, Redis, and two proxy replicas sharing one Redis.

The Redis tests start a real `redis-server` on loopback (installed by `make install`);
the replica test runs two `ctxzip proxy` processes on their own ports.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ctxzip.compressor import BaseCompressor, Compressed
from ctxzip.proxy.config import ConfigError, load_config
from ctxzip.proxy.state import MemoryStore, RedisStore, StateConfig, open_state
from ctxzip.result import CompressionRequest

HERE = Path(__file__).parent


class PidTagCompressor(BaseCompressor):
    """Keeps the first half of each context and signs it with the process id that did it."""

    name = "pid-tag"

    def _compress_requests(self, requests: list[CompressionRequest]) -> list[Compressed]:
        out = []
        for r in requests:
            texts = [f"{c[: len(c) // 2]} [pid {os.getpid()}]" for c in r.contexts]
            out.append(Compressed(kept=[[(0, len(c) // 2)] for c in r.contexts], texts=texts))
        return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(check: object, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if check():  # type: ignore[operator]
                return
        except Exception:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{what} not up after {seconds}s")


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.skip("redis-server is not installed (make install installs it)")
    port = free_port()
    proc = subprocess.Popen(
        [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:

        def ping() -> bool:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")

        _wait(ping, 20, "redis-server")
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


# ---- the interface, in process ---------------------------------------------------------


async def test_memory_store_lru_ttl_and_size_caps() -> None:
    store = MemoryStore(max_items=2, max_bytes=10, ttl_s=0.0, max_value_bytes=6)
    assert await store.set("a", b"1234")
    assert await store.set("b", b"5678")
    assert await store.get("a") == b"1234"  # a is now the most recent
    assert await store.set("c", b"9")  # over 2 items: b (least recent) goes
    assert await store.get_many(["a", "b", "c"]) == [b"1234", None, b"9"]
    assert not await store.set("big", b"1234567")  # over max_value_bytes: not stored
    assert await store.set("d", b"123456")  # 4 + 1 + 6 > 10 bytes: the oldest go
    assert await store.get("d") == b"123456" and len(store) <= 2
    assert await store.set("t", b"x", ttl_s=0.05)
    await asyncio.sleep(0.1)
    assert await store.get("t") is None
    await store.delete("d")
    assert await store.get("d") is None


def test_in_process_state_is_the_default() -> None:
    config = load_config(environ={})
    assert config.state.redis == ""
    one = open_state(config.state, "compression")
    two = open_state(config.state, "compression")
    assert isinstance(one, MemoryStore) and one is not two  # nothing shared between apps


def test_state_config_is_checked() -> None:
    with pytest.raises(ConfigError, match=r"state\.redis"):
        load_config(environ={}, overrides={"state": {"redis": "http://localhost:6379"}})
    with pytest.raises(ConfigError, match="ttl_s"):
        load_config(environ={}, overrides={"state": {"ttl_s": -1}})
    env = {"CTXZIP_PROXY__STATE__REDIS": "env:MY_REDIS", "MY_REDIS": "redis://u:pw@h:1/0"}
    config = load_config(environ=env)
    assert config.state.redis == "env:MY_REDIS"  # the secret stays out of the config
    assert "pw" not in json.dumps(config.to_dict())
    with pytest.raises(ValueError, match="MY_REDIS"):
        open_state(StateConfig(redis="env:MY_REDIS_UNSET"), "x")


# ---- Redis -----------------------------------------------------------------------------


async def test_redis_store_ttl_size_cap_and_raw_bytes(redis_url: str) -> None:
    config = StateConfig(redis=redis_url, prefix=f"t-{uuid.uuid4().hex[:8]}", max_value_bytes=8)
    store = open_state(config, "unit")
    assert isinstance(store, RedisStore)
    try:
        assert await store.set("k", b'["a"]')
        assert await store.get("k") == b'["a"]'
        raw = await store.client.get(f"{config.prefix}:unit:k")
        assert raw == b'["a"]'  # stored as given: JSON bytes, no pickle framing
        assert not await store.set("big", b"x" * 9)
        assert await store.get("big") is None
        assert await store.set("short", b"1", ttl_s=0.1)
        ttl_ms = await store.client.pttl(f"{config.prefix}:unit:short")
        assert 0 < ttl_ms <= 100
        await asyncio.sleep(0.25)
        assert await store.get_many(["short", "k", "none"]) == [None, b'["a"]', None]
        await store.delete("k")
        assert await store.get("k") is None
    finally:
        await store.close()


async def test_unreachable_redis_is_a_miss_not_a_failure() -> None:
    store = RedisStore(f"redis://127.0.0.1:{free_port()}/0", "x", StateConfig(timeout_s=0.2))
    try:
        assert await store.get("k") is None
        assert not await store.set("k", b"v")
        await store.delete("k")
    finally:
        await store.close()


# ---- two proxy replicas, one Redis -----------------------------------------------------


def _proxy(config: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": f"{HERE}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    with log.open("wb") as fh:
        return subprocess.Popen(
            [sys.executable, "-m", "ctxzip.cli", "proxy", "--config", str(config),
             "--port", str(port), "--log-level", "warning"],
            stdout=fh, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip


def _compress(base: str, text: str) -> str:
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": text}]}
    r = httpx.post(base + "/v1/compress", json=body, timeout=30)
    assert r.status_code == 200, r.text
    assert r.headers["x-ctxzip-compression"] == "applied"
    return str(r.json()["messages"][0]["content"])


def test_two_replicas_share_the_compression_cache(redis_url: str, tmp_path: Path) -> None:
    prefix = f"replicas-{uuid.uuid4().hex[:8]}"
    config = tmp_path / "proxy.toml"
    config.write_text(
        f"""
[upstreams.openai]
url = "http://127.0.0.1:9/v1"
[upstreams.anthropic]
url = "http://127.0.0.1:9/v1"
[compression]
method = "test_proxy_state:PidTagCompressor"
min_tokens = 5
[state]
redis = "{redis_url}"
prefix = "{prefix}"
"""
    )
    ports = [free_port(), free_port()]
    procs = [_proxy(config, p, tmp_path / f"proxy{i}.log") for i, p in enumerate(ports)]
    try:
        bases = [f"http://127.0.0.1:{p}" for p in ports]
        for base, proc in zip(bases, procs, strict=True):
            _wait(lambda b=base: httpx.get(b + "/readyz").status_code == 200, 90, base)
            assert proc.poll() is None
        pid_a, pid_b = procs[0].pid, procs[1].pid
        text = "Replica state test. " + " ".join(f"word{i}" for i in range(80))
        first = _compress(bases[0], text)
        assert first.endswith(f"[pid {pid_a}]")
        # replica B answers from what replica A stored: A's signature, no work of its own
        assert _compress(bases[1], text) == first
        other = _compress(bases[1], text + " and more")
        assert other.endswith(f"[pid {pid_b}]")
        assert _compress(bases[0], text + " and more") == other

        import redis

        client = redis.Redis.from_url(redis_url)
        keys = client.keys(f"{prefix}:compression:*")
        assert len(keys) == 2
        values = [json.loads(client.get(k)) for k in keys]  # JSON lists of texts
        assert sorted(v[0] for v in values) == sorted([first, other])
        client.close()
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=20)
    logs = [(tmp_path / f"proxy{i}.log").read_text() for i in range(2)]
    assert not any("Traceback" in log for log in logs), logs
