"""`ctxzip proxy`: run the OpenAI/Anthropic-compatible compression proxy on uvicorn."""

from __future__ import annotations

import json
import logging
from typing import Any

import click

from ctxzip.proxy.config import ConfigError, load_config


@click.command("proxy")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    help="TOML or YAML configuration file.",
)
@click.option(
    "--upstream",
    help="API base for every route, e.g. https://api.openai.com/v1 "
    "(default: none, so the embedded local model answers).",
)
@click.option(
    "--gemini-upstream",
    help="Gemini API base, e.g. https://generativelanguage.googleapis.com/v1beta (the default).",
)
@click.option("--host", help="Address to listen on (default 127.0.0.1).")
@click.option("--port", type=int, help="Port to listen on (default 8787).")
@click.option("--method", help="Compression method (see `ctxzip plugins`).")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]))
@click.option(
    "--print-config",
    is_flag=True,
    help="Print the effective configuration (secrets masked) and exit.",
)
def proxy_command(config_path: str | None, upstream: str | None, gemini_upstream: str | None,
                  host: str | None, port: int | None, method: str | None,
                  log_level: str | None, print_config: bool) -> None:  # fmt: skip
    """Run the OpenAI- and Anthropic-compatible proxy that compresses what it forwards.

    Settings come from --config, then CTXZIP_PROXY__<SECTION>__<KEY> environment
    variables, then these flags.
    """
    overrides: dict[str, Any] = {}
    if upstream:
        overrides["upstreams"] = {"openai": {"url": upstream}, "anthropic": {"url": upstream}}
    if gemini_upstream:
        overrides.setdefault("upstreams", {})["gemini"] = {"url": gemini_upstream}
    server = {k: v for k, v in (("host", host), ("port", port), ("log_level", log_level)) if v}
    if server:
        overrides["server"] = server
    if method:
        overrides["compression"] = {"method": method}
    try:
        config = load_config(config_path, overrides=overrides)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    if print_config:
        click.echo(json.dumps(config.to_dict(redact=True), indent=2))
        return

    import uvicorn

    from ctxzip.proxy.app import build_app
    from ctxzip.proxy.server import uvicorn_config

    level = config.server.log_level.upper()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = build_app(config)
    where = ", ".join(f"{k}={v.url}" for k, v in config.upstreams.items()) or "local model"
    click.echo(f"ctxzip proxy on http://{config.server.host}:{config.server.port} "
               f"(method {config.compression.method}; upstreams: {where})", err=True)  # fmt: skip
    uvicorn.Server(uvicorn_config(app, config)).run()
