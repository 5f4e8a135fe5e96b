"""Merging and selection mechanics on tensors and on small ViT-family encoders built from config."""

from __future__ import annotations

import pytest
import torch

from ctxzip.compressors.vision.hooks import QKCapture, find_layers, install_merging
from ctxzip.compressors.vision.tokens import (
    TokenState,
    bipartite_merge,
    cls_attention,
    merge_schedule,
    select_dominant_contextual,
    split_budget,
    unmerge,
    weighted_mean,
)


def _check_bookkeeping(state: TokenState, n0: int) -> None:
    b, k, _ = state.tokens.shape
    assert state.sizes.shape == (b, k)
    assert state.source.shape == (b, n0)
    for row in range(b):
        counts = torch.bincount(state.source[row][state.source[row] >= 0], minlength=k)
        assert torch.equal(counts.to(state.sizes.dtype), state.sizes[row])


def test_bipartite_merge_counts_sizes_and_cls() -> None:
    torch.manual_seed(0)
    x = torch.randn(3, 257, 16)
    state = TokenState.start(x)
    merged = bipartite_merge(state, x, 50)
    assert merged.tokens.shape == (3, 207, 16)
    assert torch.equal(merged.tokens[:, 0], x[:, 0])  # CLS first and untouched
    assert merged.sizes.sum(1).tolist() == [257.0] * 3
    _check_bookkeeping(merged, 257)
    again = bipartite_merge(merged, merged.tokens, 500)  # capped at half per step
    assert again.tokens.shape[1] == 207 - (206 // 2)
    assert again.sizes.sum(1).tolist() == [257.0] * 3
    _check_bookkeeping(again, 257)
    # the size-weighted mean of merged tokens is the mean of the originals
    assert torch.allclose(weighted_mean(again.tokens, again.sizes), x[:, 1:].mean(1), atol=1e-5)


def test_merge_takes_most_similar_pairs() -> None:
    x = torch.eye(8).unsqueeze(0).repeat(1, 1, 1)
    x[0, 2] = x[0, 5]  # token 2 (set A) duplicates token 5 (set B)
    merged = bipartite_merge(TokenState.start(x), x, 1)
    assert merged.source[0, 2] == merged.source[0, 5]
    assert merged.tokens.shape[1] == 7


def test_zero_merge_is_identity() -> None:
    x = torch.randn(2, 9, 4)
    state = TokenState.start(x)
    assert bipartite_merge(state, x, 0) is state


@pytest.mark.parametrize("schedule", ["constant", "delayed", "decreasing", "front"])
def test_schedules_reach_target(schedule: str) -> None:
    plan = merge_schedule(257, 64, 12, schedule)
    assert sum(plan) == 257 - 64 and len(plan) == 12
    n = 257
    for r in plan:
        assert r <= (n - 1) // 2
        n -= r
    if schedule == "decreasing":
        assert plan[0] > plan[-1]
    if schedule == "front":
        assert plan[6:] == [0] * 6
    if schedule == "delayed":
        assert plan[0] == 0 and min(plan[1:]) > 0
    assert merge_schedule(257, 257, 12, schedule) == [0] * 12


def test_schedule_limits_and_errors() -> None:
    plan = merge_schedule(17, 1, 2, "constant")  # cannot reach 1 token in 2 layers
    assert plan == [8, 4]
    with pytest.raises(ValueError, match="unknown merge schedule"):
        merge_schedule(10, 5, 2, "random")


def test_select_dominant_contextual() -> None:
    torch.manual_seed(1)
    x = torch.randn(2, 257, 8)
    scores = torch.rand(2, 257)
    dominant, contextual = split_budget(63)
    assert (dominant, contextual) == (53, 10)
    state = select_dominant_contextual(x, scores, x, dominant, contextual)
    assert state.tokens.shape == (2, 64, 8)
    assert torch.equal(state.tokens[:, 0], x[:, 0])
    assert state.sizes.sum(1).tolist() == [257.0, 257.0]
    _check_bookkeeping(state, 257)
    top = scores[:, 1:].argsort(-1, descending=True)[:, :dominant] + 1
    for row in range(2):
        kept = set(top[row].tolist())
        # dominant tokens come through unchanged, in original order
        assert sorted(kept) == [i for i in range(257) if 1 <= state.source[row, i] <= dominant]
    # pure pruning drops the rest
    pruned = select_dominant_contextual(x, scores, x, 63, 0)
    assert pruned.tokens.shape[1] == 64 and (pruned.source == -1).sum().item() == 2 * 193
    assert unmerge(pruned)[pruned.source == -1].abs().sum() == 0


def _tiny_models() -> list[torch.nn.Module]:
    from transformers import (
        CLIPVisionConfig,
        CLIPVisionModel,
        Dinov2Config,
        Dinov2Model,
        SiglipVisionConfig,
        SiglipVisionModel,
        ViTConfig,
        ViTModel,
    )

    small = {
        "hidden_size": 32,
        "num_hidden_layers": 3,
        "num_attention_heads": 4,
        "intermediate_size": 64,
        "image_size": 32,
        "patch_size": 4,
    }
    torch.manual_seed(0)
    return [
        Dinov2Model(Dinov2Config(**small)),
        ViTModel(ViTConfig(**small), add_pooling_layer=False),
        CLIPVisionModel(CLIPVisionConfig(**small)),
        SiglipVisionModel(SiglipVisionConfig(**small)),
    ]


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_install_remove_on_vit_family(attn: str) -> None:
    pixels = torch.randn(2, 3, 32, 32)
    for model in _tiny_models():
        model.set_attn_implementation(attn)
        model.eval()
        with torch.no_grad():
            plain = model(pixel_values=pixels).last_hidden_state
            twin = type(model)(model.config).eval()
            handle = install_merging(model, 0)
            assert torch.equal(model(pixel_values=pixels).last_hidden_state, plain)
            n = plain.shape[1]
            handle.set_plan([8, 4, 2])
            merged = model(pixel_values=pixels).last_hidden_state
            assert merged.shape[1] == handle.tokens_after(n) == n - 14
            assert handle.state is not None
            assert handle.state.sizes.sum(1).tolist() == [float(n)] * 2
            # per instance: a second instance of the same class is untouched
            assert "forward" not in find_layers(twin)[0].__dict__
            handle.remove()
            assert "forward" not in find_layers(model)[0].__dict__
            assert torch.equal(model(pixel_values=pixels).last_hidden_state, plain)


def test_eager_and_sdpa_agree_with_merging() -> None:
    pixels = torch.randn(2, 3, 32, 32)
    outs = []
    for attn in ("eager", "sdpa"):
        model = _tiny_models()[0]
        model.set_attn_implementation(attn)
        with torch.no_grad(), install_merging(model.eval(), [10, 5, 2]):
            outs.append(model(pixel_values=pixels).last_hidden_state)
    assert outs[0].shape == outs[1].shape
    assert torch.allclose(outs[0], outs[1], atol=1e-5)


def test_cls_attention_from_qk_matches_eager_weights() -> None:
    model = _tiny_models()[0]
    model.set_attn_implementation("eager")
    capture = QKCapture(model.eval(), layer=-1)
    with torch.no_grad():
        out = model(pixel_values=torch.randn(2, 3, 32, 32), output_attentions=True)
    q, k = capture.take()
    capture.remove()
    expected = out.attentions[-1][:, :, 0].mean(1)
    assert torch.allclose(cls_attention(q, k, 4), expected, atol=1e-6)


def test_half_precision_merges_do_not_overflow() -> None:
    # GPU runs use float16: size-weighted sums of large tokens must not overflow
    torch.manual_seed(2)
    x = (torch.randn(1, 33, 8) * 2000).half()
    state = TokenState(x, torch.full((1, 33), 64.0).half(), torch.arange(33).unsqueeze(0))
    merged = bipartite_merge(state, x.float(), 16)
    assert merged.tokens.dtype == torch.float16 and torch.isfinite(merged.tokens).all()
    picked = select_dominant_contextual(x, torch.rand(1, 33), x.float(), 4, 4, sizes=state.sizes)
    assert picked.tokens.dtype == torch.float16 and torch.isfinite(picked.tokens).all()
    assert torch.isfinite(weighted_mean(merged.tokens, merged.sizes)).all()
