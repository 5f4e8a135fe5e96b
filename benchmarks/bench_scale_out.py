"""Corpus compression throughput: the local engine vs Ray with 1 and 2 workers.

Compresses `--n` records (pyref questions with their four passages joined, about 400
tokens each; query-aware, so every record is its own request) with `--method` at
`--rate`, through `ctxzip.middleware.corpus.compress_corpus`, once per engine, and
reports records/s. Each Ray run includes its workers' start and model load (what a job
pays); the Ray instance itself is started once beforehand (`--cpus`) and its start
time is reported on its own. Outputs are checked to be identical across engines. Run:

    TOKENIZERS_PARALLELISM=false .venv/bin/python benchmarks/bench_scale_out.py \
        [--n 64] [--method extractive] [--rate 0.3] [--cpus 2]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--method", default="extractive")
    parser.add_argument("--rate", type=float, default=0.3)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray instance.")
    args = parser.parse_args()

    import ray

    from ctxzip.evals.datasets import load_dataset
    from ctxzip.middleware.corpus import CorpusJob, compress_corpus, read_records

    items = load_dataset("pyref")
    rows = [
        {"id": f"{it.id}-{n}", "text": "\n\n".join(it.contexts), "question": it.question}
        for n, it in enumerate(items * (1 + args.n // len(items)))
    ][: args.n]
    tmp = Path(tempfile.mkdtemp(prefix="bench-scale-out-"))
    source = tmp / "in.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))

    def run(name: str, engine: str, workers: int | None) -> tuple[float, list[dict[str, object]]]:
        out = tmp / f"{name}.jsonl"
        job = CorpusJob(str(source), str(out), args.method, rate=args.rate,
                        query_column="question", batch_size=args.batch_size)  # fmt: skip
        t0 = time.perf_counter()
        compress_corpus(job, engine=engine, workers=workers, progress=False)
        return time.perf_counter() - t0, read_records(out)

    print(f"{args.n} records, {args.method} @ {args.rate}, batch {args.batch_size}, "
          f"{os.cpu_count()} CPUs on this machine")  # fmt: skip
    results = []
    seconds, expected = run("local", "local", None)
    results.append(("local (1 process)", seconds))
    t0 = time.perf_counter()
    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
    print(f"local Ray start ({args.cpus} CPUs): {time.perf_counter() - t0:.1f}s (not counted)")
    try:
        for workers in (1, 2):
            seconds, got = run(f"ray{workers}", "ray", workers)
            assert got == expected, f"ray with {workers} workers differs from local"
            results.append((f"ray, {workers} worker{'s' if workers > 1 else ''}", seconds))
    finally:
        ray.shutdown()
    print("| engine | seconds | records/s | vs local |")
    print("|---|---|---|---|")
    base = results[0][1]
    for name, seconds in results:
        print(f"| {name} | {seconds:.1f} | {args.n / seconds:.2f} | {base / seconds:.2f}x |")
    print("outputs identical across engines")


if __name__ == "__main__":
    main()
