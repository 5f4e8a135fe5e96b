"""How a method that is not plain text joins a sweep, and how methods add their own metrics.

Extra metrics: every number a compressor puts in `CompressionResult.extra` (ints and
floats, not bools) is kept per item (`items.jsonl`, key ``extra``) and averaged per
condition (`summary.json`, `summary.csv` as ``x_<key>``, and a table in `table.md`).
Nothing to register: put the number in `extra`.

Reading itself: a method whose compressed context is not text a reader can take declares
so with its class attribute ``kind`` (`ctxzip.compressor.Compressor`: "soft-token" for
xRAG's one embedding per document, "vision" for reduced visual tokens) and implements
``eval_answers``. The sweep reads ``kind`` and nothing else to decide; it then
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

from ctxzip.errors import InputError
from ctxzip.registry import compressor_class
from ctxzip.result import CompressionRequest, CompressionResult

TEXT_KINDS = ("text", "soft-token")
"""Kinds a text QA sweep runs: compressed text, or soft tokens read through the reader's
model. Both count budgets in the reader's tokenizer (they take `tokenizer`)."""
SELF_READING_KINDS = ("soft-token", "vision")
"""Kinds whose output no text reader takes: they answer through `eval_answers`."""


@runtime_checkable
class ReadsItself(Protocol):
    """A method that answers through the reader's model (see the module docstring)."""

    def eval_answers(
        self, requests: Sequence[CompressionRequest], reader: Any
    ) -> Sequence[tuple[CompressionResult, Mapping[str, Any]]]: ...


def method_kind(method: str) -> str:
    """The kind a registered method (or `module:attr` reference) declares: its class's `kind`."""
    kind = getattr(compressor_class(method), "kind", None)
    if not isinstance(kind, str):
        raise InputError(
            f"compressor {method!r} declares no kind (class attribute `kind`: "
            f"text, soft-token, vision or image)"
        )
    return kind


def reads_itself(method: str) -> bool:
    """Whether a method's kind answers through the reader's model (imports its module only)."""
    return method_kind(method) in SELF_READING_KINDS


def numeric_extra(extra: Mapping[str, Any]) -> dict[str, float]:
    """The scalar numbers of a result's `extra` (bools and everything else left out)."""
    return {
        str(k): float(v)
        for k, v in extra.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool)
    }
