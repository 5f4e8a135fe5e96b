"""Compress a whole corpus (JSONL or Parquet) record by record, locally or on Ray.

Each record's text column is compressed on its own (with its query column, if any) and
the output holds, per record, its position (`row`), its id (when the input has an id
column), the compressed text and the accounting: tokens in and out, achieved and
requested rate, method and the compressor's note. Timings are not per record (a batch
shares one model pass) and are left out, so the same input gives the same output on
either engine.

Finished records go to a checkpoint (``OUT.partial.jsonl``) as they come; a rerun with
the same settings skips them, and the final file (JSONL or Parquet, by the suffix of
OUT) is written once everything is done. With ``engine="ray"`` the work is a Ray Data
pipeline whose workers each build the compressor once (`ctxzip.distributed.map_rows`).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from ctxzip import distributed
from ctxzip.budget import Budget
from ctxzip.errors import InputError
from ctxzip.registry import get_compressor
from ctxzip.result import CompressionRequest
from ctxzip.tokens import DEFAULT_TOKENIZER

CHECKPOINT_SUFFIX = ".partial.jsonl"
OUTPUT_COLUMNS = (
    "row",
    "id",
    "compressed",
    "tokens_in",
    "tokens_out",
    "rate",
    "requested_rate",
    "method",
    "reason",
)


@dataclass
class CorpusJob:
    """What to compress and how; everything the output depends on."""

    source: str
    out: str
    method: str
    rate: float | None = None
    target_tokens: int | None = None
    text_column: str = "text"
    query_column: str | None = None
    id_column: str = "id"
    tokenizer: str = DEFAULT_TOKENIZER
    options: dict[str, Any] = field(default_factory=dict)
    batch_size: int = 16

    def budget(self) -> Budget:
        return Budget(rate=self.rate, target_tokens=self.target_tokens)

    def fingerprint(self) -> str:
        """A hash of the settings and the input file's size and mtime (checkpoint guard)."""
        st = os.stat(self.source)
        parts = {
            **asdict(self),
            "out": None,
            "batch_size": None,
            "stat": [st.st_size, st.st_mtime_ns],
        }
        return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


@dataclass
class CorpusReport:
    """What a run did."""

    records: int
    compressed: int  # done in this run (the rest came from the checkpoint)
    tokens_in: int
    tokens_out: int
    seconds: float
    out: Path


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a JSONL or Parquet file as dicts."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        return list(pq.read_table(path).to_pylist())
    if suffix in (".jsonl", ".ndjson", ".json"):
        rows = []
        with path.open(encoding="utf-8") as fh:
            for n, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise InputError(f"{path} line {n}: invalid JSON ({exc.msg})") from None
                if not isinstance(obj, dict):
                    raise InputError(f"{path} line {n}: expected a JSON object")
                rows.append(obj)
        return rows
    raise InputError(f"{path}: expected .jsonl or .parquet")


def write_records(path: str | Path, rows: Sequence[dict[str, Any]]) -> Path:
    """Rows to JSONL or Parquet (by suffix), written to a temporary file then renamed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    if path.suffix.lower() == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(list(rows)), tmp)
    else:
        with tmp.open("w", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    tmp.replace(path)
    return path


def compress_rows(
    method: str,
    tokenizer: str,
    options: dict[str, Any],
    rate: float | None,
    target_tokens: int | None,
) -> Callable[[list[dict[str, Any]]], list[dict[str, Any]]]:
    """The per-batch work, built once per worker: rows {row, id, text, query} -> output rows."""
    compressor = get_compressor(method, tokenizer=tokenizer, **options)
    budget = Budget(rate=rate, target_tokens=target_tokens)

    def run(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        live = [i for i, r in enumerate(rows) if str(r["text"]).strip()]
        requests = [
            CompressionRequest.of([rows[i]["text"]], rows[i]["query"] or None, budget) for i in live
        ]
        results = dict(zip(live, compressor.compress_batch(requests), strict=True)) if live else {}
        out = []
        for i, r in enumerate(rows):
            res = results.get(i)
            out.append(
                {
                    "row": int(r["row"]),
                    "id": r["id"],
                    "compressed": res.text if res else "",
                    "tokens_in": res.tokens_in if res else 0,
                    "tokens_out": res.tokens_out if res else 0,
                    "rate": round(res.rate, 6) if res else 1.0,
                    "requested_rate": round(res.requested_rate, 6) if res else 1.0,
                    "method": res.method if res else method,
                    "reason": (res.reason if res else "empty text") or "",
                }
            )
        return out

    return run


def _inputs(job: CorpusJob, records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for n, rec in enumerate(records):
        text = rec.get(job.text_column)
        if not isinstance(text, str):
            raise InputError(f"record {n}: column {job.text_column!r} must be a string")
        query = rec.get(job.query_column) if job.query_column else None
        if query is not None and not isinstance(query, str):
            raise InputError(f"record {n}: column {job.query_column!r} must be a string")
        raw_id = rec.get(job.id_column)
        rows.append(
            {
                "row": n,
                "id": "" if raw_id is None else str(raw_id),
                "text": text,
                "query": query or "",
            }
        )
    return rows


class Checkpoint:
    """Finished output rows, one JSON line each, after a header with the job's fingerprint."""

    def __init__(self, path: Path, fingerprint: str) -> None:
        self.path = path
        self.done: dict[int, dict[str, Any]] = {}
        if path.exists():
            lines = path.read_text(encoding="utf-8").splitlines()
            header = _json_or_none(lines[0]) if lines else None
            if not header or header.get("fingerprint") != fingerprint:
                raise InputError(
                    f"{path} is a checkpoint of different settings or input; "
                    "delete it to start over"
                )
            for line in lines[1:]:
                row = _json_or_none(line)  # a torn last line is skipped
                if row is not None and "row" in row:
                    self.done[int(row["row"])] = row
            self._fh = path.open("a", encoding="utf-8")
            if path.read_bytes()[-1:] != b"\n":
                self._fh.write("\n")
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = path.open("w", encoding="utf-8")
            self._fh.write(json.dumps({"fingerprint": fingerprint}) + "\n")
            self._fh.flush()

    def add(self, row: dict[str, Any]) -> None:
        self.done[int(row["row"])] = row
        self._fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()


