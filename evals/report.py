"""Summaries of a sweep: per (method, rate) scores with intervals, files, a markdown table.

Rates are kept fractions (tokens_out / tokens_in, in the reader's tokenizer); the
ratio column is the "Nx" convention (tokens_in / tokens_out). Prefill is what the reader
actually read (prompt tokens, its own tokenizer, template included) and its estimated
FLOPs; "saved" compares them with the full-context baseline of the same run.
"""

from __future__ import annotations

import csv
import json
import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ctxzip.evals import metrics
from ctxzip.evals.baselines import FIXED, FULL

_CSV_FIELDS = [
    "method",
    "rate",
    "n",
    "em",
    "em_lo",
    "em_hi",
    "f1",
    "f1_lo",
    "f1_hi",
    "acc",
    "acc_lo",
    "acc_hi",
    "retention",
    "tokens_in",
    "tokens_out",
    "tokenizer",
    "requested_rate",
    "achieved_rate",
    "ratio",
    "compress_p50",
    "compress_p95",
    "reader_p50",
    "reader_p95",
    "prefill_tokens",
    "prefill_flops",
    "prefill_saved",
    "flops_saved",
]


def _mean(xs: Sequence[float | None]) -> float:
    """Mean of the values that exist (None = not defined for this item); nan for none."""
    vals = [x for x in xs if x is not None]
    return sum(vals) / len(vals) if vals else math.nan


