"""`ctxzip compress-corpus` (registered lazily by ctxzip.cli)."""

from __future__ import annotations

import click

from ctxzip.distributed import engine_options
from ctxzip.tokens import DEFAULT_TOKENIZER


@click.command("compress-corpus")
@click.argument("source", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--out", "-o", required=True, type=click.Path(dir_okay=False),
    help="Output file: .jsonl or .parquet.",
)  # fmt: skip
@click.option("--method", "-m", required=True, help="Compressor name (see `ctxzip plugins`).")
@click.option("--rate", type=float, help="Fraction of tokens to keep, in (0, 1].")
@click.option("--target-tokens", type=int, help="Tokens to keep per record.")
@click.option("--text-column", default="text", show_default=True)
@click.option("--query-column", default=None, help="Column holding each record's question.")
@click.option("--id-column", default="id", show_default=True, help="Copied to the output.")
@click.option(
    "--model", default=DEFAULT_TOKENIZER, show_default=True,
    help="Model whose tokenizer counts the budget.",
)  # fmt: skip
@click.option(
    "--option", "options", multiple=True, metavar="KEY=VALUE",
    help="Compressor option (JSON values allowed); repeatable.",
)  # fmt: skip
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True)
@engine_options("a Ray Data pipeline, one compressor per worker (same output as local)")
@click.option("--cpus-per-worker", type=float, default=1.0, show_default=True)
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def compress_corpus_command(
    source: str, out: str, method: str, rate: float | None, target_tokens: int | None,
    text_column: str, query_column: str | None, id_column: str, model: str,
    options: tuple[str, ...], batch_size: int, engine: str, address: str | None,
    workers: int | None, cpus_per_worker: float, no_progress: bool,
) -> None:  # fmt: skip
    """Compress each record of SOURCE (JSONL or Parquet) into --out, with stats per record.

    A rerun after an interruption resumes from OUT.partial.jsonl.
    """
    from ctxzip.cli import budget_from, parse_options
    from ctxzip.middleware.corpus import CorpusJob, compress_corpus

    budget_from(rate, target_tokens)
    job = CorpusJob(
        source=source, out=out, method=method, rate=rate, target_tokens=target_tokens,
        text_column=text_column, query_column=query_column, id_column=id_column,
        tokenizer=model, options=parse_options(options), batch_size=batch_size,
    )  # fmt: skip
    report = compress_corpus(
        job, engine=engine, address=address, workers=workers,
        cpus_per_worker=cpus_per_worker, progress=not no_progress,
    )  # fmt: skip
    ratio = report.tokens_in / report.tokens_out if report.tokens_out else float("inf")
    click.echo(
        f"{report.records} records ({report.compressed} compressed now) -> {report.out}: "
        f"{report.tokens_in} -> {report.tokens_out} tokens ({ratio:.2f}x), "
        f"{report.seconds:.1f}s, {report.compressed / max(report.seconds, 1e-9):.1f} records/s",
        err=True,
    )
