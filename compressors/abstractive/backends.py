"""Generators behind the abstractive compressor: one job in, one summary out.

Three backends share one shape (`count`, `generate`): a Hugging Face seq2seq model
with RECOMP's input format, a local causal LM through its chat template, and any
OpenAI-compatible chat endpoint through `ctxzip.chat_client`. Local backends batch jobs (sorted by
length, greedy decoding) and run in half precision on CUDA; the remote one sends
jobs concurrently. Inputs longer than the model's window are cut, each document in
proportion to its length, and the cut is reported.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

from ctxzip.chat_client import ChatClient
from ctxzip.errors import CtxzipError
from ctxzip.models import load_causal_lm, load_model, load_tokenizer
from ctxzip.tokens import count_tokens

NO_INFO = "NO RELEVANT INFORMATION"

SYSTEM_PROMPT = "You compress retrieved documents for a question-answering system."
QUERY_PROMPT = (
    "Documents:\n{documents}\n\nQuestion: {query}\n\n"
    "Write the facts from the documents that help answer the question, in at most {words} words. "
    "Use only information stated in the documents. If the documents contain nothing relevant to "
    f"the question, reply exactly: {NO_INFO}"
)
SUMMARY_PROMPT = (
    "Documents:\n{documents}\n\nSummarize the key facts of the documents in at most {words} words. "
    "Use only information stated in the documents."
)
RECOMP_FORMAT = "Question: {query}\n Document: {documents}\n Summary: "


@dataclass(frozen=True)
class Job:
    """One summary to write: the question, the documents, the most tokens to generate."""

    query: str | None
    documents: tuple[str, ...]
    max_new_tokens: int


@dataclass
class Generation:
    text: str
    truncated: bool = False  # the documents were cut to fit the model's window


class Backend(Protocol):
    name: str
    model_id: str
    local: bool

    def count(self, text: str) -> int:
        """Tokens of `text` in the generator's own tokenizer."""
        ...

    def generate(self, jobs: Sequence[Job]) -> list[Generation]: ...


def chat_messages(job: Job, documents: Sequence[str]) -> list[dict[str, str]]:
    """The chat prompt both chat backends send (documents numbered, word cap stated)."""
    listing = "\n".join(f"[{i + 1}] {d.strip()}" for i, d in enumerate(documents))
    words = max(5, int(job.max_new_tokens * 0.7))
    template = QUERY_PROMPT if job.query else SUMMARY_PROMPT
    user = template.format(documents=listing, query=job.query, words=words)
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


def fit_documents(documents: Sequence[str], limit: int, tokenizer: Any) -> tuple[list[str], bool]:
    """Cut documents (each in proportion to its length) to at most `limit` tokens in all."""
    ids = [tokenizer(d, add_special_tokens=False)["input_ids"] for d in documents]
    total = sum(len(i) for i in ids)
    if total <= limit:
        return list(documents), False
    limit = max(0, limit)
    out = []
    for doc_ids in ids:
        share = len(doc_ids) * limit // total
        out.append(tokenizer.decode(doc_ids[:share], skip_special_tokens=True) if share else "")
    return out, True


def _batches(jobs: Sequence[Any], lengths: Sequence[int], size: int) -> list[list[int]]:
    order = sorted(range(len(jobs)), key=lambda i: -lengths[i])
    return [order[i : i + size] for i in range(0, len(order), size)]


class _LocalBackend:
    """What both local backends share: where the model runs, how it batches, its window."""

    local = True

    def __init__(
        self,
        model: str,
        *,
        max_input_tokens: int | None = None,
        batch_size: int = 8,
        device: str = "auto",
        dtype: str = "auto",
    ) -> None:
        self.model_id = model
        self.max_input_tokens = max_input_tokens
        self.batch_size = batch_size
        self.device = device
        self.dtype = dtype

    def _load(self) -> tuple[Any, Any]:
        """(model, tokenizer), loaded once per process by ctxzip.models."""
        raise NotImplementedError

    def count(self, text: str) -> int:
        return len(self._load()[1](text, add_special_tokens=False)["input_ids"])


