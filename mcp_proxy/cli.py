"""``ctxzip mcp-proxy [OPTIONS] -- COMMAND [ARGS...]``: wrap an MCP server, shrink its results."""

from __future__ import annotations

import logging

import anyio
import click

from ctxzip.mcp_proxy.results import McpSettings, ResultShrinker
from ctxzip.mcp_proxy.server import Upstream, serve_http, serve_stdio
from ctxzip.middleware.originals import OriginalsStore


def _floors(values: tuple[str, ...]) -> dict[str, int]:
    out = {}
    for value in values:
        tool, sep, number = value.partition("=")
        if not sep or not tool or not number.isdigit():
            raise click.BadParameter(f"{value!r}: expected TOOL=TOKENS", param_hint="--floor-for")
        out[tool] = int(number)
    return out


def _listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise click.BadParameter(f"{value!r}: expected HOST:PORT", param_hint="--listen")
    return host.strip("[]") or "127.0.0.1", int(port)


@click.command("mcp-proxy", context_settings={"ignore_unknown_options": True})
@click.option("--url", help="Wrap a streamable-HTTP MCP server at this URL (instead of a command).")
@click.option("--listen", help="Serve streamable HTTP on HOST:PORT (default: stdio).")
@click.option("--lossless-only", is_flag=True, help="Never omit anything (no ctxzip_expand).")
@click.option("--floor", type=int, default=2000, show_default=True,
              help="Lossy compression only for results above this many tokens.")  # fmt: skip
@click.option("--floor-for", multiple=True, metavar="TOOL=TOKENS", help="A tool's own floor.")
@click.option("--rate", type=float, default=0.3, show_default=True,
              help="Kept fraction of a result compressed lossily.")  # fmt: skip
@click.option("--include", multiple=True, metavar="GLOB", help="Only these tools (repeatable).")
@click.option("--exclude", multiple=True, metavar="GLOB", help="Never these tools (repeatable).")
@click.option("--keep-duplicate-text", is_flag=True,
              help="Keep a text block that only repeats structuredContent.")  # fmt: skip
@click.option("--store", "store_path", default=":memory:", show_default=True,
              help="SQLite file for omitted originals (served by ctxzip_expand).")  # fmt: skip
@click.option("--tokenizer", default="gpt-4o", show_default=True)
@click.option("--prose-method", default="none", show_default=True,
              help="Text method for prose results (e.g. extractive); none: pass prose through.")  # fmt: skip
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]),
              default="warning", show_default=True)  # fmt: skip
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def mcp_proxy_command(url: str | None, listen: str | None, lossless_only: bool, floor: int,
                      floor_for: tuple[str, ...], rate: float, include: tuple[str, ...],
                      exclude: tuple[str, ...], keep_duplicate_text: bool, store_path: str,
                      tokenizer: str, prose_method: str, log_level: str,
                      command: tuple[str, ...]) -> None:  # fmt: skip
    """Serve an MCP server's tools with smaller results.

    Wraps a stdio server (``-- COMMAND [ARGS...]``) or a streamable-HTTP one (``--url``)
    and serves the same tools over stdio (or streamable HTTP with ``--listen``). Results
    are made lossless-smaller first (minified JSON, record tables, no duplicate of
    structuredContent); above the floor, lossily with markers that the added
    ``ctxzip_expand`` tool resolves.
    """
    if bool(url) == bool(command):
        raise click.UsageError("give either the wrapped server's command after -- or --url")
    logging.basicConfig(level=log_level.upper(), format="%(name)s: %(message)s")  # on stderr
    settings = McpSettings(lossy=not lossless_only, floor=floor, floors=_floors(floor_for),
                           rate=rate, include=include, exclude=exclude,
                           dedupe=not keep_duplicate_text, tokenizer=tokenizer,
                           prose_method=prose_method)  # fmt: skip
    try:
        shrinker = ResultShrinker(settings, OriginalsStore(store_path))
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    upstream = Upstream(command=command, url=url)
    if listen:
        host, port = _listen(listen)
        anyio.run(serve_http, upstream, shrinker, host, port)
    else:
        anyio.run(serve_stdio, upstream, shrinker)
