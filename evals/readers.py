"""Readers: the model that answers a question from a (compressed) context.

Both readers use one fixed prompt, so scores compare across methods and runs:

    system: Answer the question using the context. Reply with the answer only: a few
            words, no explanation.
    user:   Context:
            {context}

            Question: {question}
            Answer:

With no context (the no-context baseline) the user turn is ``Question: ...\\nAnswer:``.
Decoding is greedy (temperature 0); only the first line of the reply is kept.

A method whose compressed context is not text (xRAG's soft tokens) answers through a
`LocalReader`'s own model: it gets the reader and uses `model`, `hf_tokenizer`,
`prompt()` (this template as the model's chat text), `max_new_tokens` and `device`;
see `ctxzip.evals.hooks`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

from ctxzip.chat_client import ChatClient
from ctxzip.compressors.reader_prompt import (  # the one reader prompt
    SYSTEM_PROMPT,
    clean_answer,
    messages_for,
)
from ctxzip.errors import InputError
from ctxzip.models import SMOLLM, load_causal_lm
from ctxzip.tokens import encoding_for_model

DEFAULT_LOCAL_MODEL = SMOLLM


@dataclass
class Answer:
    text: str
    seconds: float
    prompt_tokens: int
    answer_tokens: int


class Reader(Protocol):
    """What the sweep needs from a reader."""

    name: str
    tokenizer: str  # the model whose tokenizer counts budgets for this reader

    def answer(self, questions: Sequence[str], contexts: Sequence[str]) -> list[Answer]: ...

    def config(self) -> dict[str, Any]: ...


class LocalReader:
    """A Hugging Face causal LM, greedy, batched (left padding), on CUDA in fp16 when present.

    Prompts longer than `max_input_tokens` lose the end of their context (the question
    is always kept), so a long full-context baseline cannot overflow the model window.
    """

    def __init__(
        self,
        model: str = DEFAULT_LOCAL_MODEL,
        *,
        batch_size: int = 8,
        max_new_tokens: int = 16,
        max_input_tokens: int = 2048,
        device: str = "auto",
    ) -> None:
        self.model_id = model
        self.name = f"hf:{model}"
        self.tokenizer = model
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        self.max_input_tokens = max_input_tokens
        self._model, self._tok = load_causal_lm(model, device=device)

        cfg = self._model.config
        layers = int(getattr(cfg, "num_hidden_layers", 0) or 0)
        hidden = int(getattr(cfg, "hidden_size", 0) or 0)
        vocab = int(getattr(cfg, "vocab_size", 0) or 0)
        total = sum(p.numel() for p in self._model.parameters())
        self._dense_params = max(total - vocab * hidden, 0)  # embeddings cost no FLOPs
        self._attn = 2 * layers * hidden

    @property
    def model(self) -> Any:
        """The Hugging Face causal LM (for methods that read with it, e.g. soft tokens)."""
        return self._model

    @property
    def hf_tokenizer(self) -> Any:
        """Its tokenizer (left padding, pad = eos when the model has no pad token)."""
        return self._tok

    @property
    def device(self) -> Any:
        return next(self._model.parameters()).device

    def prefill_flops(self, prompt_tokens: int) -> float:
        """Estimated forward FLOPs of reading a prompt: 2·N·T + 2·layers·d·T² (Kaplan et al.).

        N is the parameter count without the token embeddings; the second term is
        attention (scores and weighted sum). An estimate for comparing conditions.
        """
        t = float(prompt_tokens)
        return 2.0 * self._dense_params * t + self._attn * t * t

    def config(self) -> dict[str, Any]:
        return {
            "reader": self.name,
            "max_new_tokens": self.max_new_tokens,
            "max_input_tokens": self.max_input_tokens,
            "system": SYSTEM_PROMPT,
        }

    def prompt(self, question: str, context: str) -> str:
        """The fixed template as this model's chat text (the context cut to fit the window)."""
        tok = self._tok
        ids = tok.encode(context, add_special_tokens=False) if context else []
        room = self.max_input_tokens - len(tok.encode(question, add_special_tokens=False)) - 64
        if len(ids) > room:
            context = tok.decode(ids[: max(room, 0)])
        return str(
            tok.apply_chat_template(
                messages_for(question, context), tokenize=False, add_generation_prompt=True
            )
        )

    def answer(self, questions: Sequence[str], contexts: Sequence[str]) -> list[Answer]:
        import torch

        prompts = [self.prompt(q, c) for q, c in zip(questions, contexts, strict=True)]
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        out: list[Answer | None] = [None] * len(prompts)
        device = self.device
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            batch = self._tok(
                [prompts[i] for i in idx],
                return_tensors="pt",
                padding=True,
                add_special_tokens=False,
            ).to(device)
            t0 = time.perf_counter()
            with torch.inference_mode():
                generated = self._model.generate(
                    **batch,
                    max_new_tokens=self.max_new_tokens,
                    do_sample=False,
                    pad_token_id=self._tok.pad_token_id,
                )
            seconds = (time.perf_counter() - t0) / len(idx)
            new = generated[:, batch["input_ids"].shape[1] :]
            for row, i in enumerate(idx):
                n_prompt = int(batch["attention_mask"][row].sum())
                tokens = [t for t in new[row].tolist() if t != self._tok.pad_token_id]
                text = self._tok.decode(tokens, skip_special_tokens=True)
                out[i] = Answer(clean_answer(text), seconds, n_prompt, len(tokens))
        return [a for a in out if a is not None]


