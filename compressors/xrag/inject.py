"""Put projected vectors where the placeholder tokens sit, then run the LM on embeddings.

A prompt names each soft token with the placeholder ``<xRAG>``. Rather than adding a
token to a (shared, cached) tokenizer, the prompt is split at the placeholders and the
pieces tokenised separately; each placeholder becomes a slot (id -1). The slot rows of
the text embeddings are then overwritten by the projected vectors, in order, exactly
like xRAG's ``inputs_embeds[input_ids == xrag_token_id] = projector(...)``. Batches are
left-padded with an attention mask, which ``generate(inputs_embeds=...)`` needs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ctxzip.errors import InputError

PLACEHOLDER = "<xRAG>"
SLOT = -1


def encode_with_slots(tokenizer: Any, text: str) -> list[int]:
    """Token ids of `text` with ``SLOT`` (-1) at each placeholder."""
    pieces = text.split(PLACEHOLDER)
    ids: list[int] = []
    for i, piece in enumerate(pieces):
        if i:
            ids.append(SLOT)
        if piece:
            ids.extend(tokenizer(piece, add_special_tokens=False)["input_ids"])
    return ids


def pad_left(seqs: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, attention_mask), left-padded (slots stay -1)."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, seq in enumerate(seqs):
        if seq:
            ids[row, width - len(seq) :] = torch.tensor(list(seq), dtype=torch.long)
            mask[row, width - len(seq) :] = 1
    return ids, mask


def embed_with_slots(lm: Any, ids: torch.Tensor, soft: torch.Tensor) -> torch.Tensor:
    """Input embeddings for `ids` with the slot rows replaced by `soft` (rows in order).

    `soft` is ``[n_slots, hidden]`` for the whole batch, row-major over (sequence, position).
    """
    slots = ids == SLOT
    n = int(slots.sum())
    if n != soft.shape[0]:
        raise InputError(f"{n} placeholder slots but {soft.shape[0]} soft tokens")
    table = lm.get_input_embeddings()
    embeds = table(ids.clamp(min=0).to(table.weight.device))
    if n:
        embeds = embeds.clone()
        embeds[slots.to(embeds.device)] = soft.to(embeds.device, embeds.dtype)
    return embeds


def pad_id_of(tokenizer: Any) -> int:
    pad = tokenizer.pad_token_id
    return int(pad if pad is not None else tokenizer.eos_token_id)


def prepare(
    lm: Any, tokenizer: Any, prompts: Sequence[str], soft: Sequence[torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs_embeds, attention_mask) for prompts whose placeholders take `soft[i]` rows."""
    if len(prompts) != len(soft):
        raise InputError("one soft-token tensor per prompt is needed")
    seqs = [encode_with_slots(tokenizer, p) for p in prompts]
    for seq, vecs in zip(seqs, soft, strict=True):
        if seq.count(SLOT) != vecs.shape[0]:
            raise InputError(
                f"prompt has {seq.count(SLOT)} {PLACEHOLDER} placeholders "
                f"but {vecs.shape[0]} soft tokens"
            )
    ids, mask = pad_left(seqs, pad_id_of(tokenizer))
    flat = (
        torch.cat([v.reshape(-1, v.shape[-1]) for v in soft if v.shape[0]])
        if any(v.shape[0] for v in soft)
        else torch.zeros(0, lm.get_input_embeddings().weight.shape[1])
    )
    embeds = embed_with_slots(lm, ids, flat)
    return embeds, mask.to(embeds.device)


@torch.no_grad()
def generate(
    lm: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    soft: Sequence[torch.Tensor],
    max_new_tokens: int = 32,
) -> list[str]:
    """Greedy answers for prompts with soft tokens (only the new text is returned)."""
    embeds, mask = prepare(lm, tokenizer, prompts, soft)
    out = lm.generate(
        inputs_embeds=embeds,
        attention_mask=mask,
        max_new_tokens=max_new_tokens,
        do_sample=False,
        pad_token_id=pad_id_of(tokenizer),
    )
    return [t.strip() for t in tokenizer.batch_decode(out, skip_special_tokens=True)]


def chat_prompt(tokenizer: Any, user: str, system: str | None = None) -> str:
    """The LM's chat template applied as text (placeholders survive it untouched)."""
    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": user}
    ]
    return chat_prompt_messages(tokenizer, messages)


def chat_prompt_messages(tokenizer: Any, messages: Sequence[dict[str, str]]) -> str:
    """A whole conversation through the chat template as text, ready for the reply."""
    if getattr(tokenizer, "chat_template", None):
        return str(
            tokenizer.apply_chat_template(
                list(messages), tokenize=False, add_generation_prompt=True
            )
        )
    return "\n\n".join(m["content"] for m in messages) + "\n"
