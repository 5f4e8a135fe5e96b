"""An MCP server (official SDK, stdio) that returns the benchmark corpus as tool results.

``python benchmarks/mcp_corpus_server.py CORPUS.json``: tool ``result`` with argument
``index`` returns case `index`'s text; JSON cases come 2-space pretty-printed, as most
servers write them. Tool ``structured`` returns a JSON case the way SDK servers return a
value: the same pretty text plus ``structuredContent`` (an object; another value wrapped
as ``{"result": ...}``). Used by benchmarks/bench_integrations.py behind ``ctxzip mcp-proxy``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
from mcp.server.lowlevel import Server
from mcp.server.stdio import stdio_server

CASES: list[dict[str, Any]] = json.loads(Path(sys.argv[1]).read_text())
SCHEMA = {"type": "object", "properties": {"index": {"type": "integer"},
                                          "query": {"type": "string"}}}  # fmt: skip
TOOLS = [types.Tool(name="result", description="One corpus tool output.", input_schema=SCHEMA),
         types.Tool(name="structured", description="A JSON output with structuredContent.",
                    input_schema=SCHEMA)]  # fmt: skip


def served(case: dict[str, Any]) -> str:
    """The text as a server sends it (JSON pretty-printed with a 2-space indent)."""
    if case["kind"] == "json":
        return json.dumps(json.loads(case["text"]), indent=2, ensure_ascii=False)
    return str(case["text"])


async def list_tools(ctx: Any, params: Any) -> types.ListToolsResult:
    return types.ListToolsResult(tools=TOOLS)


async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
    case = CASES[int((params.arguments or {})["index"])]
    content = [types.TextContent(type="text", text=served(case))]
    if params.name != "structured":
        return types.CallToolResult(content=content)
    value = json.loads(case["text"])
    structured = value if isinstance(value, dict) else {"result": value}
    return types.CallToolResult(content=content, structured_content=structured)


async def main() -> None:
    server: Server[Any] = Server("corpus", on_list_tools=list_tools, on_call_tool=call_tool)
    async with stdio_server() as (read, write):
        await server.run(read, write, server.create_initialization_options())


if __name__ == "__main__":
    anyio.run(main)
