"""The MCP wrapper: one MCP server in front of another, shrinking what its tools return.

The wrapped server is reached with the official SDK's client (a stdio command, or a
streamable-HTTP URL); the wrapper serves the same tools (and resources and prompts, when
the wrapped server has them) over stdio or streamable HTTP. ``tools/list`` passes through
unchanged, plus ``ctxzip_expand`` when lossy mode is on; ``tools/call`` results go
through `ResultShrinker`. Progress and log messages of the wrapped server reach the
caller of the request they belong to.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import mcp_types as types
import uvicorn
from mcp import Client, StdioServerParameters
from mcp.server.lowlevel import Server
from mcp.server.stdio import stdio_server

from ctxzip.mcp_proxy.results import EXPAND_DEFINITION, EXPAND_TOOL, ResultShrinker

log = logging.getLogger("ctxzip.mcp_proxy")


@dataclass(frozen=True)
class Upstream:
    """The wrapped server: a command with its arguments, or a streamable-HTTP URL."""

    command: Sequence[str] = ()
    url: str | None = None

    def target(self) -> StdioServerParameters | str:
        if self.url:
            return self.url
        if not self.command:
            raise ValueError("give the wrapped server's command (after --) or --url")
        # the wrapped server sees the wrapper's environment (its keys, PATH, ...)
        return StdioServerParameters(command=self.command[0], args=list(self.command[1:]),
                                     env=dict(os.environ))  # fmt: skip


def _dump(model: Any) -> dict[str, Any]:
    return dict(model.model_dump(by_alias=True, exclude_none=True, mode="json"))


class Wrapper:
    """Holds the client of the wrapped server and builds the serving `Server`."""

    def __init__(self, client: Client, shrinker: ResultShrinker) -> None:
        self.client = client
        self.shrinker = shrinker
        self._current: Any = None  # the session of the call in flight (for its log messages)

    async def on_log(self, params: types.LoggingMessageNotificationParams) -> None:
        """A log message of the wrapped server, sent on to the caller of the current call."""
        session = self._current
        if session is not None:
            with contextlib.suppress(Exception):  # a log line must never fail a call
                await session.send_log_message(params.level, params.data, params.logger)

    def server(self) -> Server[Any]:
        """The serving side, with handlers for what the wrapped server offers."""
        caps = self.client.server_capabilities
        handlers: dict[str, Any] = {"on_list_tools": self.list_tools,
                                    "on_call_tool": self.call_tool}  # fmt: skip
        if caps.resources is not None:
            handlers |= {"on_list_resources": self.list_resources,
                         "on_read_resource": self.read_resource,
                         "on_list_resource_templates": self.list_resource_templates}  # fmt: skip
        if caps.prompts is not None:
            handlers |= {"on_list_prompts": self.list_prompts, "on_get_prompt": self.get_prompt}
        info = self.client.server_info
        name = f"ctxzip({info.name})" if info is not None else "ctxzip-mcp-proxy"
        return Server(name, version=info.version if info is not None else "",
                      instructions=self.client.instructions, **handlers)  # fmt: skip

    async def list_tools(self, ctx: Any, params: types.PaginatedRequestParams | None
                         ) -> types.ListToolsResult:  # fmt: skip
        cursor = params.cursor if params is not None else None
        result = await self.client.list_tools(cursor=cursor)
        if not self.shrinker.settings.lossy or result.next_cursor is not None:
            return result
        tools = [*result.tools, types.Tool.model_validate(EXPAND_DEFINITION)]
        return result.model_copy(update={"tools": tools})

    async def call_tool(self, ctx: Any, params: types.CallToolRequestParams
                        ) -> types.CallToolResult:  # fmt: skip
        arguments = dict(params.arguments or {})
        if params.name == EXPAND_TOOL and self.shrinker.settings.lossy:
            key = str(arguments.get("key", ""))
            text = self.shrinker.expand(key)
            if text is None:
                return types.CallToolResult(is_error=True, content=[types.TextContent(
                    type="text", text=f"no original is stored under key {key!r}")])  # fmt: skip
            return types.CallToolResult(content=[types.TextContent(type="text", text=text)])

        async def relay_progress(progress: float, total: float | None,
                                 message: str | None) -> None:  # fmt: skip
            with contextlib.suppress(Exception):
                await ctx.session.report_progress(progress, total, message)

        self._current = ctx.session
        try:
            result = await self.client.call_tool(params.name, arguments,
                                                 progress_callback=relay_progress)  # fmt: skip
        finally:
            self._current = None
        raw = _dump(result)
        try:
            out, stats = self.shrinker.shrink(raw, params.name, arguments)
        except Exception as exc:  # fail open: the result goes on as it came
            log.warning("shrinking %s failed: %s: %s", params.name, type(exc).__name__, exc)
            return result
        if out is raw:
            return result
        log.info("%s: %d -> %d tokens (lossless %d)", params.name, stats.tokens_in,
                 stats.tokens_out, stats.lossless_out)  # fmt: skip
        return types.CallToolResult.model_validate(out)

    async def list_resources(self, ctx: Any, params: types.PaginatedRequestParams | None
                             ) -> types.ListResourcesResult:  # fmt: skip
        return await self.client.list_resources(cursor=params.cursor if params else None)

    async def list_resource_templates(self, ctx: Any, params: types.PaginatedRequestParams | None
                                      ) -> types.ListResourceTemplatesResult:  # fmt: skip
        return await self.client.list_resource_templates(cursor=params.cursor if params else None)

    async def read_resource(self, ctx: Any, params: types.ReadResourceRequestParams
                            ) -> types.ReadResourceResult:  # fmt: skip
        return await self.client.read_resource(params.uri)

    async def list_prompts(self, ctx: Any, params: types.PaginatedRequestParams | None
                           ) -> types.ListPromptsResult:  # fmt: skip
        return await self.client.list_prompts(cursor=params.cursor if params else None)

    async def get_prompt(self, ctx: Any, params: types.GetPromptRequestParams
                         ) -> types.GetPromptResult:  # fmt: skip
        return await self.client.get_prompt(params.name, params.arguments)


@contextlib.asynccontextmanager
async def connect(upstream: Upstream, shrinker: ResultShrinker) -> AsyncIterator[Wrapper]:
    """A `Wrapper` connected to the wrapped server (closed, and its process stopped, after)."""
    holder: list[Wrapper] = []

    async def on_log(params: types.LoggingMessageNotificationParams) -> None:
        if holder:
            await holder[0].on_log(params)

    client = Client(upstream.target(), logging_callback=on_log, log_level="debug")
    async with client:
        wrapper = Wrapper(client, shrinker)
        holder.append(wrapper)
        yield wrapper


async def serve_stdio(upstream: Upstream, shrinker: ResultShrinker) -> None:
    """Serve the wrapped server's tools over this process's stdin/stdout."""
    async with connect(upstream, shrinker) as wrapper:
        server = wrapper.server()
        async with stdio_server() as (read, write):
            await server.run(read, write, server.create_initialization_options())


async def serve_http(upstream: Upstream, shrinker: ResultShrinker, host: str, port: int) -> None:
    """Serve the wrapped server's tools over streamable HTTP at ``http://host:port/mcp``."""
    async with connect(upstream, shrinker) as wrapper:
        app = wrapper.server().streamable_http_app(host=host)
        config = uvicorn.Config(app, host=host, port=port, log_level="warning")
        await uvicorn.Server(config).serve()
