"""The eval as a function: settings in, files and a table out (the CLI is a thin shell)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ctxzip.errors import InputError
from ctxzip.evals import datasets, report
from ctxzip.evals.engine import run_ray_sweep
from ctxzip.evals.plot import plot_sweep
from ctxzip.evals.readers import make_reader
from ctxzip.evals.sweep import SweepConfig, resolve_methods, run_sweep


def reader_options(settings: dict[str, Any]) -> dict[str, Any]:
    """Keyword arguments for `make_reader` from eval settings."""
    spec = settings.get("reader", "local")
    opts: dict[str, Any] = {"max_new_tokens": settings.get("max_new_tokens", 16)}
    if spec.startswith("openai:"):
        if settings.get("reader_url"):
            opts["base_url"] = settings["reader_url"]
        opts["api_key_env"] = settings.get("reader_key_env") or "OPENAI_API_KEY"
        if settings.get("reader_tokenizer"):
            opts["tokenizer"] = settings["reader_tokenizer"]
    else:
        opts["batch_size"] = settings.get("batch_size", 8)
    return opts


def run_eval(
    settings: dict[str, Any], progress: bool = True, echo: Callable[[str], Any] = print
) -> dict[str, Any]:
    """Load data and reader, sweep, write items/summary/table/plot; return paths and rows."""
    t0 = time.perf_counter()
    seed = int(settings.get("seed", 0))
    resolve_methods(settings["methods"])  # unknown names fail before any loading
    items = datasets.load_dataset(settings["dataset"], seed=seed)
    if settings.get("corpus"):
        datasets.attach_retrieved(
            items,
            datasets.load_corpus(settings["corpus"]),
            int(settings.get("top_k", 5)),
            settings.get("retriever", "store"),
            dense_only=bool(settings.get("dense_only", False)),
        )
    items = datasets.sample(items, settings.get("limit"), seed)
    missing = [it.id for it in items if not any(c.strip() for c in it.contexts)]
    if missing:
        raise InputError(
            f"{len(missing)} questions have no contexts (first: {missing[0]}); "
            "give --corpus to retrieve passages for them"
        )
    config = SweepConfig(
        dataset=settings["dataset"],
        methods=list(settings["methods"]),
        rates=list(settings["rates"]),
        reader=settings.get("reader", "local"),
        limit=settings.get("limit"),
        out=str(settings["out"]),
        seed=seed,
        baselines=not settings.get("no_baselines", False),
        method_options=settings.get("method_options") or {},
        reader_options=reader_options(settings),
        corpus=settings.get("corpus"),
        top_k=int(settings.get("top_k", 5)),
    )
    echo(
        f"{len(items)} questions from {config.dataset}; reader {config.reader}; "
        f"rates {config.rates}; run folder {config.out}"
    )
    reader = make_reader(config.reader, **config.reader_options)
    if settings.get("engine", "local") == "ray":
        records, failed, _ = run_ray_sweep(
            config, items, reader, address=settings.get("address"),
            workers=settings.get("workers"), progress=progress, log=echo,
        )  # fmt: skip
    else:
        records, failed, _ = run_sweep(config, items, reader, progress=progress, log=echo)
    rows = report.summarize(records, seed=seed)
    meta = {
        "dataset": config.dataset,
        "reader": reader.name,
        "tokenizer": records[0]["tokenizer"] if records else reader.tokenizer,
        "n_items": len(items),
        "seed": seed,
        "rates": config.rates,
        "failed": failed,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    out = Path(config.out)
    paths = report.write_outputs(out, records, rows, meta)
    paths["plot"] = plot_sweep(
        rows, out / "plot.png", title=f"{config.dataset} · {reader.name} · n={len(items)}"
    )
    table_text = (out / "table.md").read_text()
    return {
        "rows": rows,
        "records": records,
        "paths": paths,
        "failed": failed,
        "table_text": table_text,
        "seconds": time.perf_counter() - t0,
    }