class Seq2SeqBackend(_LocalBackend):
    """Any `AutoModelForSeq2SeqLM` (e.g. RECOMP's T5 compressors), RECOMP's input format."""

    name = "seq2seq"

    def __init__(
        self,
        model: str,
        *,
        input_format: str = RECOMP_FORMAT,
        max_input_tokens: int | None = None,
        batch_size: int = 8,
        device: str = "auto",
        dtype: str = "auto",
    ) -> None:
        super().__init__(
            model,
            max_input_tokens=max_input_tokens,
            batch_size=batch_size,
            device=device,
            dtype=dtype,
        )
        self.input_format = input_format

    def _load(self) -> tuple[Any, Any]:
        model = load_model(self.model_id, "AutoModelForSeq2SeqLM", self.device, self.dtype)
        return model, load_tokenizer(self.model_id)

    def _window(self, tokenizer: Any, model: Any) -> int:
        if self.max_input_tokens:
            return self.max_input_tokens
        limit = getattr(tokenizer, "model_max_length", 0) or 0
        if 0 < limit < 100_000:
            return int(limit)
        return int(getattr(model.config, "n_positions", 0) or 512)

    def generate(self, jobs: Sequence[Job]) -> list[Generation]:
        import torch

        model, tokenizer = self._load()
        window = self._window(tokenizer, model)
        shell = len(tokenizer(self.input_format.format(query="", documents=""))["input_ids"])
        prompts, truncated = [], []
        for job in jobs:
            q_len = len(tokenizer(job.query or "", add_special_tokens=False)["input_ids"])
            docs, cut = fit_documents(job.documents, window - shell - q_len, tokenizer)
            text = self.input_format.format(query=job.query or "", documents="\n".join(docs))
            prompts.append(text)
            truncated.append(cut)
        outputs = [""] * len(jobs)
        lengths = [len(p) for p in prompts]
        device = next(model.parameters()).device
        for batch in _batches(jobs, lengths, self.batch_size):
            enc = tokenizer(
                [prompts[i] for i in batch],
                return_tensors="pt",
                padding=True,
                truncation=True,
                max_length=window,
            ).to(device)
            cap = max(jobs[i].max_new_tokens for i in batch)
            with torch.inference_mode():
                out = model.generate(**enc, max_new_tokens=cap, do_sample=False, num_beams=1)
            for row, i in enumerate(batch):
                ids = out[row][: jobs[i].max_new_tokens + 1]  # +1: the decoder start token
                outputs[i] = tokenizer.decode(ids, skip_special_tokens=True).strip()
        return [Generation(t, c) for t, c in zip(outputs, truncated, strict=True)]


class CausalChatBackend(_LocalBackend):
    """A local causal LM with a chat template (default `ctxzip.models.SMOLLM`)."""

    name = "causal"

    def _load(self) -> tuple[Any, Any]:
        model, tokenizer = load_causal_lm(self.model_id, device=self.device, dtype=self.dtype)
        if getattr(tokenizer, "chat_template", None) is None:
            raise CtxzipError(f"model {self.model_id!r} has no chat template; use a chat model")
        return model, tokenizer

    def generate(self, jobs: Sequence[Job]) -> list[Generation]:
        import torch

        model, tokenizer = self._load()
        window = int(getattr(model.config, "max_position_embeddings", 2048) or 2048)
        prompts: list[list[int]] = []
        truncated = []
        for job in jobs:
            shell = self._encode(tokenizer, chat_messages(job, [""] * len(job.documents)))
            limit = window - len(shell) - job.max_new_tokens
            if self.max_input_tokens:
                limit = min(limit, self.max_input_tokens)
            docs, cut = fit_documents(job.documents, limit, tokenizer)
            prompts.append(self._encode(tokenizer, chat_messages(job, docs)))
            truncated.append(cut)
        outputs = [""] * len(jobs)
        device = next(model.parameters()).device
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        for batch in _batches(jobs, [len(p) for p in prompts], self.batch_size):
            width = max(len(prompts[i]) for i in batch)
            ids = torch.full((len(batch), width), pad, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, i in enumerate(batch):  # left padding: every prompt ends at the same column
                ids[row, width - len(prompts[i]) :] = torch.tensor(prompts[i])
                mask[row, width - len(prompts[i]) :] = 1
            cap = max(jobs[i].max_new_tokens for i in batch)
            with torch.inference_mode():
                out = model.generate(
                    input_ids=ids.to(device),
                    attention_mask=mask.to(device),
                    max_new_tokens=cap,
                    do_sample=False,
                    temperature=None,
                    top_p=None,
                    top_k=None,
                    pad_token_id=pad,
                )
            for row, i in enumerate(batch):
                new = out[row, width : width + jobs[i].max_new_tokens]
                outputs[i] = tokenizer.decode(new, skip_special_tokens=True).strip()
        return [Generation(t, c) for t, c in zip(outputs, truncated, strict=True)]

    @staticmethod
    def _encode(tokenizer: Any, messages: list[dict[str, str]]) -> list[int]:
        out = tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=True, return_dict=True
        )
        return list(out["input_ids"])


