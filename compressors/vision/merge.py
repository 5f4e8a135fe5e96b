"""`vision-merge`: ToMe-style token merging inside a Hugging Face ViT-family encoder.

The merging itself is installed on the encoder's layers by `install_merging` (see
`ctxzip.compressors.vision.hooks`); this module plans how many tokens each layer merges for a
budget and puts it behind the vision compressor interface.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch

from ctxzip.budget import Budget
from ctxzip.compressors.vision.base import VisionCompressor, VisionRequest
from ctxzip.compressors.vision.hooks import install_merging
from ctxzip.compressors.vision.reader.model import answer_requests
from ctxzip.compressors.vision.tokens import SCHEDULES, TokenState, as_list, merge_schedule
from ctxzip.result import CompressionRequest, CompressionResult


def plan_for(n_tokens: int, budget: Budget, n_layers: int, schedule: str) -> tuple[list[int], int]:
    """The per-layer plan that ends at the budget's token count, and that count."""
    target = max(1, budget.tokens_for(n_tokens))
    return merge_schedule(n_tokens, target, n_layers, schedule), target


class VisionMergeCompressor(VisionCompressor):
    """ToMe inside the encoder: images in, the encoder's final tokens out, about `budget` of them.

    `schedule` is how merges spread over layers: `constant`, `decreasing` or `front` (see
    `merge_schedule`); `r` overrides it with explicit per-layer counts (ToMe's `model.r`).
    """

    name: ClassVar[str] = "vision-merge"

    def __init__(
        self,
        model: Any = None,
        *,
        schedule: str = "constant",
        r: int | Sequence[int] | None = None,
        prop_attn: bool = True,
        **options: Any,
    ) -> None:
        if schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {schedule!r} (choose from {', '.join(SCHEDULES)})")
        super().__init__(model, **options)
        self.schedule = schedule
        self.r = r
        self.handle = install_merging(self.model, 0, prop_attn=prop_attn)

    def _reduce(
        self, pixels: torch.Tensor, request: VisionRequest
    ) -> tuple[TokenState, str | None]:
        patch = self.model.config.patch_size
        n_tokens = 1 + (pixels.shape[-2] // patch) * (pixels.shape[-1] // patch)
        n_layers = len(self.handle.layers)
        if self.r is not None:
            plan, target = as_list(self.r, n_layers), 0
        else:
            plan, target = plan_for(n_tokens, request.budget, n_layers, self.schedule)
        self.handle.set_plan(plan)
        out = self.model(pixel_values=pixels)
        tokens = out.last_hidden_state
        state = self.handle.state
        if state is None:  # nothing merged
            state = TokenState.start(tokens)
        reason = None
        if target and tokens.shape[1] > target:
            reason = f"merging stops at {tokens.shape[1]} tokens (half per layer at most)"
        return TokenState(tokens, state.sizes, state.source), reason

    def eval_answers(
        self, requests: Sequence[CompressionRequest], reader: Any
    ) -> list[tuple[CompressionResult, Mapping[str, Any]]]:
        """The eval harness hook (`ctxzip eval -d easy-vqa`): merging inside the image reader
        built around the harness's local reader model (see `vision.reader.model`)."""
        return answer_requests(self, requests, reader, "merge", schedule=self.schedule)

    def close(self) -> None:
        """Remove the merging hooks from the model."""
        self.handle.remove()
