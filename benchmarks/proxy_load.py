"""Fault and load modes of benchmarks/bench_proxy.py (issues 18 and 20).

    TOKENIZERS_PARALLELISM=false .venv/bin/python benchmarks/bench_proxy.py --mode faults
    TOKENIZERS_PARALLELISM=false .venv/bin/python benchmarks/bench_proxy.py --mode load \\
        --concurrency 8,32

faults: 1,000 requests at 32 concurrent through the real `openai` and `anthropic` async
SDKs (max_retries=0), half each protocol, half streaming, with 5% seeded faults of each
kind (reset, cut, stall, 5xx, 429, malformed) from a raw upstream
(tests/fault_upstream.py). Reported per kind and protocol: what the client saw (a
complete reply, or which SDK error). Then: every failure counted exactly once on
/metrics, no stack trace in the proxy's log, the proxy alive.

load: the issue-18 mix: OpenAI and Anthropic, streaming and not, half the requests
carrying a ~2,000-token retrieved context, 5% upstream faults, `--method` (default
extractive, static first stage). The same plan runs straight against the upstream
first; reported: the share of long requests compressed, p50/p95/p99 latency direct and
through the proxy, and of the added latency per request (proxy minus direct, same request), uncompressed requests by reason (and any without
one), the proxy's CPU in the second after the load, and its RSS after 100/500/1,000
replies. Every reply is checked: complete, or an error in the caller's protocol.

Upstream and proxy run as separate processes; everything is loopback.
"""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_proxy import free_port, launch_proxy, pct  # noqa: E402

FAULTS = ("reset", "cut", "stall", "500", "429", "malformed")


def start_upstream(stall_s: float) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    tests = str(ROOT / "tests")
    code = (
        f"import sys; sys.path.insert(0, {tests!r}); import fault_upstream; "
        f"fault_upstream.serve_forever({port}, {stall_s!r})"
    )
    proc = subprocess.Popen([sys.executable, "-c", code])
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 20
    while time.time() < deadline:
        try:
            httpx.get(url + "/v1/models", timeout=1)
            break
        except httpx.HTTPError:
            time.sleep(0.1)
    return proc, url


def start_proxy(upstream: str, method: str, env: dict[str, str] | None = None,
                log: Path | None = None) -> tuple[subprocess.Popen[bytes], str]:  # fmt: skip
    sections = f"""
[upstreams.openai]
url = "{upstream}/v1"
[upstreams.anthropic]
url = "{upstream}/v1"
[compression]
method = "{method}"
min_tokens = 100
rate = 0.33
[timeouts]
read_s = 1.0
retries = 0
"""
    # the first run distils the static model
    return launch_proxy(sections, log_level="info", env=env, log=log, ready_s=900)


def failures(proxy: str) -> dict[str, float]:
    out = {}
    for line in httpx.get(proxy + "/metrics").text.splitlines():
        if line.startswith("ctxzip_proxy_failures_total{") and not line.endswith(" 0.0"):
            out[line.split('kind="')[1].split('"')[0]] = float(line.split()[-1])
    return out


# ---- faults through the SDKs ----------------------------------------------------------


async def _sdk_call(oa: Any, an: Any, protocol: str, stream: bool, model: str) -> str:
    """What the client saw: "complete" or the SDK error's class name."""
    import anthropic
    import openai

    messages = [{"role": "user", "content": "hello"}]
    try:
        if protocol == "openai":
            if stream:
                done = False
                async for chunk in await oa.chat.completions.create(
                    model=model, messages=messages, stream=True
                ):
                    done = done or any(c.finish_reason for c in chunk.choices)
                return "complete" if done else "incomplete (no finish_reason)"
            r = await oa.chat.completions.create(model=model, messages=messages)
            return "complete" if r.choices[0].message.content else "empty"
        if stream:
            async with an.messages.stream(model=model, max_tokens=5, messages=messages) as s:
                final = await s.get_final_message()
            return "complete" if final.stop_reason else "incomplete (no stop_reason)"
        r = await an.messages.create(model=model, max_tokens=5, messages=messages)
        return "complete" if r.content else "empty"
    except (openai.APIError, anthropic.APIError) as exc:
        status = getattr(exc, "status_code", None)
        return type(exc).__name__ + (f" {status}" if status else "")
    except Exception as exc:  # not typed: a failure of the proxy's contract
        return f"UNTYPED {type(exc).__name__}"


