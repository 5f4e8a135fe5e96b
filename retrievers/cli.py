"""`ctxzip index` and `ctxzip search` (registered lazily by ctxzip.cli)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import click

from ctxzip.distributed import engine_options
from ctxzip.errors import CtxzipError
from ctxzip.retrievers.faiss_index import KINDS, METRICS
from ctxzip.retrievers.persist import MANIFEST


def _filters(pairs: tuple[str, ...]) -> dict[str, Any] | None:
    """KEY=VALUE pairs; values parse as JSON when they can (numbers, true, lists, {"$gte": 3})."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.UsageError(f"filter {pair!r} is not KEY=VALUE")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out or None


@click.command("index")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
@click.option(
    "--store",
    "store_dir",
    required=True,
    type=click.Path(file_okay=False),
    help="Store folder (created if missing).",
)
@click.option(
    "--model", default=None, help="Embedding model id (new stores; default all-MiniLM-L6-v2)."
)
@click.option(
    "--index",
    "index_type",
    type=click.Choice(KINDS),
    default="flat",
    show_default=True,
    help="Index type for a new store.",
)
@click.option("--metric", type=click.Choice(METRICS), default="cosine", show_default=True)
@click.option(
    "--backend", type=click.Choice(["faiss", "qdrant"]), default="faiss", show_default=True
)
@click.option(
    "--qdrant-url",
    default=None,
    help="Qdrant server URL (backend qdrant); API key from $QDRANT_API_KEY.",
)
@click.option("--collection", default=None, help="Qdrant collection name (backend qdrant).")
@click.option("--chunk-tokens", type=click.IntRange(min=1), default=200, show_default=True)
@click.option("--overlap", type=click.IntRange(min=0), default=32, show_default=True)
@click.option(
    "--text-field", default="text", show_default=True, help="JSONL field holding the text."
)
@click.option("--device", default="auto", show_default=True)
@engine_options("chunk and embed on Ray workers (same vectors as local)")
def index_command(
    paths: tuple[str, ...],
    store_dir: str,
    model: str | None,
    index_type: str,
    metric: str,
    backend: str,
    qdrant_url: str | None,
    collection: str | None,
    chunk_tokens: int,
    overlap: int,
    text_field: str,
    device: str,
    engine: str,
    address: str | None,
    workers: int | None,
) -> None:
    """Chunk and add files, folders (text files inside) and JSONL to the store at --store.

    Re-indexing a file replaces its chunks. Unreadable files are reported and skipped;
    the rest is still saved (exit status 1 when anything was skipped).
    """
    from ctxzip.retrievers.backends import open_store

    if overlap >= chunk_tokens:
        raise click.UsageError("--overlap must be smaller than --chunk-tokens")
    folder = Path(store_dir)
    options: dict[str, Any] = {"device": device}
    if not (folder / MANIFEST).exists():
        options.update(model=model, metric=metric)
        if backend == "faiss":
            options["index"] = index_type
        else:
            if not qdrant_url:
                raise click.UsageError("--backend qdrant needs --qdrant-url")
            options.update(
                url=qdrant_url,
                api_key=os.environ.get("QDRANT_API_KEY"),
                collection=collection or folder.name,
            )
    elif model is not None:
        options["model"] = model  # checked against the manifest
    store = open_store(folder, backend=None if (folder / MANIFEST).exists() else backend, **options)
    report = store.ingest(
        list(paths), chunk_tokens=chunk_tokens, overlap_tokens=overlap, text_field=text_field,
        engine=engine, address=address, workers=workers,
    )  # fmt: skip
    store.save(folder)
    for path, reason in report.skipped:
        click.echo(f"skipped {path}: {reason}", err=True)
    click.echo(
        f"indexed {report.chunks} chunks from {report.files} files into {folder} "
        f"({len(store)} documents)",
        err=True,
    )
    if report.skipped:
        raise CtxzipError(f"{len(report.skipped)} file(s) skipped")


@click.command("search")
@click.argument("query")
@click.option("--store", "store_dir", required=True, type=click.Path(file_okay=False))
@click.option("--k", "-k", type=click.IntRange(min=1), default=4, show_default=True)
@click.option(
    "--hybrid", is_flag=True,
    help="Fuse BM25 and vector results (RRF, k=60): the default; kept for old scripts.",
)  # fmt: skip
@click.option("--dense-only", is_flag=True, help="Vector search alone, without BM25 fusion.")
@click.option("--mmr", is_flag=True, help="Diversify with maximal marginal relevance.")
@click.option("--bm25-weight", type=float, default=1.0, show_default=True)
@click.option("--vector-weight", type=float, default=1.0, show_default=True)
@click.option(
    "--filter",
    "-f",
    "filters",
    multiple=True,
    metavar="KEY=VALUE",
    help="Metadata filter (JSON values allowed, e.g. year='{\"$gte\": 2020}'); repeatable.",
)
@click.option(
    "--threshold", type=float, default=None,
    help="Minimum similarity (a dense search, unless --hybrid: then the fused score).",
)  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print hits as JSON lines.")
@click.option("--device", default="auto", show_default=True)
def search_command(
    query: str,
    store_dir: str,
    k: int,
    hybrid: bool,
    dense_only: bool,
    mmr: bool,
    bm25_weight: float,
    vector_weight: float,
    filters: tuple[str, ...],
    threshold: float | None,
    as_json: bool,
    device: str,
) -> None:
    """Search the store at --store for QUERY and print the best hits.

    Hybrid by default: vector and BM25 results fused by reciprocal rank.
    """
    from ctxzip.retrievers.backends import open_store

    if hybrid and mmr:
        raise click.UsageError("--hybrid and --mmr cannot be combined")
    if hybrid and dense_only:
        raise click.UsageError("--hybrid and --dense-only cannot be combined")
    hybrid = not (mmr or dense_only) and (hybrid or threshold is None)
    folder = Path(store_dir)
    if not (folder / MANIFEST).exists():
        raise CtxzipError(f"no store at {folder} (run `ctxzip index PATH --store {folder}` first)")
    if not query.strip():
        raise click.UsageError("the query is empty")
    store = open_store(folder, device=device, api_key=os.environ.get("QDRANT_API_KEY"))
    flt = _filters(filters)
    if hybrid:
        hits = store.hybrid_search(
            query,
            k,
            flt,
            vector_weight=vector_weight,
            bm25_weight=bm25_weight,
            score_threshold=threshold,
        )
    elif mmr:
        hits = store.mmr_search(query, k, filter=flt)
    else:
        hits = store.search(query, k, flt, score_threshold=threshold)
    for rank, hit in enumerate(hits, start=1):
        if as_json:
            click.echo(
                json.dumps(
                    {
                        "rank": rank,
                        "id": hit.id,
                        "score": hit.score,
                        "text": hit.text,
                        "metadata": hit.metadata,
                        **hit.extra,
                    },
                    ensure_ascii=False,
                )
            )
        else:
            source = hit.metadata.get("source", "")
            where = (
                f" {source}[{hit.metadata['start']}:{hit.metadata['end']}]"
                if (source and "start" in hit.metadata)
                else ""
            )
            click.echo(f"{rank}. {hit.score:.4f} {hit.id}{where}")
            click.echo("   " + " ".join(hit.text.split())[:300])
    if not hits:
        click.echo("no results", err=True)
