"""`ctxzip demo`: every registered method on real sample documents, before and after.

The samples are sections of the Python language reference that ship with CPython
(`pydoc_data.topics`, PSF licence), so the demo needs no download.
"""

from __future__ import annotations

import click

from ctxzip.budget import Budget
from ctxzip.registry import available_compressors, get_compressor

SAMPLE_TOPICS = ("with", "try", "lambda", "assert")
SAMPLE_QUERY = "What happens when the body of a with statement raises an exception?"


def sample_documents() -> list[str]:
    from pydoc_data.topics import topics

    return [topics[t].strip() for t in SAMPLE_TOPICS]


def run_demo(budget: Budget, tokenizer: str = "gpt-4o") -> None:
    """Print a before/after table; a method that fails is reported, not fatal."""
    docs = sample_documents()
    click.echo(f"{len(docs)} documents from pydoc_data.topics; query: {SAMPLE_QUERY!r}; {budget}\n")
    click.echo(
        f"{'method':<22} {'tokens in':>9} {'tokens out':>10} {'rate':>6} {'ratio':>6} {'seconds':>8}"
    )
    for info in available_compressors():
        if info.error:
            click.echo(f"{info.name:<22} failed to load: {info.error}")
            continue
        try:
            result = get_compressor(info.name, tokenizer=tokenizer).compress(
                docs, query=SAMPLE_QUERY, budget=budget
            )
        except Exception as exc:  # a demo shows every method it can
            click.echo(f"{info.name:<22} error: {type(exc).__name__}: {exc}")
            continue
        click.echo(
            f"{info.name:<22} {result.tokens_in:>9} {result.tokens_out:>10} {result.rate:>6.3f}"
            f" {result.ratio:>6.2f} {result.seconds:>8.3f}"
        )