async def _faults(proxy: str, n: int, concurrency: int, seed: int) -> dict[tuple[str, str], Counter[str]]:  # fmt: skip
    import anthropic
    import openai

    rng = random.Random(seed)
    plan = [k for k in FAULTS for _ in range(n // 20)]  # 5% each
    plan += ["none"] * (n - len(plan))
    rng.shuffle(plan)
    oa = openai.AsyncOpenAI(base_url=proxy + "/v1", api_key="sk-bench", max_retries=0,
                            timeout=30)  # fmt: skip
    an = anthropic.AsyncAnthropic(base_url=proxy, api_key="sk-ant-bench", max_retries=0,
                                  timeout=30)  # fmt: skip
    sem = asyncio.Semaphore(concurrency)
    seen: dict[tuple[str, str], Counter[str]] = {}

    async def run(i: int, kind: str) -> None:
        protocol = "openai" if i % 2 == 0 else "anthropic"
        stream = (i // 2) % 2 == 0
        model = f"fault-{kind}" if kind != "none" else "ok"
        async with sem:
            got = await _sdk_call(oa, an, protocol, stream, model)
        key = (kind, f"{protocol}{' stream' if stream else ''}")
        seen.setdefault(key, Counter())[got] += 1

    await asyncio.gather(*[run(i, k) for i, k in enumerate(plan)])
    await oa.close()
    await an.close()
    return seen


def fault_mode(requests: int, concurrency: int, seed: int = 20) -> None:
    upstream_proc, upstream = start_upstream(stall_s=3.0)
    log = Path(tempfile.mkdtemp()) / "proxy.log"
    proc, proxy = start_proxy(upstream, "truncate", log=log)
    try:
        start = time.perf_counter()
        seen = asyncio.run(_faults(proxy, requests, concurrency, seed))
        seconds = time.perf_counter() - start
        alive = httpx.get(proxy + "/healthz").status_code == 200
        counted = failures(proxy)
    finally:
        proc.terminate()
        proc.wait(10)
        upstream_proc.terminate()
    text = log.read_text(errors="replace")
    print(f"\n## Faults: {requests} requests through the openai and anthropic SDKs, "
          f"{concurrency} concurrent, 5% of each fault kind ({seconds:.0f} s)")  # fmt: skip
    print("| fault | protocol | what the client saw |")
    print("|---|---|---|")
    untyped = 0
    for (kind, protocol), got in sorted(seen.items()):
        untyped += sum(v for k, v in got.items() if k.startswith(("UNTYPED", "incomplete")))
        shown = ", ".join(f"{k} x{v}" for k, v in got.most_common())
        print(f"| {kind} | {protocol} | {shown} |")
    per_kind = Counter()
    for (kind, _), got in seen.items():
        per_kind[kind] += sum(got.values())
    expect = {
        "upstream_error": per_kind["reset"],
        "upstream_stream": per_kind["cut"],
        "upstream_timeout": per_kind["stall"],
        "upstream_malformed": per_kind["malformed"],
    }
    print(f"- untyped errors or silently incomplete replies: {untyped}")
    print(f"- failures counted: {counted}; expected exactly {expect}: "
          f"{all(counted.get(k, 0) == v for k, v in expect.items())}")  # fmt: skip
    print(f"- stack traces in the proxy log: {text.count('Traceback')}; "
          f"'Logging error': {text.count('Logging error')}; proxy alive after: {alive}")  # fmt: skip


# ---- load -------------------------------------------------------------------------------


def context(i: int, tokens: int = 2000) -> str:
    topics = ["the harbour", "the old mill", "the railway", "the library", "the market",
              "the bridge", "the school", "the museum"]  # fmt: skip
    out = []
    j = 0
    while len(out) * 46 < tokens:  # about 46 tokens a document
        t = topics[(i + j) % len(topics)]
        out.append(f"Document {i}.{j} about {t}. The records show that {t} was rebuilt in "
                   f"{1800 + (i + j) * 7} after a storm damaged {(i + j) % 5 + 2} of its "
                   f"walls. Historians note it cost {(i * 31 + j) * 113} crowns.")  # fmt: skip
        j += 1
    return "\n\n".join(out) + f"\n\nQuestion {i}: when was the old mill rebuilt?"


def _plan(n: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    plan = []
    for i in range(n):
        fault = rng.choice(FAULTS) if rng.random() < 0.05 else None
        plan.append({
            "i": i, "protocol": "openai" if rng.random() < 0.5 else "anthropic",
            "stream": rng.random() < 0.5, "long": rng.random() < 0.5, "fault": fault,
        })  # fmt: skip
    return plan


async def _send(client: httpx.AsyncClient, base: str, item: dict[str, Any]) -> dict[str, Any]:
    content = context(item["i"]) if item["long"] else f"hello {item['i']}"
    model = f"fault-{item['fault']}" if item["fault"] else "ok"
    body: dict[str, Any] = {"model": model, "stream": item["stream"],
                            "messages": [{"role": "user", "content": content}]}  # fmt: skip
    path = "/v1/chat/completions"
    if item["protocol"] == "anthropic":
        path, body["max_tokens"] = "/v1/messages", 5
    start = time.perf_counter()
    try:
        async with client.stream("POST", base + path, json=body) as r:
            data = b"".join([c async for c in r.aiter_raw()])
    except httpx.HTTPError as exc:
        return {**item, "seconds": time.perf_counter() - start, "ok": False,
                "why": f"client error {type(exc).__name__}"}  # fmt: skip
    seconds = time.perf_counter() - start
    ok = _well_formed(item["protocol"], r.status_code, r.headers.get("content-type", ""), data)
    return {**item, "seconds": seconds, "ok": ok, "status": r.status_code,
            "compression": r.headers.get("x-ctxzip-compression")}  # fmt: skip


def _well_formed(protocol: str, status: int, ctype: str, data: bytes) -> bool:
    if "text/event-stream" in ctype:
        end = b"data: [DONE]" if protocol == "openai" else b"event: message_stop"
        last = data.rstrip().rsplit(b"\n\n", 1)[-1]
        return end in last or b"error" in last
    try:
        body = json.loads(data)
    except ValueError:
        return False
    if status >= 400:
        return ("error" in body) if protocol == "openai" else body.get("type") == "error"
    return True


async def _run(base: str, plan: list[dict[str, Any]], concurrency: int,
               on_done: Any = None) -> list[dict[str, Any]]:  # fmt: skip
    sem = asyncio.Semaphore(concurrency)
    # idle pooled connections expire before the proxy's 5 s keep-alive closes them
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency,
                          keepalive_expiry=3.0)  # fmt: skip
    results: list[dict[str, Any]] = []
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:

        async def one(item: dict[str, Any]) -> None:
            async with sem:
                results.append(await _send(client, base, item))
            if on_done is not None:
                on_done(len(results))

        await asyncio.gather(*[one(item) for item in plan])
    return sorted(results, key=lambda r: r["i"])


def load_mode(requests: int, concurrencies: list[int], method: str, seed: int = 18,
              budget: float | None = None) -> None:  # fmt: skip
    upstream_proc, upstream = start_upstream(stall_s=3.0)
    env = {"CTXZIP_PROXY__COMPRESSION__LATENCY_BUDGET_S": str(budget)} if budget else {}
    try:
        for concurrency in concurrencies:
            plan = _plan(requests, seed)
            direct = asyncio.run(_run(upstream, plan, concurrency))
            log = Path(tempfile.mkdtemp()) / "proxy.log"
            proc, proxy = start_proxy(upstream, method, env, log)
            p = psutil.Process(proc.pid)
            rss: dict[int, float] = {0: p.memory_info().rss / 2**20}

            def sample(done: int, p: psutil.Process = p, rss: dict[int, float] = rss) -> None:
                if done in (100, 500, 1000):
                    rss[done] = p.memory_info().rss / 2**20

            start = time.perf_counter()
            via = asyncio.run(_run(proxy, plan, concurrency, sample))
            seconds = time.perf_counter() - start
            time.sleep(1.0)
            cpu0 = sum(p.cpu_times()[:2])
            time.sleep(2.0)
            cpu_after = (sum(p.cpu_times()[:2]) - cpu0) / 2.0 * 100
            counted = failures(proxy)
            alive = httpx.get(proxy + "/healthz").status_code == 200
            proc.terminate()
            proc.wait(10)
            _report(concurrency, method, plan, direct, via, seconds, rss, cpu_after, counted,
                    alive, log.read_text(errors="replace"))  # fmt: skip
    finally:
        upstream_proc.terminate()


def _report(concurrency: int, method: str, plan: list[dict[str, Any]],
            direct: list[dict[str, Any]], via: list[dict[str, Any]], seconds: float,
            rss: dict[int, float], cpu_after: float, counted: dict[str, float], alive: bool,
            log: str) -> None:  # fmt: skip
    clean = [(d, v) for d, v in zip(direct, via, strict=True) if not d["fault"]]
    long_ = [(d, v) for d, v in clean if d["long"]]
    short = [(d, v) for d, v in clean if not d["long"]]
    compressed = sum(1 for _, v in long_ if (v.get("compression") or "").startswith("applied"))
    reasons = Counter(
        (v.get("compression") or "no header")
        for _, v in long_ if not (v.get("compression") or "").startswith("applied")
    )  # fmt: skip
    silent = sum(1 for _, v in clean if v.get("status") == 200 and not v.get("compression"))
    malformed = [v for v in via if not v["ok"]]
    print(f"\n## Load: {len(plan)} requests, {concurrency} concurrent, method {method} "
          f"({seconds:.0f} s, {len(plan) / seconds:.0f} req/s); "
          f"{sum(1 for x in plan if x['fault'])} with upstream faults")  # fmt: skip
    print(f"- long requests compressed: {compressed}/{len(long_)} "
          f"({100 * compressed / max(1, len(long_)):.1f}%)")  # fmt: skip
    print(f"- uncompressed long requests by reason: {dict(reasons)}")
    print(f"- replies without an X-Ctxzip-Compression header: {silent}")
    print("| requests | direct p50/p95/p99 ms | proxy p50/p95/p99 ms | added p50/p95/p99 ms "
          "(per request: proxy - direct) |")  # fmt: skip
    print("|---|---|---|---|")
    for name, pairs in (("long", long_), ("short", short)):
        d = [x["seconds"] for x, _ in pairs]
        v = [y["seconds"] for _, y in pairs]
        added = [b - a for a, b in zip(d, v, strict=True)]
        cols = ["/".join(f"{1000 * pct(xs, q):.0f}" for q in (0.5, 0.95, 0.99))
                for xs in (d, v, added)]  # fmt: skip
        print(f"| {name} | {cols[0]} | {cols[1]} | {cols[2]} |")
    print(f"- replies not complete and not a protocol error: {len(malformed)}"
          + (f" e.g. {malformed[:2]}" if malformed else ""))  # fmt: skip
    print(f"- proxy CPU in the 2 s starting 1 s after the last reply: {cpu_after:.0f}%")
    print("- proxy RSS MiB: " + ", ".join(f"after {k}: {v:.0f}" for k, v in sorted(rss.items())))
    print(f"- failures counted: {counted}; stack traces in log: {log.count('Traceback')}; "
          f"alive: {alive}")  # fmt: skip
