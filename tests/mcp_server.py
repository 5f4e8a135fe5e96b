"""A real MCP server (official `mcp` SDK, stdio) with tool outputs shaped like real ones.

Run as ``python tests/mcp_server.py``; the MCP tests start it as a subprocess (directly,
or behind ``ctxzip mcp-proxy``). Its tools answer the way common servers do:

- ``inventory``: uniform records as 2-space pretty-printed JSON text that repeats the
  ``structuredContent`` (validated by the tool's ``outputSchema``);
- ``packages``: a pretty-printed JSON array of records, text only;
- ``settings``: a nested JSON object (no record array), pretty-printed;
- ``build_log``: a long log with one error line; sends log and progress notifications;
- ``broken``: an ``isError`` result; ``screenshot``: an image; ``readme``: an embedded
  resource; ``echo``: its arguments back.

It also lists and serves one resource (``file:///notes.txt``).
"""

from __future__ import annotations

import json
import sys
from typing import Any

import anyio
import mcp_types as types
from mcp.server.lowlevel import Server
from mcp.server.stdio import stdio_server

PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
RECORD_SCHEMA = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"}, "sku": {"type": "string"}, "name": {"type": "string"},
        "price": {"type": "number"}, "stock": {"type": "integer"},
        "warehouse": {"type": "string"}, "active": {"type": "boolean"},
    },
    "required": ["id", "sku", "name", "price", "stock", "warehouse", "active"],
}  # fmt: skip
INVENTORY_SCHEMA = {
    "type": "object",
    "properties": {
        "items": {"type": "array", "items": RECORD_SCHEMA},
        "total": {"type": "integer"},
    },
    "required": ["items", "total"],
}


def records(n: int) -> list[dict[str, Any]]:
    """`n` uniform inventory records (ids, SKUs, prices that must survive byte for byte)."""
    return [
        {"id": 1000 + i, "sku": f"SKU-{i:05d}-X{(i * 7) % 13}", "name": f"widget model {i}",
         "price": round(3.5 + i * 1.25, 2), "stock": (i * 37) % 101,
         "warehouse": ["eu-west-1", "us-east-2", "ap-south-1"][i % 3], "active": i % 4 != 0}
        for i in range(n)
    ]  # fmt: skip


def packages(n: int) -> list[dict[str, Any]]:
    return [
        {"name": f"pkg-{i}", "version": f"{i % 5}.{i % 11}.{i}", "license": "MIT",
         "summary": f"utility library number {i} for parsing things", "requires": i % 6}
        for i in range(n)
    ]  # fmt: skip


def build_log(n: int) -> str:
    lines = []
    for i in range(n):
        lines.append(f"2026-12-04T06:{i // 60:02d}:{i % 60:02d}Z INFO step {i}: compiled "
                     f"module_{i}.o in {i % 9}.{i % 7}s")  # fmt: skip
        if i == n // 2:
            lines.append("2026-12-04T06:30:00Z ERROR linker: undefined symbol frobnicate_v2")
    return "\n".join(lines) + "\n"


TOOLS = [
    types.Tool(name="inventory", description="List inventory records.",
               input_schema={"type": "object", "properties": {"count": {"type": "integer"},
                                                             "query": {"type": "string"}}},
               output_schema=INVENTORY_SCHEMA),
    types.Tool(name="packages", description="Installed packages as JSON.",
               input_schema={"type": "object", "properties": {"count": {"type": "integer"}}}),
    types.Tool(name="settings", description="Nested settings.",
               input_schema={"type": "object", "properties": {}}),
    types.Tool(name="build_log", description="A build log.",
               input_schema={"type": "object", "properties": {"lines": {"type": "integer"},
                                                             "query": {"type": "string"}}}),
    types.Tool(name="broken", description="Always fails.",
               input_schema={"type": "object", "properties": {}}),
    types.Tool(name="screenshot", description="An image.",
               input_schema={"type": "object", "properties": {}}),
    types.Tool(name="readme", description="An embedded resource.",
               input_schema={"type": "object", "properties": {}}),
    types.Tool(name="echo", description="Arguments back.",
               input_schema={"type": "object", "properties": {"text": {"type": "string"}}}),
]  # fmt: skip


def settings() -> dict[str, Any]:
    return {"service": {"name": "billing", "replicas": 3, "ports": [8080, 8443],
                        "env": {f"VAR_{i}": f"value-{i}" for i in range(12)}},
            "limits": {"cpu": "500m", "memory": "1Gi", "paths": ["/var/lib/billing", "/tmp"]}}  # fmt: skip


async def list_tools(ctx: Any, params: Any) -> types.ListToolsResult:
    return types.ListToolsResult(tools=TOOLS)


def text(value: str) -> types.TextContent:
    return types.TextContent(type="text", text=value)


async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
    args = params.arguments or {}
    name = params.name
    if name == "inventory":
        items = records(int(args.get("count", 60)))
        structured = {"items": items, "total": len(items)}
        return types.CallToolResult(content=[text(json.dumps(structured, indent=2))],
                                    structured_content=structured)  # fmt: skip
    if name == "packages":
        return types.CallToolResult(
            content=[text(json.dumps(packages(int(args.get("count", 40))), indent=2))]
        )
    if name == "settings":
        return types.CallToolResult(content=[text(json.dumps(settings(), indent=2))])
    if name == "build_log":
        await ctx.session.send_log_message("info", "build started", logger="build")
        await ctx.session.report_progress(1, 2, "half way")
        await ctx.session.report_progress(2, 2, "done")
        return types.CallToolResult(content=[text(build_log(int(args.get("lines", 400))))])
    if name == "broken":
        detail = "\n".join(f"  at frame_{i} (src/mod_{i}.py:{i * 3})" for i in range(80))
        return types.CallToolResult(content=[text("Traceback: boom\n" + detail)], is_error=True)
    if name == "screenshot":
        return types.CallToolResult(content=[
            types.ImageContent(type="image", data=PNG, mime_type="image/png"), text("a pixel")])  # fmt: skip
    if name == "readme":
        resource = types.TextResourceContents(uri="file:///README.md", mime_type="text/markdown",
                                              text="# Readme\n\nhello\n")  # fmt: skip
        return types.CallToolResult(content=[types.EmbeddedResource(type="resource",
                                                                    resource=resource)])  # fmt: skip
    if name == "echo":
        return types.CallToolResult(content=[text(json.dumps(args))])
    return types.CallToolResult(content=[text(f"unknown tool {name}")], is_error=True)


NOTES = types.Resource(uri="file:///notes.txt", name="notes", mime_type="text/plain")


async def list_resources(ctx: Any, params: Any) -> types.ListResourcesResult:
    return types.ListResourcesResult(resources=[NOTES])


async def read_resource(
    ctx: Any, params: types.ReadResourceRequestParams
) -> types.ReadResourceResult:
    text = "line one\nline two\n" * 50
    return types.ReadResourceResult(contents=[types.TextResourceContents(
        uri=str(params.uri), mime_type="text/plain", text=text)])  # fmt: skip


server: Server[Any] = Server("ctxzip-test-server", on_list_tools=list_tools, on_call_tool=call_tool,
                             on_list_resources=list_resources, on_read_resource=read_resource)  # fmt: skip


async def main() -> None:
    async with stdio_server() as (read, write):
        await server.run(read, write, server.create_initialization_options())


if __name__ == "__main__":
    sys.exit(anyio.run(main))
