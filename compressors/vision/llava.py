"""Vision-token compression for LLaVA-style models (`LlavaForConditionalGeneration`).

`LlavaVisionCompression(model, method="select"|"merge", budget=...)` attaches with module hooks
only (nothing global, `detach()` undoes it):

- `select`: hooks capture q/k of the vision layer whose hidden states LLaVA feeds the projector,
  and a forward pre-hook on `multi_modal_projector` replaces its `[B, P, C]` input with K
  VisionZip-style tokens (optionally guided by the question's embedding seen through the
  projector). The pre-hook fires in `forward` and in `generate`'s image pre-encoding.
- `merge`: ToMe merging is installed on the vision tower's layers, planned so the feature layer
  holds K tokens (later layers merge nothing).

LLaVA checks that the number of image placeholder tokens equals the number of image features, so
`prepare_inputs` shrinks each run of P placeholders to K (re-padding rows on the left); `generate`
does both. Wrapping `get_image_features` would not work: neither forward nor generate calls it.
"""

from __future__ import annotations

from typing import Any

import torch

from ctxzip.budget import Budget
from ctxzip.compressors.vision.backbone import converted_folder, dinov2_small_config
from ctxzip.compressors.vision.hooks import MergeHandle, QKCapture, find_layers, install_merging
from ctxzip.compressors.vision.tokens import TokenState, merge_schedule, select_tokens
from ctxzip.errors import InputError

METHODS = ("select", "merge")


