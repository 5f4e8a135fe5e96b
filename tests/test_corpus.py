"""`ctxzip compress-corpus`: JSONL/Parquet in and out, resume, and Ray giving the same output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ctxzip.cli import main
from ctxzip.evals.datasets import load_dataset
from ctxzip.middleware import corpus
from ctxzip.middleware.corpus import CorpusJob, compress_corpus, read_records


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Eight pyref questions, their passages joined, as Parquet (and one empty record)."""
    items = load_dataset("pyref")[:8]
    rows = [
        {"id": it.id, "text": "\n\n".join(it.contexts), "question": it.question} for it in items
    ]
    rows.append({"id": "empty", "text": "  ", "question": "nothing"})
    path = tmp_path_factory.mktemp("corpus") / "in.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def _args(source: Path, out: Path, *extra: str) -> list[str]:
    return ["compress-corpus", str(source), "--out", str(out), "-m", "extractive",
            "--rate", "0.3", "--query-column", "question", "--batch-size", "4",
            "--no-progress", *extra]  # fmt: skip


@pytest.fixture(scope="module")
def local_rows(source: Path, tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    out = tmp_path_factory.mktemp("local") / "out.jsonl"
    assert main(_args(source, out)) == 0
    return [json.loads(line) for line in out.read_text().splitlines()]


@pytest.mark.slow
def test_local_engine_writes_text_and_stats_per_record(local_rows: list[dict[str, Any]]) -> None:
    assert [r["row"] for r in local_rows] == list(range(9))
    assert set(local_rows[0]) == set(corpus.OUTPUT_COLUMNS)
    for r in local_rows[:8]:
        assert r["method"] == "extractive" and r["id"].startswith("pyref-")
        assert 0 < r["tokens_out"] < r["tokens_in"] and r["compressed"]
        assert r["rate"] == pytest.approx(r["tokens_out"] / r["tokens_in"], abs=1e-5)
        assert r["requested_rate"] == pytest.approx(0.3, abs=0.01)
    assert local_rows[8]["compressed"] == "" and local_rows[8]["reason"] == "empty text"


@pytest.mark.slow
def test_an_interrupted_run_resumes(
    source: Path, tmp_path: Path, local_rows: list[dict[str, Any]], monkeypatch: Any
) -> None:
    real = corpus.compress_rows

    def failing(*args: Any, **kwargs: Any) -> Any:
        run = real(*args, **kwargs)
        calls = []

        def once(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
            calls.append(1)
            if len(calls) > 1:
                raise KeyboardInterrupt
            return run(rows)

        return once

    out = tmp_path / "out.parquet"
    job = CorpusJob(str(source), str(out), "extractive", rate=0.3, query_column="question",
                    batch_size=4)  # fmt: skip
    monkeypatch.setattr(corpus, "compress_rows", failing)
    with pytest.raises(KeyboardInterrupt):
        compress_corpus(job, progress=False)
    checkpoint = out.with_name(out.name + corpus.CHECKPOINT_SUFFIX)
    assert not out.exists() and len(checkpoint.read_text().splitlines()) == 1 + 4
    monkeypatch.setattr(corpus, "compress_rows", real)
    report = compress_corpus(job, progress=False)
    assert report.compressed == 5 and report.records == 9 and not checkpoint.exists()
    assert read_records(out) == local_rows  # Parquet out holds what JSONL out holds

    other = CorpusJob(str(source), str(out), "extractive", rate=0.5, batch_size=4)
    checkpoint.write_text(json.dumps({"fingerprint": "other settings"}) + "\n")
    with pytest.raises(Exception, match="checkpoint of different settings"):
        compress_corpus(other, progress=False)


@pytest.mark.slow
@pytest.mark.ray
def test_ray_engine_gives_the_same_output(
    source: Path, tmp_path: Path, local_rows: list[dict[str, Any]], ray_local: Any
) -> None:
    out = tmp_path / "ray.jsonl"
    assert main(_args(source, out, "--engine", "ray", "--workers", "2")) == 0
    assert [json.loads(line) for line in out.read_text().splitlines()] == local_rows
    assert ray_local.is_initialized()  # the test's Ray was used, not stopped


def test_bad_input_is_refused(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text('{"body": "no text column"}\n')
    out = tmp_path / "out.jsonl"
    assert main(["compress-corpus", str(src), "--out", str(out), "-m", "truncate",
                 "--rate", "0.5", "--no-progress"]) == 1  # fmt: skip
    assert main(["compress-corpus", str(src), "--out", str(out), "-m", "truncate"]) == 2
    src.write_text('{"text": "one two three four"}\n')
    assert main(["compress-corpus", str(src), "--out", str(tmp_path / "o.csv"), "-m",
                 "truncate", "--rate", "0.5"]) == 1  # fmt: skip


@pytest.mark.ray
def test_ray_engine_joins_an_existing_cluster(source: Path, tmp_path: Path, ray_local: Any) -> None:
    """A separate driver process reaches the test's Ray through --address (or RAY_ADDRESS)."""
    address = ray_local.get_runtime_context().gcs_address
    local, remote = tmp_path / "local.jsonl", tmp_path / "remote.jsonl"
    args = ["compress-corpus", str(source), "-m", "truncate", "--rate", "0.5", "--no-progress"]
    assert main([*args, "--out", str(local)]) == 0
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    done = subprocess.run(
        [sys.executable, "-m", "ctxzip.cli", *args, "--out", str(remote), "--engine", "ray",
         "--address", address, "--workers", "1"],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert remote.read_text() == local.read_text()
    assert ray_local.is_initialized()  # the cluster outlives the job that joined it
