"""`ctxzip mcp-proxy` with the real `mcp` client over stdio, in front of a real MCP server
(tests/mcp_server.py) started by the test; and over streamable HTTP (--listen, --url)."""

from __future__ import annotations

import contextlib
import json
import re
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import jsonschema
import pytest
from mcp import Client, StdioServerParameters
from test_proxy_fakes import free_port, stop

from ctxzip.compressors.content.json_compact import expand_tables
from ctxzip.tokens import count_tokens

SERVER = [sys.executable, str(Path(__file__).with_name("mcp_server.py"))]
WRAPPER = [sys.executable, "-m", "ctxzip.cli", "mcp-proxy"]
KEY = re.compile(r"expand key ([0-9a-f]{12})")
pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend():
    return "asyncio"


def params(command: list[str]) -> StdioServerParameters:
    return StdioServerParameters(command=command[0], args=command[1:])


@contextlib.asynccontextmanager
async def connect(command: list[str] | str, **kw) -> AsyncIterator[Client]:
    target = command if isinstance(command, str) else params(command)
    with anyio.fail_after(120):
        async with Client(target, **kw) as client:
            yield client


def wrapped(*options: str) -> list[str]:
    return [*WRAPPER, *options, "--", *SERVER]


def text_of(result) -> str:
    return "".join(b.text for b in result.content if b.type == "text")


async def test_tools_list_passes_through_plus_expand():
    async with connect(SERVER) as direct:
        tools = [t.model_dump() for t in (await direct.list_tools()).tools]
    async with connect(wrapped("--floor", "300")) as client:
        listed = [t.model_dump() for t in (await client.list_tools()).tools]
    assert listed[:-1] == tools and listed[-1]["name"] == "ctxzip_expand"
    async with connect(wrapped("--lossless-only")) as client:
        assert [t.model_dump() for t in (await client.list_tools()).tools] == tools


async def test_lossless_json_is_smaller_and_decodes_to_every_value():
    async with connect(SERVER) as direct:
        original = await direct.call_tool("packages", {"count": 60})
        settings = await direct.call_tool("settings", {})
    async with connect(wrapped("--lossless-only")) as client:
        result = await client.call_tool("packages", {"count": 60})
        small = await client.call_tool("settings", {})
    before, after = text_of(original), text_of(result)
    # every value equal after decoding (objects unordered: a constant column moves to "same")
    assert json.dumps(expand_tables(json.loads(after)), sort_keys=True) == json.dumps(
        json.loads(before), sort_keys=True
    )
    assert "ctxzip_table" in after
    assert count_tokens(after) <= 0.6 * count_tokens(before)  # >= 40% of the tokens gone
    # a nested object (no records) is minified, and decodes to the same value
    assert json.loads(text_of(small)) == json.loads(text_of(settings))
    assert len(text_of(small)) < len(text_of(settings))


async def test_text_repeating_structured_content_is_dropped_and_schema_holds():
    async with connect(SERVER) as direct:
        original = await direct.call_tool("inventory", {"count": 40})
        schema = next(t for t in (await direct.list_tools()).tools if t.name == "inventory")
    async with connect(wrapped("--lossless-only")) as client:
        result = await client.call_tool("inventory", {"count": 40})
    assert result.structured_content == original.structured_content
    jsonschema.validate(result.structured_content, schema.output_schema)
    assert not [b for b in result.content if b.type == "text"]
    async with connect(wrapped("--lossless-only", "--keep-duplicate-text")) as client:
        kept = await client.call_tool("inventory", {"count": 40})
    decoded = expand_tables(json.loads(text_of(kept)))
    assert decoded == original.structured_content


