"""Vision compressors on the real ViT-S/14 weights, real photos, and a small LLaVA built from config."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ctxzip.budget import Budget
from ctxzip.compressor import Compressor
from ctxzip.errors import InputError
from ctxzip.registry import compressor_class

pytestmark = pytest.mark.slow
pytest.importorskip("onnx")
skdata = pytest.importorskip("skimage.data")


@pytest.fixture(scope="module")
def photos() -> list[np.ndarray]:
    return [skdata.astronaut(), skdata.coffee()]


@pytest.fixture(scope="module")
def merger():  # type: ignore[no-untyped-def]
    from ctxzip.compressors.vision.merge import VisionMergeCompressor

    compressor = VisionMergeCompressor(batch_size=2)
    yield compressor
    compressor.close()


@pytest.fixture(scope="module")
def full(merger, photos):  # type: ignore[no-untyped-def]
    """The unmodified encoder's output (merging installed with a zero plan)."""
    return merger.compress(photos, budget=Budget(rate=1.0))


def test_conversion_matches_onnx(merger, photos, full) -> None:  # type: ignore[no-untyped-def]
    from ctxzip.compressors.vision.backbone import onnx_tokens

    reference = onnx_tokens(merger.pixels(photos))
    assert reference.shape == (2, 257, 384)
    assert np.abs(full.tokens.numpy() - reference).max() < 1e-4


def test_merge_on_real_vit(merger, photos, full) -> None:  # type: ignore[no-untyped-def]
    assert isinstance(merger, Compressor) and merger.kind == "vision"
    result = merger.compress(photos, budget=Budget(rate=0.25))
    assert result.tokens.shape == (2, 64, 384)
    assert (result.tokens_in, result.tokens_out) == (514, 128)
    assert result.sizes.sum(1).tolist() == [257.0, 257.0]
    assert result.source.shape == (2, 257) and result.method == "vision-merge"
    assert result.to_dict()["rate"] == pytest.approx(128 / 514, abs=1e-6)
    cls = F.cosine_similarity(result.tokens[:, 0], full.tokens[:, 0]).min().item()
    assert cls >= 0.98
    # requests sharing a budget share encoder batches; each gets its own slice back
    from ctxzip.compressors.vision.base import VisionRequest

    quarter = Budget(rate=0.25)
    batch = merger.compress_batch(
        [
            VisionRequest.of(photos[:1], None, quarter),
            VisionRequest.of(photos, None, Budget(rate=0.5)),
            VisionRequest.of(photos[1:], None, quarter),
        ]
    )
    assert [r.tokens.shape[:2] for r in batch] == [(1, 64), (2, 128), (1, 64)]
    assert torch.allclose(torch.cat([batch[0].tokens, batch[2].tokens]), result.tokens, atol=1e-5)
    assert batch[2].tokens_in == 257 and batch[1].tokens_out == 256
    target = merger.compress(photos, budget=Budget(target_tokens=100))
    assert target.tokens.shape[1] == 100
    # the plan is reset per call: full budget is bit-identical again
    assert torch.equal(merger.compress(photos, budget=Budget(rate=1.0)).tokens, full.tokens)


def test_select_on_real_vit(photos, full) -> None:  # type: ignore[no-untyped-def]
    from ctxzip.compressors.vision.select import VisionSelectCompressor
    from ctxzip.compressors.vision.tokens import TokenState, unmerge

    selector = VisionSelectCompressor()
    result = selector.compress(photos, budget=Budget(rate=0.25))
    assert result.tokens.shape == (2, 64, 384)
    assert torch.equal(result.tokens[:, 0], full.tokens[:, 0])  # output untouched, CLS first

    def fidelity(r) -> float:  # type: ignore[no-untyped-def]
        restored = unmerge(TokenState(r.tokens, r.sizes, r.source))
        return F.cosine_similarity(restored[:, 1:], full.tokens[:, 1:], dim=-1).mean().item()

    selector.dominant_share = 1.0  # pure top-K pruning
    pruned = selector.compress(photos, budget=Budget(rate=0.25))
    assert fidelity(result) > 0.9 > fidelity(pruned) + 0.3
    with pytest.raises(InputError, match="no text tower"):
        selector.compress(photos, query="what colour?")
    selector.close()


