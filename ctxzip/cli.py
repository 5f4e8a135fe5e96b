"""The `ctxzip` command line.

Subsystems with optional dependencies (store, proxy, evals) register their commands
lazily below, so `ctxzip --help` works with only the core installed and the core
never imports them.
"""

from __future__ import annotations

import importlib
import json
import sys
import traceback
from typing import Any

import click

from ctxzip.budget import Budget
from ctxzip.errors import CtxzipError
from ctxzip.tokens import DEFAULT_TOKENIZER

# command name -> ("module:attr" of a click command, one-line help, extra to install)
LAZY_COMMANDS: dict[str, tuple[str, str, str]] = {
    "train": (
        "ctxzip.train_cli:train_command",
        "Train the small models ctxzip ships.",
        "models",
    ),
    "compress-corpus": (
        "ctxzip.middleware.cli:compress_corpus_command",
        "Compress every record of a JSONL/Parquet corpus (locally or on Ray).",
        "ray",
    ),
    "index": (
        "ctxzip.retrievers.cli:index_command",
        "Add files, folders or JSONL to a store.",
        "store",
    ),
    "search": ("ctxzip.retrievers.cli:search_command", "Search a store.", "store"),
    "proxy": (
        "ctxzip.proxy.cli:proxy_command",
        "Run the OpenAI/Anthropic-compatible proxy.",
        "proxy",
    ),
    "mcp-proxy": (
        "ctxzip.mcp_proxy.cli:mcp_proxy_command",
        "Wrap an MCP server and shrink its tool results (lossless first).",
        "mcp",
    ),
    "savings": (
        "ctxzip.proxy.savings:savings_command",
        "What compression saved, priced at the provider's cache mix.",
        "proxy",
    ),
    "eval": (
        "ctxzip.evals.cli:eval_command",
        "Measure answer quality against compression.",
        "evals",
    ),
}


class LazyGroup(click.Group):
    """A group whose optional commands are imported only when used."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *LAZY_COMMANDS])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in LAZY_COMMANDS:
            return super().get_command(ctx, cmd_name)
        target, short_help, extra = LAZY_COMMANDS[cmd_name]
        module_name, _, attr = target.partition(":")
        try:
            command = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            return _unavailable(cmd_name, short_help, extra, exc)
        if not isinstance(command, click.Command):
            raise TypeError(f"{target} is not a click command")
        return command


def _unavailable(name: str, short_help: str, extra: str, exc: Exception) -> click.Command:
    message = f"`ctxzip {name}` needs more packages: pip install 'ctxzip[{extra}]' ({exc})"

    @click.command(
        name,
        short_help=f"{short_help} (not installed)",
        help=message,
        context_settings={"ignore_unknown_options": True},
    )
    @click.argument("args", nargs=-1, type=click.UNPROCESSED)
    def missing(args: tuple[str, ...]) -> None:
        raise CtxzipError(message)

    return missing


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="ctxzip")
@click.option("--debug", is_flag=True, help="Show tracebacks on failure.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Compress what you send to an LLM; keep what the answer needs."""
    ctx.obj = {"debug": debug}


def budget_from(rate: float | None, target_tokens: int | None) -> Budget:
    """The budget from --rate / --target-tokens (exactly one); a usage error otherwise."""
    if (rate is None) == (target_tokens is None):
        raise click.UsageError("give exactly one of --rate or --target-tokens")
    try:
        return Budget(rate=rate, target_tokens=target_tokens)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None


@cli.command()
@click.option("--method", "-m", required=True, help="Compressor name (see `ctxzip plugins`).")
@click.option("--rate", type=float, help="Fraction of tokens to keep, in (0, 1].")
@click.option("--target-tokens", type=int, help="Tokens to keep.")
@click.option("--query", "-q", help="The question the context should answer.")
@click.option(
    "--model",
    default=DEFAULT_TOKENIZER,
    show_default=True,
    help="Model whose tokenizer counts the budget.",
)
@click.option(
    "--option",
    "-o",
    "options",
    multiple=True,
    metavar="KEY=VALUE",
    help="Compressor option (JSON values allowed); repeatable.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the full result as JSON.")
@click.argument("file", type=click.File("rb"), default="-")
def compress(
    method: str,
    rate: float | None,
    target_tokens: int | None,
    query: str | None,
    model: str,
    options: tuple[str, ...],
    as_json: bool,
    file: Any,
) -> None:
    """Compress FILE (or standard input) and print the result.

    Documents in FILE are separated by blank-line-delimited lines of three dashes
    (`---`); a single document is the whole file. Stats go to standard error.
    """
    from ctxzip.registry import get_compressor
    from ctxzip.validate import check_text

    budget = budget_from(rate, target_tokens)
    text = check_text(file.read(), "input")
    if not text.strip():
        raise click.UsageError("the input is empty")
    contexts = [d.strip("\n") for d in text.split("\n---\n")] if "\n---\n" in text else [text]
    compressor = get_compressor(method, tokenizer=model, **parse_options(options))
    result = compressor.compress(contexts, query=query, budget=budget)
    if as_json:
        click.echo(json.dumps(result.to_dict(), ensure_ascii=False, indent=2))
    else:
        click.echo("\n---\n".join(result.texts))
    click.echo(
        f"{result.method}: {result.tokens_in} -> {result.tokens_out} tokens "
        f"({result.tokenizer}), ratio {result.ratio:.2f}x, rate {result.rate:.3f} "
        f"(asked {result.requested_rate:.3f}), {result.seconds:.3f}s"
        + (f"; {result.reason}" if result.reason else ""),
        err=True,
    )


def parse_options(pairs: tuple[str, ...]) -> dict[str, Any]:
    """KEY=VALUE pairs; values parse as JSON when they can (numbers, true, lists)."""
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.UsageError(f"option {pair!r} is not KEY=VALUE")
        try:
            options[key.replace("-", "_")] = json.loads(value)
        except json.JSONDecodeError:
            options[key.replace("-", "_")] = value
    return options


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def plugins(as_json: bool) -> None:
    """List every compressor, where it comes from, and whether it loads."""
    from ctxzip.registry import available_compressors

    infos = available_compressors()
    if as_json:
        click.echo(json.dumps([i.__dict__ for i in infos], indent=2))
        return
    width = max((len(i.name) for i in infos), default=4)
    for info in infos:
        status = f"FAILED: {info.error}" if info.error else "ok"
        click.echo(f"{info.name:<{width}}  {info.source:<28} {info.target}  [{status}]")


@cli.command()
@click.option("--rate", type=float, default=0.5, show_default=True)
def demo(rate: float) -> None:
    """Compress the bundled sample documents with every method; print a table."""
    from ctxzip.demo import run_demo

    run_demo(Budget(rate=rate))


def main(argv: list[str] | None = None) -> int:
    """Entry point: usage errors exit 2, failures exit 1, each with one clear line."""
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    try:
        cli.main(args=args, prog_name="ctxzip", standalone_mode=False)
    except click.UsageError as exc:
        hint = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx else ""
        click.echo(f"ctxzip: error: {exc.format_message()}{hint}", err=True)
        return 2
    except click.exceptions.Abort:
        click.echo("ctxzip: aborted", err=True)
        return 130
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.ClickException as exc:
        click.echo(f"ctxzip: error: {exc.format_message()}", err=True)
        return exc.exit_code
    except Exception as exc:
        if debug:
            traceback.print_exc()
        kind = "" if isinstance(exc, CtxzipError) else f"{type(exc).__name__}: "
        click.echo(f"ctxzip: error: {kind}{exc}", err=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