class OpenAIReader:
    """Any OpenAI-compatible `/chat/completions` endpoint (a hosted model or the ctxzip proxy).

    Requests go through `ctxzip.chat_client.ChatClient`, `concurrency` at a time, with
    retries on connection errors, 429 and 5xx. The key comes from the environment
    variable `api_key_env` and is never logged or written to the run folder.
    """

    def __init__(
        self,
        model: str,
        *,
        base_url: str = "https://api.openai.com/v1",
        api_key_env: str = "OPENAI_API_KEY",
        max_new_tokens: int = 32,
        concurrency: int = 4,
        timeout: float = 60.0,
        retries: int = 3,
        tokenizer: str | None = None,
    ) -> None:
        self.model = model
        self.client = ChatClient(
            base_url,
            api_key_env=api_key_env,
            timeout=timeout,
            max_connections=concurrency,
            retries=retries,
            backoff=1.0,
        )
        self.base_url = self.client.base_url
        self.name = f"openai:{model}@{self.base_url}"
        self.tokenizer = tokenizer or (model if encoding_for_model(model) else "gpt-4o")
        self.max_new_tokens = max_new_tokens
        self.concurrency = concurrency

    @property
    def retries(self) -> int:
        return self.client.retries

    @retries.setter
    def retries(self, value: int) -> None:
        self.client.retries = value

    def config(self) -> dict[str, Any]:
        return {"reader": self.name, "max_new_tokens": self.max_new_tokens, "system": SYSTEM_PROMPT}

    def close(self) -> None:
        self.client.close()

    def _one(self, question: str, context: str) -> Answer:
        reply = self.client.complete(
            {
                "model": self.model,
                "messages": messages_for(question, context),
                "temperature": 0,
                "max_tokens": self.max_new_tokens,
            }
        )
        return Answer(
            clean_answer(reply.text), reply.seconds, reply.prompt_tokens, reply.completion_tokens
        )

    def answer(self, questions: Sequence[str], contexts: Sequence[str]) -> list[Answer]:
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(self._one, questions, contexts))


def make_reader(spec: str, **options: Any) -> Reader:
    """`local` (`DEFAULT_LOCAL_MODEL`), `hf:MODEL_ID`, or `openai:MODEL` (set `base_url`)."""
    kind, _, model = spec.partition(":")
    if kind == "local":
        return LocalReader(model or DEFAULT_LOCAL_MODEL, **options)
    if kind == "hf" and model:
        return LocalReader(model, **options)
    if kind == "openai" and model:
        return OpenAIReader(model, **options)
    raise InputError(f"unknown reader {spec!r} (use local, hf:MODEL_ID or openai:MODEL)")