def _json_or_none(line: str) -> dict[str, Any] | None:
    try:
        value = json.loads(line)
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def _local(job: CorpusJob, rows: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    run = compress_rows(job.method, job.tokenizer, job.options, job.rate, job.target_tokens)
    for start in range(0, len(rows), job.batch_size):
        yield from run(rows[start : start + job.batch_size])


def _ray(
    job: CorpusJob,
    rows: list[dict[str, Any]],
    address: str | None,
    workers: int | None,
    cpus_per_worker: float,
) -> Iterator[dict[str, Any]]:
    options = {
        "method": job.method,
        "tokenizer": job.tokenizer,
        "options": job.options,
        "rate": job.rate,
        "target_tokens": job.target_tokens,
    }
    cpus = math.ceil(workers * cpus_per_worker) if workers else None  # a local Ray's size
    with distributed.ray_session(address, num_cpus=cpus) as ray:
        n = workers or distributed.default_workers(ray, cpus_per_worker)
        yield from distributed.map_rows(
            ray,
            rows,
            "ctxzip.middleware.corpus:compress_rows",
            options,
            workers=n,
            batch_size=job.batch_size,
            cpus_per_worker=cpus_per_worker,
        )


def compress_corpus(
    job: CorpusJob,
    *,
    engine: str = "local",
    address: str | None = None,
    workers: int | None = None,
    cpus_per_worker: float = 1.0,
    progress: bool = True,
) -> CorpusReport:
    """Compress every record of `job.source` into `job.out`, resuming from a checkpoint."""
    import time

    if engine not in distributed.ENGINES:
        raise InputError(f"engine must be one of {distributed.ENGINES}, not {engine!r}")
    job.budget()  # a bad budget fails before any work
    t0 = time.perf_counter()
    rows = _inputs(job, read_records(job.source))
    out = Path(job.out)
    if out.suffix.lower() not in (".jsonl", ".parquet"):
        raise InputError(f"--out {out}: expected a .jsonl or .parquet file name")
    checkpoint = Checkpoint(out.with_name(out.name + CHECKPOINT_SUFFIX), job.fingerprint())
    todo = [r for r in rows if r["row"] not in checkpoint.done]
    bar = tqdm(total=len(rows), initial=len(rows) - len(todo), desc="compress", unit="rec",
               disable=not progress)  # fmt: skip
    try:
        if todo:
            stream = (
                _local(job, todo)
                if engine == "local"
                else _ray(job, todo, address, workers, cpus_per_worker)
            )
            for row in stream:
                checkpoint.add(row)
                bar.update(1)
    finally:
        bar.close()
        checkpoint.close()
    final = [checkpoint.done[r["row"]] for r in rows]
    write_records(out, final)
    checkpoint.path.unlink()
    return CorpusReport(
        records=len(rows),
        compressed=len(todo),
        tokens_in=sum(r["tokens_in"] for r in final),
        tokens_out=sum(r["tokens_out"] for r in final),
        seconds=time.perf_counter() - t0,
        out=out,
    )
