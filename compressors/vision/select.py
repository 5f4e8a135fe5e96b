"""`vision-select`: VisionZip-style dominant + contextual tokens at the encoder output.

The unmodified encoder runs (SDPA or flash attention are fine): forward hooks on one layer's
`q_proj` / `k_proj` capture the projections, and the CLS token's head-averaged attention row is
computed from them (`cls_attention`), so no attention weights need materialising. The tokens CLS
attends to most are kept ("dominant"); the rest fold into a few "contextual" tokens by key
similarity. With a text encoder (a callable mapping the question to a vector in the token space)
the ranking mixes in each token's cosine similarity to the question (text-guided selection).
The hooks live in `ctxzip.compressors.vision.hooks`, the tensor math (`select_tokens`) in
`ctxzip.compressors.vision.tokens`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import torch

from ctxzip.compressors.vision.base import VisionCompressor, VisionRequest
from ctxzip.compressors.vision.hooks import QKCapture
from ctxzip.compressors.vision.reader.model import answer_requests
from ctxzip.compressors.vision.tokens import TokenState, select_tokens
from ctxzip.errors import InputError
from ctxzip.result import CompressionRequest, CompressionResult


class VisionSelectCompressor(VisionCompressor):
    """VisionZip at the encoder output: images in, `budget` of the final tokens out.

    `layer` picks whose attention ranks tokens (the last by default). `text_encoder` maps a
    question to a vector in the token space (e.g. a CLIP text tower + projection); without one,
    a query is refused rather than silently ignored.
    """

    name: ClassVar[str] = "vision-select"

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

    def eval_answers(
        self, requests: Sequence[CompressionRequest], reader: Any
    ) -> list[tuple[CompressionResult, Mapping[str, Any]]]:
        """The eval harness hook (`ctxzip eval -d easy-vqa`): selection inside the image reader
        built around the harness's local reader model (see `vision.reader.model`)."""
        return answer_requests(self, requests, reader, "select")

    def close(self) -> None:
        self.capture.remove()
