"""The hooks a non-text method (xRAG-style) uses: reading through the reader's model, extra metrics."""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import pytest

from ctxzip.compressor import BaseCompressor, Compressed
from ctxzip.evals import datasets, report
from ctxzip.evals.hooks import ReadsItself, method_kind, numeric_extra, reads_itself
from ctxzip.evals.readers import LocalReader, OpenAIReader, clean_answer
from ctxzip.evals.sweep import SweepConfig, resolve_methods, run_sweep
from ctxzip.registry import compressor_names, get_compressor
from ctxzip.result import CompressionRequest, CompressionResult

METHOD = "test_eval_hooks:SoftEcho"  # a `module:attr` reference, as plugins may give


class SoftEcho(BaseCompressor):
    """Truncates, then reads its context as input embeddings (the path soft tokens take).

    The embeddings are the model's own for the text, so its answers must equal what the
    text reader answers for the same truncation: the hook changes nothing but the route.
    """

    name = "soft-echo"
    kind: ClassVar[str] = "soft-token"  # what makes the sweep route it through eval_answers
    calls = 0

    def __init__(self, *, tokenizer: str = "gpt-4o") -> None:
        super().__init__(tokenizer=tokenizer)
        self._truncate = get_compressor("truncate", tokenizer=tokenizer)

    def _compress_requests(self, requests: list[CompressionRequest]) -> list[Compressed]:
        results = self._truncate.compress_batch(requests)
        return [Compressed(kept=r.kept, extra={"soft_tokens": len(r.texts)}) for r in results]

    def eval_answers(
        self, requests: Sequence[CompressionRequest], reader: Any
    ) -> list[tuple[CompressionResult, Mapping[str, Any]]]:
        import torch

        type(self).calls += len(requests)
        out = []
        for req, res in zip(requests, self.compress_batch(list(requests)), strict=True):
            prompt = reader.prompt(req.query or "", res.text)
            ids = reader.hf_tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
            ids = ids.to(reader.device)
            t0 = time.perf_counter()
            with torch.inference_mode():
                embeds = reader.model.get_input_embeddings()(ids["input_ids"])
                new = reader.model.generate(
                    inputs_embeds=embeds,
                    attention_mask=ids["attention_mask"],
                    max_new_tokens=reader.max_new_tokens,
                    do_sample=False,
                    pad_token_id=reader.hf_tokenizer.pad_token_id,
                )[0]
            text = reader.hf_tokenizer.decode(new, skip_special_tokens=True)
            out.append(
                (
                    res,
                    {
                        "text": clean_answer(text),
                        "prompt_tokens": int(ids["input_ids"].shape[1]),
                        "answer_tokens": len(new),
                        "seconds": time.perf_counter() - t0,
                    },
                )
            )
        return out


@pytest.fixture(scope="module")
def reader() -> LocalReader:
    return LocalReader(max_new_tokens=8, batch_size=1)


def _quiet(_: str) -> None:
    pass


def test_numeric_extra_keeps_numbers_only() -> None:
    extra = {"units": 3, "score": 0.5, "skipped": True, "why": "x", "vec": [1.0]}
    assert numeric_extra(extra) == {"units": 3.0, "score": 0.5}
    assert isinstance(SoftEcho(), ReadsItself)


@pytest.mark.slow
def test_a_method_that_reads_itself(tmp_path: Path, reader: LocalReader) -> None:
    items = datasets.load_dataset("pyref")[:2]
    config = SweepConfig(methods=[METHOD, "truncate"], rates=[0.3], out=str(tmp_path))
    SoftEcho.calls = 0
    records, failed, _ = run_sweep(config, items, reader, progress=False, log=_quiet)
    assert not failed and SoftEcho.calls == 2
    by = {(r["method"], r["id"]): r for r in records}
    for it in items:
        soft, text = by[(METHOD, it.id)], by[("truncate", it.id)]
        assert soft["prediction"] == text["prediction"]  # same context, same greedy model
        assert soft["prompt_tokens"] == text["prompt_tokens"] > 0
        assert soft["retained"] is None  # not defined for a context that is not text
        assert soft["extra"] == {"soft_tokens": float(len(it.contexts))}
        assert soft["achieved_rate"] <= 0.3 + 1e-9
        full = by[("full", it.id)]
        assert 0 < text["prefill_flops"] < full["prefill_flops"]
    rows = report.summarize(records)
    paths = report.write_outputs(tmp_path, records, rows, {"dataset": "pyref", "n_items": 2})
    summary = {
        (r["method"], r["rate"]): r for r in json.loads(paths["summary"].read_text())["rows"]
    }
    assert summary[(METHOD, 0.3)]["retention"] is None
    assert summary[(METHOD, 0.3)]["extra"] == {"soft_tokens": 4.0}
    assert summary[("full", None)]["flops_saved"] == 0.0
    assert 0.3 < summary[("truncate", 0.3)]["flops_saved"] < 1.0
    assert (
        summary[("no-context", None)]["prefill_saved"] > summary[("truncate", 0.3)]["prefill_saved"]
    )
    with paths["csv"].open() as fh:
        csv_rows = {(r["method"], r["rate"]): r for r in csv.DictReader(fh)}
    assert float(csv_rows[(METHOD, "0.3")]["x_soft_tokens"]) == 4.0
    table = paths["table"].read_text()
    assert "soft_tokens=4.000" in table and "FLOPs saved" in table
    # a rerun answers from the cache: the method is not asked again
    again, _, _ = run_sweep(config, items, reader, progress=False, log=_quiet)
    assert SoftEcho.calls == 2
    assert [r["prediction"] for r in again] == [r["prediction"] for r in records]


def test_a_method_that_reads_itself_needs_a_local_reader(tmp_path: Path) -> None:
    items = datasets.load_dataset("pyref")[:1]
    remote = OpenAIReader("gpt-4o-mini", base_url="http://127.0.0.1:9/v1", retries=0)
    config = SweepConfig(methods=[METHOD], rates=[0.5], out=str(tmp_path), baselines=False)
    records, failed, _ = run_sweep(config, items, remote, progress=False, log=_quiet)
    assert records == [] and "use a local reader" in failed[METHOD]


def test_all_means_every_text_method() -> None:
    chosen = resolve_methods(["all"])
    assert {"extractive", "token-classification"} <= set(chosen)
    assert "xrag" in chosen  # soft tokens: read through the reader's model (hooks)
    assert not {"noop", "truncate"} & set(chosen)  # the baselines cover them
    for name in compressor_names():
        if name.startswith("vision") or name == "image-budget":  # images, not text
            assert name not in chosen


def test_the_sweep_reads_the_kind_each_method_declares() -> None:
    assert method_kind("extractive") == "text" and not reads_itself("extractive")
    assert method_kind("xrag") == "soft-token" and reads_itself("xrag")
    assert method_kind("vision-merge") == "vision" and reads_itself("vision-merge")
    assert method_kind(METHOD) == "soft-token" and reads_itself(METHOD)
