"""xRAG: each document becomes one soft token (or k) in a local LM's input.

The retriever embedding of a document goes through a trained projector into the LM's
input-embedding space and replaces a placeholder token (``inputs_embeds``), so the LM
reads a whole document as one position. Documents from the ctxzip store are not
re-embedded: their stored vectors are projected directly (`compress_ids`), which is
why the store, the retriever and the projector must share one embedding model.

Capacity knob: ``tokens_per_doc=k`` cuts a document into k segments (at sentence
boundaries), embeds each and gives it k soft tokens; documents longer than
``chunk_tokens`` LM tokens get one token per chunk at least. The result's ``texts`` hold
the placeholders (``<xRAG>``), ``tokens_out`` counts soft tokens, and
``extra["soft_tokens"]`` the same; the vectors themselves are in `soft_tokens(result)`.

White-box only: the method needs the LM's input embeddings, so it is unavailable for
black-box API models (OpenAI, Anthropic, any remote upstream) and says so.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from ctxzip.budget import Budget
from ctxzip.compressor import BaseCompressor, Compressed
from ctxzip.compressors.reader_prompt import SYSTEM_PROMPT, USER_TEMPLATE
from ctxzip.compressors.xrag.inject import PLACEHOLDER, chat_prompt, encode_with_slots, generate
from ctxzip.compressors.xrag.projector import (
    PairMismatchError,
    Projector,
    ProjectorManifest,
    find_pair,
    load_paper_projector,
    load_projector,
    same_model,
)
from ctxzip.errors import InputError
from ctxzip.models import MINILM, SMOLLM, load_causal_lm, load_sentence_transformer
from ctxzip.result import CompressionRequest, CompressionResult
from ctxzip.units import split_sentences

DEFAULT_LM = SMOLLM
DEFAULT_RETRIEVER = MINILM
# Stage 2 trains in the readers' one question format, the one `answer()` asks in.
QA_SYSTEM = SYSTEM_PROMPT
QA_USER = USER_TEMPLATE
BLACK_BOX_PREFIXES = ("gpt-", "o1", "o3", "o4", "claude", "gemini", "openai:", "anthropic:")


class XragUnavailableError(InputError):
    """xRAG was asked to serve a model whose input embeddings it cannot reach."""


def is_black_box(model: str) -> bool:
    """A hosted API model (OpenAI, Anthropic, ...) that takes text only."""
    m = model.lower()
    return m.startswith(BLACK_BOX_PREFIXES) or m.startswith(("http://", "https://"))


def check_white_box(model: str) -> None:
    if is_black_box(model):
        raise XragUnavailableError(
            f"xrag needs a local Hugging Face causal LM (it writes input embeddings); "
            f"{model!r} is a black-box API model: use a text compressor, or the proxy's "
            f"embedded local upstream"
        )


class XragCompressor(BaseCompressor):
    """Documents as soft tokens for a local causal LM (see the module docstring)."""

    name: ClassVar[str] = "xrag"
    kind: ClassVar[str] = "soft-token"

    def __init__(
        self,
        *,
        lm: str = DEFAULT_LM,
        retriever: str = DEFAULT_RETRIEVER,
        projector: str | None = None,
        tokens_per_doc: int = 1,
        chunk_tokens: int = 180,
        device: str = "auto",
        dtype: str = "auto",
        batch_size: int = 32,
        tokenizer: str | None = None,
    ) -> None:
        check_white_box(lm)
        if tokenizer is not None:  # the reader the caller targets (e.g. the proxy's upstream)
            check_white_box(tokenizer)
        if tokens_per_doc < 1:
            raise InputError("tokens_per_doc must be >= 1")
        if chunk_tokens < 8:
            raise InputError("chunk_tokens must be >= 8")
        super().__init__(tokenizer=tokenizer or lm)
        self.lm_id = lm
        self.retriever_id = retriever
        self.projector_path = projector
        self.tokens_per_doc = int(tokens_per_doc)
        self.chunk_tokens = int(chunk_tokens)
        self.device_name = device
        self.dtype_name = dtype
        self.batch_size = batch_size
        self._lock = threading.Lock()
        self._projector: Projector | None = None
        self._manifest: ProjectorManifest | None = None
        self._lm: Any = None
        self._lm_tok: Any = None

    # --- models ---------------------------------------------------------------------

    def projector(self) -> tuple[Projector, ProjectorManifest]:
        """The projector for (retriever, lm), loaded once; fails clearly on a mismatched pair."""
        with self._lock:
            if self._projector is None:
                location = self.projector_path or find_pair(self.retriever_id, self.lm_id)
                if location is None:
                    raise PairMismatchError(
                        f"no projector pairs retriever {self.retriever_id!r} with LM "
                        f"{self.lm_id!r}; train one (`ctxzip train xrag --retriever ... --lm "
                        f"...`) and pass projector=PATH"
                    )
                if location.startswith("paper:"):
                    proj, manifest = load_paper_projector(self.lm_id, self.retriever_id)
                elif (Path(location) / "config.json").exists():
                    proj, manifest = load_paper_projector(location, self.retriever_id)
                else:
                    proj, manifest = load_projector(location, self.retriever_id, self.lm_id)
                lm, _ = self.lm()
                width = lm.get_input_embeddings().weight.shape[1]
                if manifest.lm_dim != width:
                    raise PairMismatchError(
                        f"projector outputs {manifest.lm_dim}-d vectors but {self.lm_id!r} "
                        f"embeds tokens in {width}-d"
                    )
                param = next(lm.parameters())
                self._projector = proj.to(param.device, param.dtype).eval()
                self._manifest = manifest
            assert self._manifest is not None
            return self._projector, self._manifest

    def lm(self) -> tuple[Any, Any]:
        if self._lm is None:
            self._lm, self._lm_tok = load_causal_lm(
                self.lm_id, device=self.device_name, dtype=self.dtype_name
            )
        return self._lm, self._lm_tok

    def use_lm(self, model: Any, tokenizer: Any) -> None:
        """Read with an already loaded LM (the eval reader's, the proxy's local upstream)."""
        self._lm, self._lm_tok = model, tokenizer

    # --- embeddings -----------------------------------------------------------------

    def segments(self, text: str) -> list[str]:
        """A context cut into its soft-token segments (at sentence boundaries)."""
        _, tok = self.lm()
        n_tok = len(tok(text, add_special_tokens=False)["input_ids"])
        k = max(self.tokens_per_doc, math.ceil(n_tok / self.chunk_tokens))
        if k == 1:
            return [text]
        units = [u.text for u in split_sentences(text)] or [text]
        if len(units) < k:  # too few sentences: cut by words
            words = text.split()
            size = math.ceil(len(words) / k)
            return [" ".join(words[i : i + size]) for i in range(0, len(words), size)]
        step = len(units) / k
        return [" ".join(units[round(i * step) : round((i + 1) * step)]).strip() for i in range(k)]

    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        """Retriever vectors (L2-normalised, as the store keeps them)."""
        model = load_sentence_transformer(self.retriever_id, device=self.device_name)
        vecs = model.encode(
            list(texts),
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_tensor=True,
            show_progress_bar=False,
        )
        return vecs.float()

    @torch.no_grad()
    def project(self, vectors: Any) -> torch.Tensor:
        """Soft tokens ``[n, lm_dim]`` for retriever vectors ``[n, retriever_dim]``."""
        proj, manifest = self.projector()
        vecs = torch.as_tensor(vectors, dtype=torch.float32)
        if vecs.ndim != 2 or vecs.shape[1] != manifest.retriever_dim:
            raise PairMismatchError(
                f"vectors of shape {tuple(vecs.shape)} do not fit the projector "
                f"({manifest.retriever_dim}-d, retriever {manifest.retriever!r})"
            )
        vecs = F.normalize(vecs, dim=-1)
        param = next(proj.parameters())
        return proj(vecs.to(param.device, param.dtype))

    # --- compressor API -------------------------------------------------------------

    def _compress_requests(self, requests: list[CompressionRequest]) -> list[Compressed]:
        self.projector()  # a missing or mismatched pair fails before any model work
        pieces = [[self.segments(c) for c in r.contexts] for r in requests]
        flat = [s for per_req in pieces for per_ctx in per_req for s in per_ctx]
        soft = self.project(self.embed(flat)) if flat else torch.zeros(0)
        out: list[Compressed] = []
        at = 0
        for per_req in pieces:
            counts = [len(p) for p in per_req]
            n = sum(counts)
            out.append(
                Compressed(
                    kept=[[] for _ in per_req],
                    texts=[PLACEHOLDER * c for c in counts],
                    reason="soft tokens: one per document segment",
                    extra={"soft_tokens": n, "_vectors": soft[at : at + n]},
                )
            )
            at += n
        return out

    def _account(
        self, request: CompressionRequest, outcome: Compressed, seconds: float
    ) -> CompressionResult:
        result = super()._account(request, outcome, seconds)
        result.tokens_out = int(outcome.extra["soft_tokens"])
        return result

    def compress_ids(
        self, store: Any, ids: Sequence[str], query: str | None = None
    ) -> CompressionResult:
        """Soft tokens for documents already in a ctxzip store, from their stored vectors."""
        stored = getattr(getattr(store, "embedder", None), "model_id", None)
        if stored is not None and not same_model(stored, self.retriever_id):
            raise PairMismatchError(
                f"the store was embedded with {stored!r} but this projector expects "
                f"{self.retriever_id!r}: re-index with that model or use a matching projector"
            )
        start = time.perf_counter()
        docs = store.get(list(ids)) if hasattr(store, "get") else None
        texts = [getattr(d, "text", "") for d in docs] if docs else ["" for _ in ids]
        try:
            vectors = store.get_vectors(list(ids))
        except KeyError as exc:
            raise InputError(f"document id {exc.args[0]!r} is not in the store") from exc
        soft = self.project(vectors)
        tokens_in = self.count(texts)
        return CompressionResult(
            texts=[PLACEHOLDER] * len(ids),
            kept=[[] for _ in ids],
            tokens_in=tokens_in,
            tokens_out=len(ids),
            tokenizer=self.tokenizer.name,
            requested_rate=len(ids) / tokens_in if tokens_in else 1.0,
            seconds=time.perf_counter() - start,
            method=self.name,
            budget=Budget(target_tokens=max(len(ids), 1)),
            reason="soft tokens from stored vectors",
            extra={"soft_tokens": len(ids), "_vectors": soft, "store_ids": list(ids)},
        )

    # --- reading --------------------------------------------------------------------

    def prompt(self, question: str, result: CompressionResult, template: str = QA_USER) -> str:
        """The LM's chat prompt with one placeholder per soft token of `result`."""
        _, tok = self.lm()
        context = " ".join(t for t in result.texts if t)
        return chat_prompt(tok, template.format(context=context, question=question), QA_SYSTEM)

    def answer(
        self,
        questions: Sequence[str],
        results: Sequence[CompressionResult],
        max_new_tokens: int = 32,
        prompts: Sequence[str] | None = None,
    ) -> list[str]:
        """Greedy answers from the LM reading each result's soft tokens (batched)."""
        lm, tok = self.lm()
        if prompts is None:
            prompts = [self.prompt(q, r) for q, r in zip(questions, results, strict=True)]
        answers: list[str] = []
        for start in range(0, len(prompts), self.batch_size):
            chunk = slice(start, start + self.batch_size)
            answers += generate(
                lm,
                tok,
                prompts[chunk],
                [soft_tokens(r) for r in results[chunk]],
                max_new_tokens=max_new_tokens,
            )
        return answers

    def eval_answers(
        self, requests: Sequence[CompressionRequest], reader: Any
    ) -> list[tuple[CompressionResult, Mapping[str, Any]]]:
        """The eval harness hook: compress and answer through the reader's own model/prompt."""
        reader_id = getattr(reader, "model_id", None)
        if reader_id is not None and not same_model(str(reader_id), self.lm_id):
            raise PairMismatchError(
                f"the reader is {reader_id!r} but this xrag projector is for {self.lm_id!r}"
            )
        self.use_lm(reader.model, reader.hf_tokenizer)
        results = self.compress_batch(requests)
        prompts = [
            reader.prompt(r.query or "", res.text.replace("\n\n", " "))
            for r, res in zip(requests, results, strict=True)
        ]
        _, tok = self.lm()
        t0 = time.perf_counter()
        texts = self.answer(
            [r.query or "" for r in requests],
            results,
            max_new_tokens=reader.max_new_tokens,
            prompts=prompts,
        )
        seconds = (time.perf_counter() - t0) / max(len(texts), 1)
        out: list[tuple[CompressionResult, Mapping[str, Any]]] = []
        for res, prompt, text in zip(results, prompts, texts, strict=True):
            first = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
            if first.lower().startswith("answer:"):
                first = first[7:].strip()
            out.append(
                (
                    res,
                    {
                        "text": first,
                        "prompt_tokens": len(encode_with_slots(tok, prompt)),
                        "answer_tokens": len(tok(text, add_special_tokens=False)["input_ids"]),
                        "seconds": seconds,
                    },
                )
            )
        return out

    def __repr__(self) -> str:
        return (
            f"XragCompressor(lm={self.lm_id!r}, retriever={self.retriever_id!r}, "
            f"tokens_per_doc={self.tokens_per_doc})"
        )


def soft_tokens(result: CompressionResult) -> torch.Tensor:
    """The soft-token vectors ``[n, lm_dim]`` of an xrag result (in placeholder order)."""
    vectors = result.extra.get("_vectors")
    if not isinstance(vectors, torch.Tensor):
        raise InputError("this result carries no soft tokens (not an xrag result?)")
    return vectors