class OpenAIChatBackend:
    """Any OpenAI-compatible `/chat/completions` endpoint (hosted, or the ctxzip proxy).

    Requests go through `ctxzip.chat_client.ChatClient` (one pooled client, retries on
    connection errors, 429 and 5xx). The API key comes from `api_key` or the environment
    variable `api_key_env`; it is sent only as a bearer token to `base_url` and never
    logged or shown in errors.
    """

    name = "openai"
    local = False

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        timeout: float = 60.0,
        max_concurrency: int = 8,
        retries: int = 2,
        max_input_tokens: int | None = None,
        counter: Callable[[str], int] | None = None,
        max_tokens_field: str = "max_tokens",
    ) -> None:
        self.model_id = model
        self.client = ChatClient(
            base_url,
            api_key=api_key,
            api_key_env=api_key_env,
            timeout=timeout,
            max_connections=max_concurrency,
            retries=retries,
        )
        self.base_url = self.client.base_url
        self.timeout = timeout
        self.max_concurrency = self.client.max_connections
        self.max_input_tokens = max_input_tokens
        self._counter = counter
        self.max_tokens_field = max_tokens_field

    @property
    def retries(self) -> int:
        """Retries after a connection error, 429 or 5xx (the client's setting)."""
        return self.client.retries

    @retries.setter
    def retries(self, value: int) -> None:
        self.client.retries = value

    def __repr__(self) -> str:
        return f"OpenAIChatBackend(model={self.model_id!r}, base_url={self.base_url!r})"

    def count(self, text: str) -> int:
        if self._counter is None:
            return count_tokens(text, self.model_id) if text else 0
        return int(self._counter(text))

    def close(self) -> None:
        self.client.close()

    def _documents(self, job: Job) -> tuple[list[str], bool]:
        if not self.max_input_tokens:
            return list(job.documents), False
        total = sum(self.count(d) for d in job.documents)
        if total <= self.max_input_tokens:
            return list(job.documents), False
        keep = self.max_input_tokens / total  # characters are a fine proxy for a remote tokenizer
        return [d[: math.floor(len(d) * keep)] for d in job.documents], True

    def _one(self, job: Job) -> Generation:
        docs, cut = self._documents(job)
        body: dict[str, Any] = {
            "model": self.model_id,
            "messages": chat_messages(job, docs),
            self.max_tokens_field: job.max_new_tokens,
            "temperature": 0,
        }
        return Generation(self.client.complete(body).text.strip(), cut)

    def generate(self, jobs: Sequence[Job]) -> list[Generation]:
        if len(jobs) == 1:
            return [self._one(jobs[0])]
        with ThreadPoolExecutor(max_workers=min(self.max_concurrency, len(jobs))) as pool:
            return list(pool.map(self._one, jobs))