class LlavaVisionCompression:
    """Keep `budget` of each image's LM tokens in a LLaVA model (rate or target_tokens)."""

    def __init__(
        self,
        model: Any,
        method: str = "select",
        budget: Budget | None = None,
        *,
        schedule: str = "constant",
        dominant_share: float = 54 / 64,
        text_weight: float = 0.5,
    ) -> None:
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r} (choose from {', '.join(METHODS)})")
        self.model = model
        self.method = method
        self.budget = budget or Budget(rate=0.25)
        self.schedule = schedule
        self.dominant_share = dominant_share
        self.text_weight = text_weight
        config = model.config
        layer = config.vision_feature_layer
        if not isinstance(layer, int):
            raise ValueError("only a single vision_feature_layer is supported")
        self.strategy = config.vision_feature_select_strategy
        self.image_token_id = config.image_token_id
        self.tower = model.model.vision_tower
        self.projector = model.model.multi_modal_projector
        n_layers = len(find_layers(self.tower))
        # hidden_states[0] is the embeddings, so hidden_states[h] is the output of h layers
        self.feature_layers = layer if layer >= 0 else n_layers + 1 + layer
        self.last_state: TokenState | None = None
        self._query_vec: torch.Tensor | None = None
        self._n_keep = 0
        self._inside = False
        self._capture: QKCapture | None = None
        self._merge: MergeHandle | None = None
        self._hooks: list[Any] = []
        self.attach()

    # -- hooks ---------------------------------------------------------------------------
    def attach(self) -> None:
        if self._hooks:
            return
        if self.method == "select":
            self._capture = QKCapture(self.tower, self.feature_layers - 1)
        else:
            self._merge = install_merging(self.tower, 0)
        self._hooks.append(self.projector.register_forward_pre_hook(self._pre_projector))

    def detach(self) -> None:
        """Remove every hook; the model behaves as before attaching."""
        for hook in self._hooks:
            hook.remove()
        self._hooks.clear()
        if self._capture is not None:
            self._capture.remove()
            self._capture = None
        if self._merge is not None:
            self._merge.remove()
            self._merge = None

    def _pre_projector(self, _module: Any, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
        if self._inside:
            return None
        features = args[0]
        if self.method == "merge":
            assert self._merge is not None
            state = self._merge.state
            if state is not None and self.strategy == "default":
                # LLaVA dropped CLS: its patches' map shifts by one
                state = TokenState(features, state.sizes[:, 1:], state.source[:, 1:] - 1)
            self.last_state = state or TokenState.start(features)
            return None
        assert self._capture is not None
        q, k = self._capture.take()
        guide = None
        if self._query_vec is not None:
            self._inside = True
            try:
                guide = self.projector(features)
            finally:
                self._inside = False
        # unprepared inputs still get the budget (and LLaVA's own count check then fails loudly)
        n_keep = self._n_keep or max(1, self.budget.tokens_for(features.shape[1]))
        state = select_tokens(
            features,
            q,
            k,
            self._capture.n_heads,
            n_keep,
            has_cls=self.strategy != "default",
            dominant_share=self.dominant_share,
            query_vec=self._query_vec,
            text_weight=self.text_weight,
            guide_tokens=guide,
        )
        self.last_state = state
        return (state.tokens, *args[1:])

    # -- inputs --------------------------------------------------------------------------
    def tokens_per_image(self, pixel_values: torch.Tensor) -> tuple[int, int]:
        """(P, K): image features per image before and after compression."""
        patch = self.tower.config.patch_size
        grid = (pixel_values.shape[-2] // patch) * (pixel_values.shape[-1] // patch)
        n_tokens = grid + 1  # CLS first
        before = grid if self.strategy == "default" else n_tokens
        return before, max(1, self.budget.tokens_for(before))

    def prepare_inputs(
        self,
        input_ids: torch.Tensor,
        pixel_values: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        question_ids: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """Plan this batch's compression and shrink each image's placeholder run from P to K."""
        before, keep = self.tokens_per_image(pixel_values)
        if self.method == "merge":
            keep = self._plan_merge(pixel_values, before, keep)
        self._n_keep = keep
        self._query_vec = self._question_vector(question_ids)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        ids, mask = shrink_placeholders(
            input_ids, attention_mask, self.image_token_id, before, keep, self._pad_id()
        )
        return {"input_ids": ids, "attention_mask": mask, "pixel_values": pixel_values, **kwargs}

    def generate(self, input_ids: torch.Tensor, pixel_values: torch.Tensor, **kwargs: Any) -> Any:
        """`model.generate` with K image tokens per image."""
        inputs = self.prepare_inputs(input_ids, pixel_values, **kwargs)
        return self.model.generate(**inputs)

    def __call__(self, input_ids: torch.Tensor, pixel_values: torch.Tensor, **kwargs: Any) -> Any:
        """`model(...)` (one forward) with K image tokens per image."""
        return self.model(**self.prepare_inputs(input_ids, pixel_values, **kwargs))

    def _plan_merge(self, pixel_values: torch.Tensor, before: int, keep: int) -> int:
        assert self._merge is not None
        n_tokens = before + (1 if self.strategy == "default" else 0)
        target = keep + (1 if self.strategy == "default" else 0)
        head = merge_schedule(n_tokens, target, self.feature_layers, self.schedule)
        self._merge.set_plan(head + [0] * (len(self._merge.layers) - len(head)))
        reached = self._merge.tokens_after(n_tokens, self.feature_layers)
        return reached - (1 if self.strategy == "default" else 0)

    def _question_vector(self, question_ids: torch.Tensor | None) -> torch.Tensor | None:
        if question_ids is None:
            return None
        if self.method != "select":
            raise InputError("question-guided selection needs method='select'")
        embed = self.model.get_input_embeddings()
        with torch.no_grad():
            return embed(question_ids.to(embed.weight.device)).float().mean(dim=1)

    def _pad_id(self) -> int:
        config = self.model.config
        text = getattr(config, "text_config", config)
        pad = getattr(text, "pad_token_id", None)
        return int(pad if pad is not None else 0)

    def __enter__(self) -> LlavaVisionCompression:
        return self

    def __exit__(self, *exc: object) -> None:
        self.detach()


def shrink_placeholders(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    image_token_id: int,
    before: int,
    keep: int,
    pad_id: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each run of `before` image tokens becomes `keep`; rows re-padded on the left."""
    rows, masks = [], []
    for ids, mask in zip(input_ids.tolist(), attention_mask.tolist(), strict=True):
        out_ids: list[int] = []
        out_mask: list[int] = []
        i = 0
        while i < len(ids):
            if ids[i] != image_token_id:
                out_ids.append(ids[i])
                out_mask.append(mask[i])
                i += 1
                continue
            j = i
            while j < len(ids) and ids[j] == image_token_id:
                j += 1
            run = j - i
            if run % before:
                raise InputError(
                    f"an image placeholder run of {run} tokens is not a multiple of {before}"
                )
            out_ids.extend([image_token_id] * (keep * (run // before)))
            out_mask.extend([1] * (keep * (run // before)))
            i = j
        # drop old left padding, re-pad below
        while out_ids and out_mask[0] == 0:
            out_ids.pop(0)
            out_mask.pop(0)
        rows.append(out_ids)
        masks.append(out_mask)
    width = max(len(r) for r in rows)
    ids_t = torch.full((len(rows), width), pad_id, dtype=input_ids.dtype)
    mask_t = torch.zeros((len(rows), width), dtype=attention_mask.dtype)
    for n, (r, m) in enumerate(zip(rows, masks, strict=True)):
        if r:
            ids_t[n, width - len(r) :] = torch.tensor(r, dtype=input_ids.dtype)
            mask_t[n, width - len(m) :] = torch.tensor(m, dtype=attention_mask.dtype)
    return ids_t.to(input_ids.device), mask_t.to(attention_mask.device)


def build_test_llava(
    text_layers: int = 2, hidden: int = 64, vocab: int = 512, real_vision: bool = True
) -> Any:
    """A small LLaVA built from config: the real ViT-S tower, a random projector and tiny LM.

    For tests and benchmarks of the plumbing (its answers mean nothing)."""
    from transformers import (
        Dinov2Model,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
    )

    text = LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=text_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    config = LlavaConfig(
        vision_config=dinov2_small_config(),
        text_config=text,
        image_token_index=vocab - 1,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        projector_hidden_act="gelu",
    )
    torch.manual_seed(0)
    model = LlavaForConditionalGeneration(config).eval()
    if real_vision:
        tower = Dinov2Model.from_pretrained(str(converted_folder()))
        model.model.vision_tower.load_state_dict(tower.state_dict(), strict=True)
    return model