def summarize(records: Sequence[dict[str, Any]], seed: int = 0) -> list[dict[str, Any]]:
    """One row per (method, rate), in first-seen order, with bootstrap 95% CIs."""
    groups: dict[tuple[str, float | None], list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        groups[(r["method"], r["rate"])].append(r)
    rows = []
    for (method, rate), rs in groups.items():
        row: dict[str, Any] = {"method": method, "rate": rate, "n": len(rs)}
        for m in ("em", "f1", "acc"):
            values = [r[m] for r in rs]
            row[m] = _mean(values)
            row[f"{m}_lo"], row[f"{m}_hi"] = metrics.bootstrap_ci(values, seed=seed)
        tin = sum(r["tokens_in"] for r in rs)
        tout = sum(r["tokens_out"] for r in rs)
        comp = [r["compress_seconds"] for r in rs]
        read = [r["reader_seconds"] for r in rs]
        row.update(
            {
                "retention": _mean([r["retained"] for r in rs]),
                "tokens_in": tin / len(rs),
                "tokens_out": tout / len(rs),
                "tokenizer": rs[0]["tokenizer"],
                "requested_rate": _mean([r["requested_rate"] for r in rs]),
                "achieved_rate": tout / tin if tin else 1.0,
                "ratio": tin / tout if tout else math.inf,
                "compress_p50": metrics.percentile(comp, 50),
                "compress_p95": metrics.percentile(comp, 95),
                "reader_p50": metrics.percentile(read, 50),
                "reader_p95": metrics.percentile(read, 95),
                "prefill_tokens": _mean([r.get("prompt_tokens") for r in rs]),
                "prefill_flops": _mean([r.get("prefill_flops") for r in rs]),
            }
        )
        keys = dict.fromkeys(k for r in rs for k in (r.get("extra") or {}))
        row["extra"] = {k: _mean([(r.get("extra") or {}).get(k) for r in rs]) for k in keys}
        buckets: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for r in rs:
            buckets[r["bucket"]].append(r)
        row["by_length"] = {
            b: {
                "n": len(v),
                "em": _mean([r["em"] for r in v]),
                "f1": _mean([r["f1"] for r in v]),
                "acc": _mean([r["acc"] for r in v]),
            }
            for b, v in sorted(buckets.items(), key=lambda kv: int(kv[0].split("-")[0].rstrip("+")))
        }
        rows.append(row)
    full = next((r for r in rows if r["method"] == FULL), None)
    full_prefill = None if full is None else full["prefill_tokens"]
    full_flops = None if full is None else full["prefill_flops"]
    for row in rows:
        row["prefill_saved"] = _saved(row["prefill_tokens"], full_prefill)
        row["flops_saved"] = _saved(row["prefill_flops"], full_flops)
    return rows


def _saved(value: float, full: float | None) -> float:
    """1 - value/full: the fraction of the full-context baseline's cost saved."""
    if full is None or not full or math.isnan(value) or math.isnan(full):
        return math.nan
    return 1.0 - value / full


def _fmt(x: Any, digits: int = 3) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        if math.isnan(x):
            return "-"
        if math.isinf(x):
            return "inf"
        return f"{x:.{digits}f}"
    return str(x)


def markdown_table(rows: Sequence[dict[str, Any]], title: str = "") -> str:
    """The table people read: quality, retention, tokens, rates, latency."""
    head = [
        "method",
        "rate",
        "n",
        "EM",
        "F1 [95% CI]",
        "acc",
        "retention",
        "tokens in",
        "tokens out",
        "achieved",
        "ratio",
        "compress p50/p95 s",
        "reader p50 s",
        "prefill tok",
        "FLOPs saved",
    ]
    lines = [f"### {title}", ""] if title else []
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        lines.append(
            "| "
            + " | ".join(
                [
                    r["method"],
                    "-" if r["rate"] is None else f"{r['rate']:g}",
                    str(r["n"]),
                    _fmt(r["em"]),
                    f"{_fmt(r['f1'])} [{_fmt(r['f1_lo'], 2)}, {_fmt(r['f1_hi'], 2)}]",
                    _fmt(r["acc"]),
                    _fmt(r["retention"]),
                    _fmt(r["tokens_in"], 0),
                    _fmt(r["tokens_out"], 0),
                    _fmt(r["achieved_rate"]),
                    _fmt(r["ratio"], 2) + "x",
                    f"{_fmt(r['compress_p50'])}/{_fmt(r['compress_p95'])}",
                    _fmt(r["reader_p50"]),
                    _fmt(r.get("prefill_tokens", math.nan), 0),
                    _pct(r.get("flops_saved", math.nan)),
                ]
            )
            + " |"
        )
    return "\n".join(lines) + "\n"


def _pct(x: Any) -> str:
    if not isinstance(x, float) or math.isnan(x):
        return "-"
    return f"{100 * x:.0f}%"


def extra_table(rows: Sequence[dict[str, Any]]) -> str:
    """Means of the numbers methods report in `CompressionResult.extra` (empty if none)."""
    rows = [r for r in rows if r.get("extra")]
    if not rows:
        return ""
    lines = ["| method | rate | method-reported means |", "|---|---|---|"]
    for r in rows:
        cells = ", ".join(f"{k}={_fmt(v)}" for k, v in r["extra"].items())
        rate = "-" if r["rate"] is None else f"{r['rate']:g}"
        lines.append(f"| {r['method']} | {rate} | {cells} |")
    return "\n".join(lines) + "\n"


def length_table(rows: Sequence[dict[str, Any]]) -> str:
    """F1 by context-length bucket (tokens of the full context), one row per condition."""
    buckets = sorted(
        {b for r in rows for b in r["by_length"]}, key=lambda b: int(b.split("-")[0].rstrip("+"))
    )
    head = ["method", "rate", *[f"F1 {b} (n)" for b in buckets]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = []
        for b in buckets:
            v = r["by_length"].get(b)
            cells.append("-" if v is None else f"{v['f1']:.3f} ({v['n']})")
        rate = "-" if r["rate"] is None else f"{r['rate']:g}"
        lines.append("| " + " | ".join([r["method"], rate, *cells]) + " |")
    return "\n".join(lines) + "\n"


def write_outputs(
    out: Path,
    records: Sequence[dict[str, Any]],
    rows: Sequence[dict[str, Any]],
    meta: dict[str, Any],
) -> dict[str, Path]:
    """items.jsonl, summary.json, summary.csv and table.md in `out`; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        k: out / v
        for k, v in {
            "items": "items.jsonl",
            "summary": "summary.json",
            "csv": "summary.csv",
            "table": "table.md",
        }.items()
    }
    with paths["items"].open("w", encoding="utf-8") as fh:
        for r in records:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    paths["summary"].write_text(
        json.dumps(
            {**meta, "rows": [{k: _json_safe(v) for k, v in r.items()} for r in rows]},
            indent=2,
            ensure_ascii=False,
        )
    )
    extra_keys = list(dict.fromkeys(k for r in rows for k in r.get("extra") or {}))
    with paths["csv"].open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(
            fh, fieldnames=[*_CSV_FIELDS, *(f"x_{k}" for k in extra_keys)], extrasaction="ignore"
        )
        writer.writeheader()
        for r in rows:
            cells = {k: _json_safe(r.get(k)) for k in _CSV_FIELDS}
            cells.update({f"x_{k}": _json_safe(v) for k, v in (r.get("extra") or {}).items()})
            writer.writerow(cells)
    title = (
        f"{meta.get('dataset')} · reader {meta.get('reader')} · tokens in "
        f"{meta.get('tokenizer')} · n={meta.get('n_items')}"
    )
    note = (
        "rate = kept fraction asked (tokens_out/tokens_in); achieved = measured; "
        "ratio = tokens_in/tokens_out; retention = gold answer still in the context; "
        "EM/F1/acc with SQuAD normalisation, best over gold answers; CI = 95% bootstrap; "
        "prefill tok = mean prompt tokens the reader read (its tokenizer, template included); "
        "FLOPs saved = estimated prefill FLOPs saved against full context.\n"
    )
    extra_md = extra_table(rows)
    failed = meta.get("failed") or {}
    failed_md = "".join(f"- {m} failed: {e}\n" for m, e in failed.items())
    paths["table"].write_text(
        markdown_table(rows, title)
        + "\n"
        + note
        + ("\n" + failed_md if failed_md else "")
        + "\n#### F1 by context length\n\n"
        + length_table(rows)
        + (
            "\n#### Method-reported numbers (CompressionResult.extra)\n\n" + extra_md
            if extra_md
            else ""
        )
    )
    return paths


def _json_safe(v: Any) -> Any:
    if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
        return None
    if isinstance(v, dict):
        return {k: _json_safe(x) for k, x in v.items()}
    return v


def is_baseline(method: str) -> bool:
    return method in FIXED
