"""How a method that is not plain text joins a sweep, and how methods add their own metrics.

Extra metrics: every number a compressor puts in `CompressionResult.extra` (ints and
floats, not bools) is kept per item (`items.jsonl`, key ``extra``) and averaged per
condition (`summary.json`, `summary.csv` as ``x_<key>``, and a table in `table.md`).
Nothing to register: put the number in `extra`.

Reading itself: a method whose compressed context is not text a reader can take (xRAG's
soft tokens: one embedding per document) implements ``eval_answers``. The sweep then
hands it the requests and the local reader, and the method compresses and answers in one
go, through the reader's own model with the reader's fixed prompt
(``reader.prompt(question, context)``, ``reader.model``, ``reader.hf_tokenizer``,
``reader.max_new_tokens``, ``reader.device``), greedy, so its scores compare with every
other method's. It returns, per request, its `CompressionResult` (tokens_out = what the
reader's prompt holds in place of the documents, e.g. one soft token each) and the answer
as a mapping with ``text``, ``prompt_tokens`` (what the reader prefilled), ``answer_tokens``
and ``seconds``. The harness scores it, caches it (so reruns resume) and reports prefill
tokens and estimated prefill FLOPs saved against the full-context baseline, as it does
for every method. Answer retention is not defined for such methods and shows as "-".
The vision methods use the same hook on image questions (``-d easy-vqa``): a request's one
context is an image file, and the method answers through a LLaVA-style reader built around
the reader's model (``ctxzip.compressors.vision.reader.model``), compressing inside it; tokens
in/out are then visual tokens per image.
Compressors must not import ``ctxzip.evals``; the protocol below is duck-typed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from ctxzip.result import CompressionRequest, CompressionResult


@runtime_checkable
class ReadsItself(Protocol):
    """A method that answers through the reader's model (see the module docstring)."""

    def eval_answers(
        self, requests: Sequence[CompressionRequest], reader: Any
    ) -> Sequence[tuple[CompressionResult, Mapping[str, Any]]]: ...


def reads_itself(method: str) -> bool:
    """Whether a registered method implements `eval_answers` (imports its module only)."""
    from ctxzip.registry import compressor_class

    try:
        cls = compressor_class(method)
    except Exception:
        return False
    return callable(getattr(cls, "eval_answers", None))


def numeric_extra(extra: Mapping[str, Any]) -> dict[str, float]:
    """The scalar numbers of a result's `extra` (bools and everything else left out)."""
    return {
        str(k): float(v)
        for k, v in extra.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool)
    }
