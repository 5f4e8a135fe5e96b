"""The easy-vqa image reader: dataset adapter, LLaVA answers with K image tokens, eval rows.

Real weights throughout: SmolLM2-135M-Instruct (the eval's local reader), the converted
ViT-S and the shipped trained projector."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ctxzip.budget import Budget
from ctxzip.compressors.vision.reader import model as vr
from ctxzip.compressors.vision.reader.train import (
    Batcher,
    TrainSettings,
    _load_checkpoint,
    _save_checkpoint,
    answer_loss,
    image_labels,
)
from ctxzip.errors import InputError
from ctxzip.evals import datasets
from ctxzip.evals.readers import LocalReader
from ctxzip.evals.sweep import SweepConfig, run_sweep
from ctxzip.registry import get_compressor
from ctxzip.result import CompressionRequest


@pytest.fixture(scope="module")
def items() -> list[datasets.QAItem]:
    return datasets.load_dataset("easy-vqa")


@pytest.fixture(scope="module")
def reader() -> LocalReader:
    return LocalReader(max_new_tokens=4, batch_size=4, device="cpu")


def test_the_prompt_is_the_eval_readers_template(reader: LocalReader) -> None:
    # the image reader asks exactly what the text reader asks, with placeholders as context
    question = "what color is the shape?"
    expected = reader.prompt(question, vr.IMAGE_TOKEN * 3)
    assert vr.chat_text(reader.hf_tokenizer, question, 3) == expected
    assert vr.chat_text(reader.hf_tokenizer, question, 0) == reader.prompt(question, "")


def test_easy_vqa_adapter(items: list[datasets.QAItem]) -> None:
    assert len(items) == 9673  # the test split: held out from training
    first = items[0]
    assert first.contexts == [first.metadata[datasets.IMAGE_KEY]]
    assert Path(first.contexts[0]).is_file()
    assert {a for it in items for a in it.answers} == set(vr.ANSWERS)
    assert len(datasets.load_dataset("easy-vqa:train")) == 38575
    with pytest.raises(InputError, match="splits"):
        datasets.load_dataset("easy-vqa:validation")
    pixels = vr.load_images([first.contexts[0]])
    assert pixels.shape == (1, 3, vr.IMAGE_SIZE, vr.IMAGE_SIZE)


def test_the_reader_answers_with_k_image_tokens(
    items: list[datasets.QAItem], reader: LocalReader
) -> None:
    chosen = datasets.sample(items, 2, seed=3)
    comp = get_compressor("vision-select")

    def ask(rate: float) -> list:
        budget = Budget(rate=rate)
        requests = [CompressionRequest.of(it.contexts, it.question, budget) for it in chosen]
        return list(comp.eval_answers(requests, reader))

    full, kept = ask(1.0), ask(0.25)
    for (res_full, ans_full), (res, ans) in zip(full, kept, strict=True):
        assert (res_full.tokens_in, res_full.tokens_out) == (64, 64)
        assert (res.tokens_in, res.tokens_out) == (64, 16)
        assert res.extra["image_tokens_out"] == 16
        # the prefill holds 16 image tokens instead of 64
        assert ans_full["prompt_tokens"] - ans["prompt_tokens"] == 48
        assert isinstance(ans["text"], str) and ans["answer_tokens"] >= 1
    llava = vr.reader_llava(reader.model, reader.hf_tokenizer)
    assert llava.model.language_model is reader.model.model  # shared, not copied
    assert not llava.model.multi_modal_projector._forward_pre_hooks  # detached after use


def test_merge_inside_the_reader(items: list[datasets.QAItem], reader: LocalReader) -> None:
    llava = vr.reader_llava(reader.model, reader.hf_tokenizer)
    item = items[0]
    texts, _, before, after, _ = vr.generate_answers(
        llava,
        reader.hf_tokenizer,
        [item.question],
        vr.load_images(item.contexts),
        "merge",
        Budget(rate=0.25),
        max_new_tokens=2,
    )
    assert (before, after) == (64, 16)
    assert len(texts) == 1


def test_eval_rows_report_kept_visual_tokens(
    tmp_path: Path, items: list[datasets.QAItem], reader: LocalReader
) -> None:
    chosen = datasets.sample(items, 2, seed=1)
    config = SweepConfig(
        dataset="easy-vqa", methods=["vision-select"], rates=[0.5], out=str(tmp_path)
    )
    records, failed, _ = run_sweep(config, chosen, reader, progress=False)
    assert not failed
    methods = {r["method"] for r in records}
    assert methods == {"no-context", "vision-select"}  # text baselines would read a path
    for r in records:
        if r["method"] == "vision-select":
            assert (r["tokens_in"], r["tokens_out"], r["achieved_rate"]) == (64, 32, 0.5)
            assert r["extra"]["image_tokens_out"] == 32
        else:
            assert r["tokens_out"] == 0
    no_image = [r for r in records if r["method"] == "no-context"]
    with_image = [r for r in records if r["method"] == "vision-select"]
    assert no_image[0]["prompt_tokens"] + 32 < with_image[0]["prompt_tokens"]


def test_training_pieces(reader: LocalReader, tmp_path: Path) -> None:
    tok, lm = reader.hf_tokenizer, reader.model
    record = vr.VqaRecord("x", "unused.png", "what color is the shape?", "red")
    ids, mask, labels = Batcher(tok, 4)([record, record])
    answer = tok("red", add_special_tokens=False)["input_ids"]
    assert labels[0][labels[0] != -100].tolist() == [
        *answer,
        tok.convert_tokens_to_ids("<|im_end|>"),
    ]
    assert int((ids[0] == vr.image_token_id(tok)).sum()) == 4
    lm.requires_grad_(False)  # as `train` does
    projector = vr.new_projector(lm.config.hidden_size)
    loss = answer_loss(
        lm, projector, torch.zeros(2, 4, 384), ids, mask, labels, vr.image_token_id(tok)
    )
    loss.backward()
    assert projector.linear_1.weight.grad is not None
    assert all(p.grad is None for p in lm.parameters())  # the LM stays frozen
    opt = torch.optim.AdamW(projector.parameters())
    opt.step()
    key = TrainSettings().key()
    _save_checkpoint(tmp_path / "ckpt", projector, opt, {"key": key, "step": 1, "losses": [1.0]})
    other = vr.new_projector(lm.config.hidden_size)
    other_opt = torch.optim.AdamW(other.parameters())
    state = _load_checkpoint(tmp_path / "ckpt", other, other_opt, key)
    assert state is not None and state["step"] == 1
    assert torch.equal(other.linear_2.weight, projector.linear_2.weight)
    assert _load_checkpoint(tmp_path / "ckpt", other, other_opt, "another") is None
    labels_of = image_labels(
        [
            vr.VqaRecord("a", "1.png", "what color is the shape?", "teal"),
            vr.VqaRecord("b", "1.png", "does the image contain a circle?", "yes"),
        ]
    )
    assert labels_of == {"1.png": {"color": "teal", "shape": "circle"}}


def test_the_shipped_projector_is_small_and_described() -> None:
    assert vr.PROJECTOR_FILE.stat().st_size < 5 * 1024 * 1024
    state, manifest = vr.load_projector()
    assert set(state) == {"linear_1.weight", "linear_1.bias", "linear_2.weight", "linear_2.bias"}
    assert manifest["lm"] == vr.LM_ID and manifest["image_tokens"] == 64
    assert 0.0 <= manifest["heldout_exact_match"] <= 1.0
