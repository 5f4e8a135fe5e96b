"""Corpus compression throughput: the local engine vs Ray with 1 and 2 workers.

Compresses `--n` records (pyref questions with their four passages joined, about 400
tokens each; query-aware, so every record is its own request) with `--method` at
`--rate`, through `ctxzip.middleware.corpus.compress_corpus`, once per engine, and
reports records/s. The local engine runs warm (the driver has loaded the model first);
each Ray run includes its workers' start and model load (what a job pays); the Ray
instance itself is started once beforehand (`--cpus`) and its start time is reported
on its own. The engines take turns `--repeat` times and the median is reported, so load
from other jobs on a shared machine hits them alike. Outputs are checked to be
identical across engines. Run:

    TOKENIZERS_PARALLELISM=false .venv/bin/python benchmarks/bench_scale_out.py \
        [--n 64] [--method extractive] [--rate 0.3] [--cpus 2] [--repeat 2]
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
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()

    import statistics

    import ray

    from ctxzip.encoder import _encoders
    from ctxzip.evals.datasets import load_dataset
    from ctxzip.middleware.corpus import CorpusJob, compress_corpus, compress_rows, read_records
    from ctxzip.tokens import DEFAULT_TOKENIZER

    items = load_dataset("pyref")
    rows = [
        {"id": f"{it.id}-{n}", "text": "\n\n".join(it.contexts), "question": it.question}
        for n, it in enumerate(items * (1 + args.n // len(items)))
    ][: args.n]
    tmp = Path(tempfile.mkdtemp(prefix="bench-scale-out-"))
    source = tmp / "in.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))

    def run(name: str, engine: str, workers: int | None) -> tuple[float, list[dict[str, object]]]:
        for encoder in _encoders.values():  # no sentence seen in an earlier run is free
            encoder.clear_cache()
        out = tmp / f"{name}.jsonl"
        job = CorpusJob(str(source), str(out), args.method, rate=args.rate,
                        query_column="question", batch_size=args.batch_size)  # fmt: skip
        t0 = time.perf_counter()
        compress_corpus(job, engine=engine, workers=workers, progress=False)
        return time.perf_counter() - t0, read_records(out)

    print(f"{args.n} records, {args.method} @ {args.rate}, batch {args.batch_size}, "
          f"{os.cpu_count()} CPUs on this machine")  # fmt: skip
    warm = compress_rows(args.method, DEFAULT_TOKENIZER, {}, args.rate, None)  # load once
    warm([{"row": 0, "id": "", "text": rows[0]["text"], "query": rows[0]["question"]}])
    t0 = time.perf_counter()
    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
    print(f"local Ray start ({args.cpus} CPUs): {time.perf_counter() - t0:.1f}s (not counted)")
    names = {"local": "local (1 process, warm)", "ray1": "ray, 1 worker", "ray2": "ray, 2 workers"}
    times: dict[str, list[float]] = {k: [] for k in names}
    expected = None
    try:
        for _ in range(args.repeat):
            for key in names:
                engine, workers = ("local", None) if key == "local" else ("ray", int(key[3:]))
                seconds, got = run(key, engine, workers)
                expected = expected or got
                assert got == expected, f"{key} differs from the first run"
                times[key].append(seconds)
    finally:
        ray.shutdown()
    print("| engine | seconds (median) | records/s | vs local | runs (s) |")
    print("|---|---|---|---|---|")
    base = statistics.median(times["local"])
    for key, name in names.items():
        med = statistics.median(times[key])
        runs = ", ".join(f"{t:.0f}" for t in times[key])
        print(f"| {name} | {med:.1f} | {args.n / med:.2f} | {base / med:.2f}x | {runs} |")
    print("outputs identical across engines")


if __name__ == "__main__":
    main()
