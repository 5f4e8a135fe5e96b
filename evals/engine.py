"""Eval sweeps on Ray: the compressions and the reader calls of a sweep spread over workers.

`RaySweep` is a `Sweep` whose work goes to Ray actors (`EvalWorker`, one reader and one
compressor per method each, built once). It hands the workers exactly the batches a
local run makes: each block's compression batches and each block's read chunks, in the
same order and with the same contents, so the models see the same inputs and the
summary matches a local run with the same seed. Several blocks go out at once (a wave)
to keep every worker busy; results are written to the run's cache in the driver as
each wave finishes, so an interrupted run resumes from the cache as a local one does,
and a local run can resume what a Ray run left (the keys are the same).

Methods that answer through the reader's own model (`reads_itself`, e.g. xRAG) run in
the driver as they do locally.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any

from tqdm import tqdm

from ctxzip import distributed
from ctxzip.compressor import Compressor
from ctxzip.evals.baselines import RANDOM
from ctxzip.evals.datasets import QAItem
from ctxzip.evals.hooks import method_kind
from ctxzip.evals.readers import Reader, make_reader
from ctxzip.evals.sweep import (
    Condition,
    Sweep,
    SweepConfig,
    _compression_record,
    _make_compressor,
    _seed_everything,
)
from ctxzip.result import CompressionRequest

WORKER = "ctxzip.evals.engine:EvalWorker"


class EvalWorker:
    """What one Ray worker holds: the reader and the compressors, each built on first use."""

    def __init__(
        self,
        reader: str,
        reader_options: dict[str, Any],
        method_options: dict[str, dict[str, Any]],
        tokenizer: str,
        seed: int,
    ) -> None:
        self.reader_spec = reader
        self.reader_options = reader_options
        self.method_options = method_options
        self.tokenizer = tokenizer
        self.seed = seed
        self._reader: Reader | None = None
        self._compressors: dict[str, Compressor] = {}

    def compress(
        self, method: str, rate: float, requests: list[tuple[list[str], str | None]]
    ) -> dict[str, Any]:
        """``{"records": [...]}`` (the cache's compression records) or ``{"error": ...}``."""
        from ctxzip.budget import Budget

        try:
            if method not in self._compressors:
                options = self.method_options.get(method, {})
                kind = "text" if method == RANDOM else method_kind(method)
                self._compressors[method] = _make_compressor(
                    method, kind, self.tokenizer, options, self.seed
                )
            budget = Budget(rate=rate)
            reqs = [CompressionRequest.of(c, q, budget) for c, q in requests]
            results = self._compressors[method].compress_batch(reqs)
            if not all(isinstance(t, str) for res in results for t in res.texts):
                raise TypeError("the method returns no text and has no eval_answers hook")
        except Exception as exc:
            return {"error": f"{type(exc).__name__}: {exc}"}
        return {"records": [_compression_record(r) for r in results]}

    def read(self, questions: list[str], contexts: list[str]) -> list[dict[str, Any]]:
        """The reader's answers, as the cache stores them."""
        if self._reader is None:
            self._reader = make_reader(self.reader_spec, **self.reader_options)
        _seed_everything(self.seed)
        return [asdict(a) for a in self._reader.answer(questions, contexts)]


class RaySweep(Sweep):
    """A sweep whose compressions and reads run on Ray actors (see the module notes)."""

    def __init__(
        self,
        config: SweepConfig,
        items: list[QAItem],
        reader: Reader,
        ray: Any,
        workers: int,
        cpus_per_worker: float = 1.0,
        progress: bool = True,
        log: Callable[[str], None] = print,
    ) -> None:
        super().__init__(config, items, reader, progress=progress, log=log)
        self.ray = ray
        self.workers = workers
        options = {
            "reader": config.reader,
            "reader_options": config.reader_options,
            "method_options": config.method_options,
            "tokenizer": reader.tokenizer,
            "seed": config.seed,
        }
        self.actors = distributed.actor_pool(
            ray, WORKER, options, workers=workers, cpus_per_worker=cpus_per_worker
        )

    def run(self) -> list[dict[str, Any]]:
        """Compress, read and score everything; return per-item records."""
        conds = self._conditions()
        block = max(1, self.config.block_size)
        blocks = [self.items[s : s + block] for s in range(0, len(self.items), block)]
        wave = max(1, 2 * self.workers)
        bar = tqdm(total=len(self.items), desc="eval", unit="q", disable=not self.progress)
        for start in range(0, len(blocks), wave):
            group = blocks[start : start + wave]
            self._compress_wave(conds, group)
            self._read_wave(conds, group)
            bar.update(sum(len(b) for b in group))
        bar.close()
        return self._records(conds)

    def _compress_wave(self, conds: Sequence[Condition], group: Sequence[list[QAItem]]) -> None:
        jobs: list[tuple[Condition, Sequence[QAItem]]] = []
        calls: list[tuple[Any, ...]] = []
        for chunk in group:
            for cond in conds:
                if cond.rate is None or cond.method in self.errors:
                    continue
                if self._reads_itself(cond.method):
                    self._compress_and_read(cond, chunk)
                    continue
                todo = [it for it in chunk if self._ckey(cond, it) not in self.compressions]
                for sub, requests in self._batches(cond, todo):
                    jobs.append((cond, sub))
                    calls.append(("compress", cond.method, cond.rate, _wire(requests)))
        if not calls:
            return
        for (cond, sub), result in zip(
            jobs, distributed.run_calls(self.ray, self.actors, calls), strict=True
        ):
            if cond.method in self.errors:  # as locally: nothing after the first failure
                continue
            if "error" in result:
                self.errors[cond.method] = result["error"]
                self.log(f"method {cond.method!r} failed and is left out: {result['error']}")
                continue
            for it, record in zip(sub, result["records"], strict=True):
                self.compressions.put(self._ckey(cond, it), record)

    def _read_wave(self, conds: Sequence[Condition], group: Sequence[list[QAItem]]) -> None:
        seen: set[str] = set()
        jobs: list[list[tuple[str, str, str]]] = []
        step = max(1, self.config.read_chunk)
        for chunk in group:  # each block's chunks, as a local run forms them
            prompts = self._prompts(conds, chunk)
            todo = [
                (k, q, c)
                for k, (q, c) in prompts.items()
                if k not in self.answers and k not in seen
            ]
            seen.update(k for k, _, _ in todo)
            todo.sort(key=lambda t: len(t[2]))
            jobs.extend(todo[s : s + step] for s in range(0, len(todo), step))
        calls = [("read", [q for _, q, _ in job], [c for _, _, c in job]) for job in jobs]
        for job, answers in zip(
            jobs, distributed.run_calls(self.ray, self.actors, calls), strict=True
        ):
            for (key, _, _), answer in zip(job, answers, strict=True):
                self.answers.put(key, answer)

    def close(self) -> None:
        super().close()
        for actor in self.actors:
            self.ray.kill(actor)


def _wire(requests: Sequence[CompressionRequest]) -> list[tuple[list[str], str | None]]:
    return [(list(r.contexts), r.query) for r in requests]


def run_ray_sweep(
    config: SweepConfig,
    items: list[QAItem],
    reader: Reader,
    *,
    address: str | None = None,
    workers: int | None = None,
    cpus_per_worker: float = 1.0,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> tuple[list[dict[str, Any]], dict[str, str], float]:
    """`run_sweep` on Ray: records, failed methods and wall seconds."""
    import time

    t0 = time.perf_counter()
    with distributed.ray_session(address, num_cpus=workers) as ray:
        n = workers or distributed.default_workers(ray, cpus_per_worker)
        sweep = RaySweep(config, items, reader, ray, n, cpus_per_worker, progress, log)
        try:
            records = sweep.run()
        finally:
            sweep.close()
    return records, sweep.errors, time.perf_counter() - t0
