"""Proxy overhead, compression cost, and a load + fault test, all measured in one run.

    TOKENIZERS_PARALLELISM=false .venv/bin/python benchmarks/bench_proxy.py

1. Overhead: the same streaming request sent straight to a fast local upstream and
   through the proxy with compression disabled; p50/p99 latency (whole stream read) at
   1 and at 32 concurrent streams, and requests/s at 32. The difference is the proxy's.
2. Compression: a 4,000-token RAG request through the proxy with extractive
   compression (truncate if extractive is not installed); the compression time comes
   from the proxy's own X-Ctxzip-Compression-Ms header.
Modes `--mode faults` and `--mode load` (benchmarks/proxy_load.py): faults through the
real SDKs per kind and protocol, and the compression load mix with added latency.

3. Load + faults: 1,000 streaming requests at 32 concurrent, 5% of them hitting an
   injected upstream fault (HTTP 500, connection reset, stall past the read timeout,
   stream cut mid-way). Every reply must be a complete stream or a well-formed error;
   the proxy must survive; its memory (RSS) is sampled as the run goes.

Upstream and proxy run as separate processes (the upstream is a raw asyncio HTTP/1.1
server, so it can misbehave at the socket level).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
CHUNKS = 10

# ---- the upstream (runs in its own process) ----------------------------------------------


def _sse_body() -> list[bytes]:
    base = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    out = []
    for i in range(CHUNKS):
        delta = {"content": f"tok{i} "}
        choice = {"index": 0, "delta": delta, "finish_reason": None}
        out.append(f"data: {json.dumps({**base, 'choices': [choice]})}\n\n".encode())
    out.append(b"data: [DONE]\n\n")
    return out


async def _handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    events = _sse_body()
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            body = await reader.readexactly(length) if length else b""
            fault = "none"
            if body:
                model = json.loads(body).get("model", "")
                fault = model.removeprefix("fault-") if model.startswith("fault-") else "none"
            if fault == "500":
                payload = b'{"error": {"message": "injected", "type": "server_error"}}'
                writer.write(b"HTTP/1.1 500 Internal Server Error\r\ncontent-type: "
                             b"application/json\r\ncontent-length: "
                             + str(len(payload)).encode() + b"\r\n\r\n" + payload)  # fmt: skip
                await writer.drain()
                continue
            if fault == "reset":
                sock = writer.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                writer.transport.abort()
                return
            if fault == "stall":
                await asyncio.sleep(3)
                if reader.at_eof() or writer.transport.is_closing():
                    return  # the proxy gave up on us, as it should
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                         b"transfer-encoding: chunked\r\n\r\n")  # fmt: skip
            for i, event in enumerate(events):
                if fault == "cut" and i == 3:
                    writer.transport.abort()
                    return
                writer.write(f"{len(event):x}\r\n".encode() + event + b"\r\n")
            writer.write(b"0\r\n\r\n")
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


def serve_upstream(port: int) -> None:
    async def main() -> None:
        server = await asyncio.start_server(_handle, "127.0.0.1", port, backlog=1024)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


# ---- helpers ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} never became ready")


def launch_proxy(sections: str, *, log_level: str = "warning", env: dict[str, str] | None = None,
                 log: Path | None = None, ready_s: float = 300) -> tuple[subprocess.Popen, str]:  # fmt: skip
    """Start `ctxzip proxy` on a free port with `sections` of config after `[server]`, and
    wait until it is ready (its output goes to `log`, or nowhere: a pipe nobody reads
    would stall it once full)."""
    port = free_port()
    config = Path(tempfile.mkdtemp()) / "proxy.toml"
    config.write_text(f'[server]\nport = {port}\nlog_level = "{log_level}"\n{sections}')
    out = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115
    proc = subprocess.Popen(
        [str(ROOT / ".venv/bin/ctxzip"), "proxy", "--config", str(config)],
        env={**os.environ, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1",
             **(env or {})},
        stdout=out, stderr=out,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/readyz", ready_s)
    return proc, url


def start_proxy(upstream: str, method: str, extra: str = "") -> tuple[subprocess.Popen, str]:
    return launch_proxy(f"""