async def test_lossy_above_the_floor_and_expand_returns_each_omission():
    async with connect(SERVER) as direct:
        log = text_of(await direct.call_tool("build_log", {"lines": 1500}))
        packages = text_of(await direct.call_tool("packages", {"count": 400}))
    async with connect(wrapped("--floor", "500", "--rate", "0.2")) as client:
        result = await client.call_tool("build_log", {"lines": 1500, "query": "frobnicate"})
        text = text_of(result)
        assert count_tokens(text) < 0.5 * count_tokens(log)
        assert "ERROR linker: undefined symbol frobnicate_v2" in text
        keys = KEY.findall(text)
        assert keys
        for key in keys:
            original = text_of(await client.call_tool("ctxzip_expand", {"key": key}))
            assert original and original in log  # byte-identical lines of the input
        json_result = text_of(await client.call_tool("packages", {"count": 400,
                                                                   "query": "pkg-377"}))  # fmt: skip
        value = json.loads(json_result)  # still valid JSON
        note = value["ctxzip_table"][-1]["ctxzip_omitted"]
        omitted = json.loads(text_of(await client.call_tool("ctxzip_expand",
                                                             {"key": note["key"]})))  # fmt: skip
        assert len(omitted) == note["count"]
        rows = expand_tables(value)[:-1]
        # omitted rows read with their table's header (and its "same"/"absent", if any)
        table = {**value, "ctxzip_table": [value["ctxzip_table"][0], *omitted]}
        restored = rows + expand_tables(table)
        by_name = {r["name"]: r for r in json.loads(packages)}
        assert len(restored) == len(by_name) and all(by_name[r["name"]] == r for r in restored)
        assert any(r["name"] == "pkg-377" for r in rows)  # the query's record was kept
        unknown = await client.call_tool("ctxzip_expand", {"key": "0123456789ab"})
        assert unknown.is_error
        small = await client.call_tool("build_log", {"lines": 10})  # below the floor
        assert "[ctxzip:" not in text_of(small)


async def test_errors_images_resources_progress_and_logs_pass_through():
    logs, progress = [], []

    async def on_log(params):
        logs.append((params.level, params.data))

    async def on_progress(value, total, message):
        progress.append((value, total, message))

    async with connect(SERVER) as direct:
        expected = {n: (await direct.call_tool(n, {})).model_dump()
                    for n in ("broken", "screenshot", "readme")}  # fmt: skip
    async with connect(wrapped("--floor", "50"), logging_callback=on_log,
                       log_level="info") as client:  # fmt: skip
        for name, dumped in expected.items():
            assert (await client.call_tool(name, {})).model_dump() == dumped, name
        await client.call_tool("build_log", {"lines": 5}, progress_callback=on_progress)
    assert ("info", "build started") in logs
    assert progress == [(1.0, 2.0, "half way"), (2.0, 2.0, "done")]


async def test_resources_pass_through():
    async with connect(SERVER) as direct:
        listed = (await direct.list_resources()).model_dump()
        read = (await direct.read_resource("file:///notes.txt")).model_dump()
    async with connect(wrapped("--floor", "50")) as client:
        assert (await client.list_resources()).model_dump() == listed
        assert (await client.read_resource("file:///notes.txt")).model_dump() == read


async def test_include_and_exclude_per_tool():
    async with connect(SERVER) as direct:
        packages = text_of(await direct.call_tool("packages", {"count": 60}))
    async with connect(wrapped("--lossless-only", "--exclude", "pack*")) as client:
        assert text_of(await client.call_tool("packages", {"count": 60})) == packages
        assert text_of(await client.call_tool("settings", {})).startswith('{"service":')
    async with connect(wrapped("--lossless-only", "--include", "settings")) as client:
        assert text_of(await client.call_tool("packages", {"count": 60})) == packages


async def test_streamable_http_listen_and_url():
    port = free_port()
    server = subprocess.Popen([*WRAPPER, "--lossless-only", "--listen", f"127.0.0.1:{port}",
                               "--", *SERVER], stdin=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.time() + 60
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            if time.time() > deadline or server.poll() is not None:
                raise RuntimeError("the wrapper did not start listening")
            await anyio.sleep(0.2)
        url = f"http://127.0.0.1:{port}/mcp"
        async with connect(url) as client:
            result = await client.call_tool("packages", {"count": 30})
            assert "ctxzip_table" in text_of(result)
        # a second wrapper in front of the first one's URL, over stdio
        async with connect([*WRAPPER, "--lossless-only", "--url", url]) as client:
            names = [t.name for t in (await client.list_tools()).tools]
            assert "packages" in names and "ctxzip_expand" not in names
            result = await client.call_tool("packages", {"count": 30})
            assert "ctxzip_table" in text_of(result)
    finally:
        stop(server)
