"""`ctxzip eval`: answer quality against compression, one command."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from ctxzip.cli import parse_options
from ctxzip.distributed import engine_options
from ctxzip.evals.run import run_eval

DEMO_LIMIT = 12
DEMO_RATES = (0.33, 0.1)


def _floats(value: str) -> list[float]:
    try:
        return [float(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise click.UsageError(f"--rates must be comma-separated numbers, got {value!r}") from None


def _load_config(path: str) -> dict[str, Any]:
    text = Path(path).read_text(encoding="utf-8")
    try:
        if path.endswith((".yaml", ".yml")):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as exc:
        raise click.UsageError(f"--config {path}: cannot parse ({exc})") from None
    if not isinstance(data, dict):
        raise click.UsageError(f"--config {path}: expected a mapping of settings")
    return data


def _method_options(pairs: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for pair in pairs:
        method, dot, rest = pair.partition(".")
        if not dot or "=" not in rest:
            raise click.UsageError(f"--option {pair!r} is not METHOD.KEY=VALUE")
        out.setdefault(method, {}).update(parse_options((rest,)))
    return out


@click.command("eval")
@click.option(
    "--dataset",
    "-d",
    default="pyref",
    show_default=True,
    help="pyref (bundled), synthetic[:n_items=..,n_docs=..,difficulty=..], "
    "hf:NAME[[:CONFIG]:SPLIT], a JSONL/JSON file (ours, FlashRAG, NQ-open, TriviaQA, "
    "HotpotQA), or easy-vqa[:test|train] (images; -m vision-merge,vision-select).",
)
@click.option(
    "--methods",
    "-m",
    default="all",
    show_default=True,
    help="Comma-separated compressor names; `all` = every registered text method.",
)
@click.option(
    "--rates", default="0.5,0.33,0.2,0.1", show_default=True, help="Kept fractions to sweep."
)
@click.option(
    "--reader",
    "-r",
    default="local",
    show_default=True,
    help="local (SmolLM2-135M-Instruct), hf:MODEL_ID, or openai:MODEL.",
)
@click.option("--reader-url", help="Base URL of the OpenAI-compatible endpoint (…/v1).")
@click.option(
    "--reader-key-env",
    default="OPENAI_API_KEY",
    show_default=True,
    help="Environment variable that holds the endpoint's API key.",
)
@click.option("--reader-tokenizer", help="Tokenizer that counts budgets for an openai: reader.")
@click.option("--limit", "-n", type=click.IntRange(min=1), help="Use N questions (seeded sample).")
@click.option(
    "--out",
    "-o",
    "out",
    type=click.Path(file_okay=False),
    help="Run folder (default runs/eval-DATASET). Rerunning into it resumes.",
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(exists=True, dir_okay=False),
    help="YAML/JSON file with any of these settings; flags given override it.",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--corpus",
    type=click.Path(exists=True, dir_okay=False),
    help="Corpus JSONL to retrieve top-k passages from (for items without contexts).",
)
@click.option(
    "--retriever",
    type=click.Choice(["store", "bm25"]),
    default="store",
    show_default=True,
    help="How --corpus is searched: the ctxzip store (hybrid unless --dense-only) or BM25.",
)
@click.option(
    "--dense-only", is_flag=True,
    help="With --retriever store: vector search alone, without BM25 fusion.",
)  # fmt: skip
@click.option("--top-k", type=click.IntRange(min=1), default=5, show_default=True)
@click.option(
    "--option",
    "options",
    multiple=True,
    metavar="METHOD.KEY=VALUE",
    help="Compressor option; repeatable.",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=8,
    show_default=True,
    help="Reader batch size (local reader).",
)
@click.option("--max-new-tokens", type=click.IntRange(min=1), default=16, show_default=True)
@click.option("--no-baselines", is_flag=True, help="Skip no-context/full/truncate/random.")
@click.option("--no-progress", is_flag=True, help="No progress bars.")
@engine_options("compress and read on Ray workers (same summary as local)")
@click.option(
    "--demo",
    is_flag=True,
    help=f"The `make demo` run: pyref, every text method, rates "
    f"{','.join(map(str, DEMO_RATES))}, {DEMO_LIMIT} questions.",
)
@click.pass_context
def eval_command(ctx: click.Context, **kw: Any) -> None:
    """Compress a QA set with each method at each rate, ask a reader, score, plot."""
    settings = _settings(ctx, kw)
    result = run_eval(settings, progress=not settings.pop("no_progress", False), echo=click.echo)
    click.echo(result["table_text"])
    click.echo(f"table: {result['paths']['table']}")
    click.echo(f"plot:  {result['paths']['plot']}")
    click.echo(
        f"items: {result['paths']['items']}  summary: {result['paths']['summary']}, "
        f"{result['paths']['csv']}  ({result['seconds']:.0f}s)"
    )


def _settings(ctx: click.Context, kw: dict[str, Any]) -> dict[str, Any]:
    """Defaults < demo preset < --config file < flags given on the command line."""
    settings = dict(kw)
    if kw["demo"]:
        preset = {
            "dataset": "pyref",
            "methods": "all",
            "limit": DEMO_LIMIT,
            "rates": ",".join(map(str, DEMO_RATES)),
            "out": "runs/demo",
        }
        for key, value in preset.items():
            source = ctx.get_parameter_source(key)
            if source is None or source.name != "COMMANDLINE":
                settings[key] = value
    if kw["config_file"]:
        for key, value in _load_config(kw["config_file"]).items():
            key = key.replace("-", "_")
            if key not in settings:
                raise click.UsageError(f"--config: unknown setting {key!r}")
            source = ctx.get_parameter_source(key)
            if source is None or source.name != "COMMANDLINE":
                settings[key] = value
    for key in ("methods", "rates"):
        if isinstance(settings[key], (list, tuple)):
            settings[key] = ",".join(map(str, settings[key]))
    settings["rates"] = _floats(str(settings["rates"]))
    settings["methods"] = [m.strip() for m in str(settings["methods"]).split(",") if m.strip()]
    if not settings["methods"]:
        raise click.UsageError("--methods is empty")
    opts = settings["options"]
    settings["method_options"] = (
        opts if isinstance(opts, dict) else _method_options(tuple(opts or ()))
    )
    if settings["out"] is None:
        name = settings["dataset"].split(":")[0].replace("/", "_").replace(".", "_")
        settings["out"] = str(Path("runs") / f"eval-{name}")
    return settings