[upstreams.openai]
url = "{upstream}/v1"
[routes]
messages = "openai"  # every route has an upstream: the local model is not loaded
[compression]
method = "{method}"
min_tokens = 100
rate = 0.33
timeout_s = 60
[overrides]
allow = ["disable", "rate"]
[timeouts]
read_s = 1.0
retries = 1
backoff_s = 0.05
{extra}
""")


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


async def one_stream(client: httpx.AsyncClient, url: str, body: dict, headers: dict) -> float:
    start = time.perf_counter()
    async with client.stream("POST", url, json=body, headers=headers) as r:
        data = b"".join([c async for c in r.aiter_raw()])
    assert r.status_code == 200 and data.endswith(b"data: [DONE]\n\n"), (r.status_code, data[-80:])
    return time.perf_counter() - start


async def latencies(
    base: str, n: int, concurrency: int, headers: dict
) -> tuple[list[float], float]:
    body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "hello"}]}
    url = base + "/v1/chat/completions"
    sem = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:
        for _ in range(20):  # warm connections
            await one_stream(client, url, body, headers)

        async def run() -> float:
            async with sem:
                return await one_stream(client, url, body, headers)

        start = time.perf_counter()
        times = await asyncio.gather(*[run() for _ in range(n)])
        return list(times), n / (time.perf_counter() - start)


# ---- the three parts -------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def overhead(upstream: str, proxy: str, n: int, proxy_pid: int) -> None:
    print("\n## 1. Overhead, compression disabled (X-Ctxzip-Disable), streaming, "
          f"{CHUNKS} SSE chunks per reply")  # fmt: skip
    print("| concurrency | path | p50 ms | p99 ms | req/s |")
    print("|---|---|---|---|---|")
    for concurrency in (1, 32):
        count = n if concurrency == 32 else n // 2
        rows = {}
        for name, base, headers in (("direct", upstream, {}),
                                    ("proxy", proxy, {"x-ctxzip-disable": "1"})):  # fmt: skip
            cpu = cpu_seconds(proxy_pid)
            times, rps = asyncio.run(latencies(base, count, concurrency, headers))
            if name == "proxy":
                proxy_cpu = (cpu_seconds(proxy_pid) - cpu) / (count + 20) * 1000
            rows[name] = (pct(times, 0.5) * 1000, pct(times, 0.99) * 1000, rps)
            print(f"| {concurrency} | {name} | {rows[name][0]:.2f} | {rows[name][1]:.2f} | "
                  f"{rps:.0f} |")  # fmt: skip
        d, p = rows["direct"], rows["proxy"]
        print(f"| {concurrency} | **added** | **{p[0] - d[0]:+.2f}** | **{p[1] - d[1]:+.2f}** | "
              f"{p[2] / d[2]:.2f}x |")  # fmt: skip
        print(f"| {concurrency} | proxy CPU per request | {proxy_cpu:.2f} ms | | |")


def rag_request(tokens: int = 4000) -> tuple[dict, int]:
    from ctxzip.tokens import count_tokens

    topics = ["the harbour", "the old mill", "the railway", "the library", "the market",
              "the bridge", "the school", "the museum"]  # fmt: skip
    docs, i = [], 0
    while count_tokens("\n\n".join(docs)) < tokens:
        t = topics[i % len(topics)]
        docs.append(f"Document {i} about {t}. The records show that {t} was rebuilt in "
                    f"{1800 + i * 7} after a storm damaged {i % 5 + 2} of its walls. Local "
                    f"historians note that the work cost {i * 113} crowns and took "
                    f"{i % 9 + 1} years. Visitors today can see a plaque describing it.")  # fmt: skip
        i += 1
    context = "\n\n".join(docs)
    body = {"model": "m", "stream": True, "messages": [
        {"role": "system", "content": "Answer from the context."},
        {"role": "user", "content": f"{context}\n\nQuestion: when was the old mill rebuilt?"},
    ]}  # fmt: skip
    return body, count_tokens(body["messages"][1]["content"])


def compression(upstream: str, method: str, runs: int = 5) -> None:
    proc, proxy = start_proxy(upstream, method)
    try:
        body, tokens = rag_request()
        rows = []
        with httpx.Client(timeout=120) as client:
            for i in range(runs + 1):
                # distinct text each run so the result cache does not answer
                body["messages"][1]["content"] += f" ({i})"
                start = time.perf_counter()
                with client.stream("POST", proxy + "/v1/chat/completions", json=body) as r:
                    b"".join(r.iter_raw())
                total = time.perf_counter() - start
                if i:  # the first run loads and warms the model
                    rows.append((float(r.headers["x-ctxzip-compression-ms"]), total * 1000,
                                 int(r.headers["x-ctxzip-tokens-in"]),
                                 int(r.headers["x-ctxzip-tokens-out"])))  # fmt: skip
        comp = statistics.median(x[0] for x in rows)
        total = statistics.median(x[1] for x in rows)
        print(f"\n## 2. Compression: {method} on a {tokens}-token RAG request, rate 0.33 "
              f"(median of {runs})")  # fmt: skip
        print("| tokens in | tokens out | compression ms | end-to-end ms | rest ms |")
        print("|---|---|---|---|---|")
        print(f"| {rows[0][2]} | {rows[0][3]} | {comp:.1f} | {total:.1f} | {total - comp:.1f} |")
    finally:
        proc.terminate()
        proc.wait(10)


async def load_and_faults(proxy: str, pid: int, n: int, concurrency: int) -> None:
    faults = ["500", "reset", "stall", "cut"]
    plan = []
    for i in range(n):
        fault = faults[(i // 20) % 4] if i % 20 == 7 else None  # 5%
        plan.append(fault)
    sem = asyncio.Semaphore(concurrency)
    outcomes: dict[str, int] = {}
    bad: list[str] = []
    proc = psutil.Process(pid)
    rss = [proc.memory_info().rss]
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async def run(i: int, fault: str | None, client: httpx.AsyncClient) -> None:
        body = {"model": f"fault-{fault}" if fault else "m", "stream": True,
                "messages": [{"role": "user", "content": f"hello {i}"}]}  # fmt: skip
        async with sem:
            try:
                async with client.stream("POST", proxy + "/v1/chat/completions", json=body) as r:
                    data = b"".join([c async for c in r.aiter_raw()])
            except httpx.HTTPError as exc:
                bad.append(f"{fault}: client error {type(exc).__name__}")
                return
        if r.status_code == 200 and data.endswith(b"data: [DONE]\n\n"):
            kind = "complete stream"
        elif r.status_code == 200 and b'"code": "upstream_stream"' in data.split(b"\n\n")[-2]:
            kind = "stream + error event"
        elif r.status_code >= 500 and "error" in json.loads(data):
            kind = f"HTTP {r.status_code} error"
        else:
            bad.append(f"{fault}: {r.status_code} {data[-100:]!r}")
            return
        outcomes[kind] = outcomes.get(kind, 0) + 1
        if i % 100 == 0:
            rss.append(proc.memory_info().rss)

    start = time.perf_counter()
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:
        await asyncio.gather(*[run(i, f, client) for i, f in enumerate(plan)])
    seconds = time.perf_counter() - start
    rss.append(proc.memory_info().rss)
    alive = httpx.get(proxy + "/healthz").status_code == 200
    metrics = httpx.get(proxy + "/metrics").text
    failures = {
        line.split('kind="')[1].split('"')[0]: float(line.split()[-1])
        for line in metrics.splitlines()
        if line.startswith("ctxzip_proxy_failures_total{") and not line.endswith(" 0.0")
    }
    print(f"\n## 3. Load + faults: {n} streaming requests, {concurrency} concurrent, "
          f"{sum(1 for f in plan if f)} injected faults ({', '.join(faults)})")  # fmt: skip
    print(f"- finished in {seconds:.1f} s ({n / seconds:.0f} req/s); proxy alive after: {alive}")
    for kind, count in sorted(outcomes.items()):
        print(f"- {kind}: {count}")
    print(f"- malformed or missing replies: {len(bad)}" + (f" e.g. {bad[:3]}" if bad else ""))
    print(f"- proxy failure counters: {failures}")
    mib = [r / 2**20 for r in rss]
    print(f"- proxy RSS MiB: start {mib[0]:.1f}, samples "
          f"{', '.join(f'{m:.1f}' for m in mib[1:])}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--serve-upstream", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--concurrency", default="32", help="load mode: a comma list")
    parser.add_argument("--method", default="extractive")
    parser.add_argument("--skip", default="", help="comma list of parts to skip: 1,2,3")
    parser.add_argument(
        "--mode",
        choices=["parts", "faults", "load"],
        default="parts",
        help="parts: 1-3 above; faults / load: see benchmarks/proxy_load.py",
    )
    parser.add_argument("--latency-budget", type=float, help="load: compression.latency_budget_s")
    args = parser.parse_args()
    if args.serve_upstream:
        serve_upstream(args.serve_upstream)
        return
    if args.mode != "parts":
        sys.path.insert(0, str(Path(__file__).parent))
        import proxy_load

        print(f"cpu cores: {os.cpu_count()}, load average: {os.getloadavg()[0]:.1f}")
        if args.mode == "faults":
            proxy_load.fault_mode(args.requests, int(str(args.concurrency).split(",")[0]))
        else:
            levels = [int(c) for c in str(args.concurrency).split(",")]
            proxy_load.load_mode(args.requests, levels, args.method, budget=args.latency_budget)
        return
    skip = set(args.skip.split(","))
    port = free_port()
    upstream_proc = subprocess.Popen([PYTHON, __file__, "--serve-upstream", str(port)])
    upstream = f"http://127.0.0.1:{port}"
    time.sleep(1.0)
    print(f"cpu cores: {os.cpu_count()}, load average: {os.getloadavg()[0]:.1f}")
    try:
        if "1" not in skip or "3" not in skip:
            proc, proxy = start_proxy(upstream, "truncate")
            try:
                if "1" not in skip:
                    overhead(upstream, proxy, args.requests, proc.pid)
                if "3" not in skip:
                    asyncio.run(
                        load_and_faults(
                            proxy, proc.pid, args.requests, int(args.concurrency.split(",")[0])
                        )
                    )
            finally:
                proc.terminate()
                proc.wait(10)
        if "2" not in skip:
            from ctxzip.errors import PluginError
            from ctxzip.registry import compressor_class

            method = args.method
            try:
                compressor_class(method)
            except PluginError:
                print(f"({method} is not installed; using truncate)")
                method = "truncate"
            compression(upstream, method)
    finally:
        upstream_proc.terminate()


if __name__ == "__main__":
    main()
