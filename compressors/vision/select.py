"""`vision-select`: VisionZip-style dominant + contextual tokens at the encoder output.

The unmodified encoder runs (SDPA or flash attention are fine): forward hooks on one layer's
`q_proj` / `k_proj` capture the projections, and the CLS token's head-averaged attention row is
computed from them (`cls_attention`), so no attention weights need materialising. The tokens CLS
attends to most are kept ("dominant"); the rest fold into a few "contextual" tokens by key
similarity. With a text encoder (a callable mapping the question to a vector in the token space)
the ranking mixes in each token's cosine similarity to the question (text-guided selection).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ctxzip.errors import InputError

from ctxzip.compressors.vision.base import VisionCompressor, VisionRequest
from ctxzip.compressors.vision.merge import _submodule, attention_heads, find_layers
from ctxzip.compressors.vision.tokens import (
    TokenState,
    cls_attention,
    head_mean,
    select_dominant_contextual,
    split_budget,
)


class QKCapture:
    """Keeps the latest `q_proj` / `k_proj` outputs of one encoder layer (hooks, removable)."""

    def __init__(self, model: torch.nn.Module, layer: int = -1) -> None:
        layers = find_layers(model)
        self.layer = layers[layer]
        self.n_heads = attention_heads(self.layer)
        self.q: torch.Tensor | None = None
        self.k: torch.Tensor | None = None
        self._hooks = [
            _submodule(self.layer, "q_proj").register_forward_hook(self._keep("q")),
            _submodule(self.layer, "k_proj").register_forward_hook(self._keep("k")),
        ]

    def _keep(self, which: str) -> Callable[..., None]:
        def hook(_m: torch.nn.Module, _i: Any, out: torch.Tensor) -> None:
            setattr(self, which, out)

        return hook

    def take(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.q is None or self.k is None:
            raise RuntimeError("the hooked layer did not run")
        q, k = self.q, self.k
        self.q = self.k = None
        return q, k

    def remove(self) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks.clear()


def _minmax(x: torch.Tensor) -> torch.Tensor:
    lo = x.min(dim=-1, keepdim=True).values
    hi = x.max(dim=-1, keepdim=True).values
    return (x - lo) / (hi - lo).clamp_min(1e-12)


def guided_scores(
    attention: torch.Tensor, tokens: torch.Tensor, query_vec: torch.Tensor, weight: float
) -> torch.Tensor:
    """CLS attention mixed with cosine similarity to a question vector (both min-max scaled)."""
    sim = torch.nn.functional.cosine_similarity(
        tokens.float(), query_vec.float().reshape(-1, 1, tokens.shape[-1]), dim=-1
    )
    return (1 - weight) * _minmax(attention.float()) + weight * _minmax(sim)


def select_tokens(
    tokens: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    n_heads: int,
    n_keep: int,
    *,
    has_cls: bool = True,
    dominant_share: float = 54 / 64,
    query_vec: torch.Tensor | None = None,
    text_weight: float = 0.5,
    guide_tokens: torch.Tensor | None = None,
) -> TokenState:
    """Reduce `tokens` `[B, N, C]` to `n_keep` tokens from the captured q/k of the same N tokens.

    When `has_cls` is false (LLaVA's default feature strategy drops CLS), q/k must still include
    CLS at index 0 and `tokens` must be the N-1 patch tokens. `guide_tokens` (default `tokens`)
    are what the question vector is compared with, e.g. the tokens after a LLaVA projector.
    """
    attention = cls_attention(q, k, n_heads)  # [B, N]
    keys = head_mean(k, n_heads)
    if not has_cls:
        attention, keys = attention[:, 1:], keys[:, 1:]
    if query_vec is not None:
        guide = tokens if guide_tokens is None else guide_tokens
        attention = guided_scores(attention, guide, query_vec, text_weight)
    body = n_keep - int(has_cls)
    dominant, contextual = split_budget(max(0, body), dominant_share)
    return select_dominant_contextual(
        tokens, attention, keys, dominant, contextual, keep_first=has_cls
    )


class VisionSelectCompressor(VisionCompressor):
    """VisionZip at the encoder output: images in, `budget` of the final tokens out.

    `layer` picks whose attention ranks tokens (the last by default). `text_encoder` maps a
    question to a vector in the token space (e.g. a CLIP text tower + projection); without one,
    a query is refused rather than silently ignored.
    """

    name = "vision-select"

    def __init__(
        self,
        model: Any = None,
        *,
        layer: int = -1,
        dominant_share: float = 54 / 64,
        text_encoder: Callable[[str], torch.Tensor] | None = None,
        text_weight: float = 0.5,
        **options: Any,
    ) -> None:
        if not 0.0 < dominant_share <= 1.0:
            raise ValueError("dominant_share must be in (0, 1]")
        super().__init__(model, **options)
        self.capture = QKCapture(self.model, layer)
        self.dominant_share = dominant_share
        self.text_encoder = text_encoder
        self.text_weight = text_weight

    def _reduce(
        self, pixels: torch.Tensor, request: VisionRequest
    ) -> tuple[TokenState, str | None]:
        query_vec = None
        if request.query:
            if self.text_encoder is None:
                raise InputError(
                    "this vision model has no text tower: pass text_encoder= for guided selection"
                )
            query_vec = self.text_encoder(request.query).to(pixels.device)
        tokens = self.model(pixel_values=pixels).last_hidden_state
        q, k = self.capture.take()
        n_keep = max(1, request.budget.tokens_for(tokens.shape[1]))
        state = select_tokens(
            tokens,
            q,
            k,
            self.capture.n_heads,
            n_keep,
            dominant_share=self.dominant_share,
            query_vec=query_vec,
            text_weight=self.text_weight,
        )
        return state, None

    def close(self) -> None:
        self.capture.remove()