def test_interface_errors_and_async(merger, photos) -> None:  # type: ignore[no-untyped-def]
    assert compressor_class("vision-merge").name == "vision-merge"
    assert compressor_class("vision-select").name == "vision-select"
    with pytest.raises(InputError):
        merger.compress([])
    with pytest.raises(InputError, match=r"\[B, 3, H, W\]"):
        merger.compress(torch.zeros(3, 224, 224))
    with pytest.raises(InputError, match="cannot read"):
        merger.compress(["not an image"])
    result = asyncio.run(merger.acompress(photos[:1], budget=Budget(rate=0.5)))
    assert result.tokens.shape == (1, 128, 384)


@pytest.fixture(scope="module")
def llava():  # type: ignore[no-untyped-def]
    from ctxzip.compressors.vision.llava import build_test_llava

    return build_test_llava()


def _prefill_lengths(model):  # type: ignore[no-untyped-def]
    seen: list[int] = []

    def hook(_m, _a, kwargs):  # type: ignore[no-untyped-def]
        seen.append(kwargs["inputs_embeds"].shape[1])

    return seen, model.model.language_model.register_forward_pre_hook(hook, with_kwargs=True)


@pytest.mark.parametrize("method", ["select", "merge"])
def test_llava_generate_with_fewer_image_tokens(llava, photos, method) -> None:  # type: ignore[no-untyped-def]
    from ctxzip.compressors.vision.backbone import preprocess
    from ctxzip.compressors.vision.llava import LlavaVisionCompression

    pixels = preprocess(photos, size=112)  # 8x8 patches: P=64 image tokens, K=16
    image = llava.config.image_token_id
    text = torch.tensor([[5, 6, 7], [8, 9, 10]])
    ids = torch.cat([torch.ones(2, 1, dtype=torch.long), torch.full((2, 64), image), text], 1)
    seen, hook = _prefill_lengths(llava)
    try:
        if method == "select":
            unprepared = LlavaVisionCompression(llava, method, Budget(rate=0.25))
            with unprepared, pytest.raises(ValueError, match="do not match"):
                llava(input_ids=ids, pixel_values=pixels)  # what prepare_inputs avoids
        with LlavaVisionCompression(llava, method, Budget(rate=0.25)) as zip_:
            out = zip_.generate(ids, pixels, max_new_tokens=2, do_sample=False)
            assert zip_.last_state is not None
            assert zip_.last_state.tokens.shape[1] == 16
            assert zip_.last_state.sizes.sum(1).tolist() == [64.0, 64.0]
            if method == "select":
                zip_.generate(ids, pixels, question_ids=text, max_new_tokens=1, do_sample=False)
        assert out.shape == (2, 1 + 16 + 3 + 2)
        assert seen[0] == 1 + 16 + 3  # prefill shortened by the dropped image tokens
        seen.clear()
        llava.generate(input_ids=ids, pixel_values=pixels, max_new_tokens=1, do_sample=False)
        assert seen[0] == 1 + 64 + 3  # detached: the model is as before
    finally:
        hook.remove()


def test_shrink_placeholders_repads_left() -> None:
    from ctxzip.compressors.vision.llava import shrink_placeholders

    ids = torch.tensor([[0, 0, 1, 9, 9, 9, 9, 5], [1, 9, 9, 9, 9, 9, 9, 6]])
    mask = torch.tensor([[0, 0, 1, 1, 1, 1, 1, 1], [1] * 8])
    with pytest.raises(InputError, match="not a multiple"):
        shrink_placeholders(ids, mask, 9, 4, 2, pad_id=0)
    ids = torch.tensor([[0, 0, 1, 9, 9, 9, 9, 5], [0, 0, 0, 1, 9, 9, 9, 9]])
    mask = torch.tensor([[0, 0, 1, 1, 1, 1, 1, 1], [0, 0, 0, 1, 1, 1, 1, 1]])
    new_ids, new_mask = shrink_placeholders(ids, mask, 9, 4, 2, pad_id=0)
    assert new_ids.tolist() == [[1, 9, 9, 5], [0, 1, 9, 9]]
    assert new_mask.tolist() == [[1, 1, 1, 1], [0, 1, 1, 1]]
