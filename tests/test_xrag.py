"""xrag: soft-token injection, projector checkpoints, store reuse, training, shipped quality.

Real models throughout (SmolLM2-135M-Instruct, all-MiniLM-L6-v2, a real FAISS store).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ctxzip.compressors.xrag.compressor import XragCompressor, XragUnavailableError, soft_tokens
from ctxzip.compressors.xrag.inject import PLACEHOLDER, SLOT, encode_with_slots, prepare
from ctxzip.compressors.xrag.projector import (
    SHIPPED,
    PairMismatchError,
    Projector,
    ProjectorManifest,
    load_projector,
    new_projector,
    read_manifest,
    save_projector,
)
from ctxzip.compressors.xrag.train import TrainConfig, Trainer, probe
from ctxzip.models import MINILM, SMOLLM, load_causal_lm, load_sentence_transformer
from ctxzip.registry import get_compressor

LM = SMOLLM
RETRIEVER = MINILM
HELDOUT = Path(str(SHIPPED) + ".heldout.jsonl")


@pytest.fixture(scope="module")
def lm():
    torch.set_num_threads(1)
    return load_causal_lm(LM, device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def xrag(lm):
    comp = XragCompressor(device="cpu", dtype="float32")
    comp.use_lm(*lm)
    return comp


def test_registered_and_counts_one_token_per_document(xrag):
    assert type(get_compressor("xrag", device="cpu")).__name__ == "XragCompressor"
    docs = ["The Eiffel Tower was completed in 1889 in Paris.", "Python was created by Guido."]
    res = xrag.compress(docs, query="When was the tower built?")
    assert res.method == "xrag"
    assert res.texts == [PLACEHOLDER, PLACEHOLDER]
    assert res.tokens_out == 2 and res.extra["soft_tokens"] == 2
    assert res.tokens_in > 10
    vecs = soft_tokens(res)
    assert vecs.shape == (2, 576)
    # the learned scale puts soft tokens on the scale of real token embeddings
    table_rms = float(xrag.lm()[0].get_input_embeddings().weight.detach().pow(2).mean().sqrt())
    assert 0.3 * table_rms < float(vecs.pow(2).mean().sqrt()) < 3 * table_rms


def test_k_tokens_per_document(lm):
    comp = XragCompressor(device="cpu", dtype="float32", tokens_per_doc=3)
    comp.use_lm(*lm)
    doc = "First sentence about cats. Second one about dogs. Third about birds. Fourth on fish."
    res = comp.compress([doc, "short"])
    assert res.texts == [PLACEHOLDER * 3, PLACEHOLDER]  # "short" has one sentence: word split
    assert res.tokens_out == 4 and soft_tokens(res).shape[0] == 4


def test_injection_matches_manual_forward(lm):
    model, tok = lm
    torch.manual_seed(0)
    soft = [torch.randn(2, 576) * 0.1, torch.randn(1, 576) * 0.1]
    prompts = [f"Docs: {PLACEHOLDER} and {PLACEHOLDER}. Q: why?", f"One {PLACEHOLDER} here"]
    embeds, mask = prepare(model, tok, prompts, soft)
    table = model.get_input_embeddings().weight
    for row, (prompt, vecs) in enumerate(zip(prompts, soft, strict=True)):
        ids = encode_with_slots(tok, prompt)
        offset = embeds.shape[1] - len(ids)  # left padding
        assert int(mask[row].sum()) == len(ids) and int(mask[row, :offset].sum()) == 0
        slots = [offset + i for i, t in enumerate(ids) if t == SLOT]
        assert torch.equal(embeds[row, slots], vecs)
        for i, t in enumerate(ids):
            if t != SLOT:
                assert torch.equal(embeds[row, offset + i], table[t])
    # manual forward of the second prompt: same logits as through `prepare`
    ids = encode_with_slots(tok, prompts[1])
    manual = table[torch.tensor([max(t, 0) for t in ids])].clone()
    manual[ids.index(SLOT)] = soft[1][0]
    with torch.no_grad():
        ref = model(inputs_embeds=manual[None]).logits[0, -1]
        got = model(inputs_embeds=embeds[1:2], attention_mask=mask[1:2]).logits[0, -1]
    assert torch.allclose(ref, got, atol=1e-4)
    with pytest.raises(Exception, match="placeholder"):
        prepare(model, tok, [prompts[1]], [soft[0]])


def test_generation_runs_through_generate(xrag):
    docs = [["The Eiffel Tower was completed in 1889."], ["Bananas are yellow.", "Apples are red."]]
    results = [xrag.compress(d) for d in docs]
    answers = xrag.answer(["When was the tower completed?", "What colour?"], results, 8)
    assert len(answers) == 2 and all(isinstance(a, str) and a for a in answers)


def test_projector_save_load_round_trip(tmp_path):
    proj = Projector(384, 576, init_scale=0.14)
    manifest = ProjectorManifest(RETRIEVER, LM, 384, 576, training={"steps": 3})
    path = save_projector(proj, manifest, tmp_path / "p")
    assert path.suffix == ".safetensors" and (tmp_path / "p.json").exists()
    loaded, m2 = load_projector(tmp_path / "p", retriever=RETRIEVER, lm="SmolLM2-135M-Instruct")
    x = torch.randn(5, 384)
    assert torch.equal(proj(x), loaded(x))
    assert m2.training == {"steps": 3} and m2.lm == LM
    assert json.loads((tmp_path / "p.json").read_text())["retriever"] == RETRIEVER


def test_mismatched_pairs_fail_clearly(tmp_path, lm):
    proj = Projector(384, 576)
    save_projector(proj, ProjectorManifest(RETRIEVER, LM, 384, 576), tmp_path / "p")
    with pytest.raises(PairMismatchError, match="trained for retriever"):
        load_projector(tmp_path / "p", retriever="BAAI/bge-small-en-v1.5")
    comp = XragCompressor(retriever="BAAI/bge-small-en-v1.5", device="cpu")
    comp.use_lm(*lm)
    with pytest.raises(PairMismatchError, match="no projector pairs"):
        comp.compress("some text")
    with pytest.raises(PairMismatchError, match="do not fit"):
        XragCompressor(device="cpu").project(np.zeros((1, 768), dtype=np.float32))
    with pytest.raises(XragUnavailableError, match="black-box"):
        XragCompressor(lm="gpt-4o")
    with pytest.raises(XragUnavailableError, match="black-box"):  # as the proxy builds it
        get_compressor("xrag", tokenizer="claude-sonnet-4-5")


def test_store_vectors_are_reused_not_reembedded(tmp_path, xrag, monkeypatch):
    from ctxzip.retrievers.store import FaissStore

    docs = ["The Eiffel Tower was completed in 1889.", "Python was created by Guido van Rossum."]
    store = FaissStore(model=RETRIEVER, device="cpu")
    ids = store.add_texts(docs)
    direct = soft_tokens(xrag.compress(docs))

    def no_embedding(*args, **kwargs):
        raise AssertionError("stored documents must not be re-embedded")

    monkeypatch.setattr(xrag, "embed", no_embedding)
    res = xrag.compress_ids(store, ids)
    assert res.tokens_out == 2 and res.texts == [PLACEHOLDER] * 2
    assert torch.allclose(soft_tokens(res), direct, atol=1e-3)

    class OtherEmbedder:
        model_id = "BAAI/bge-small-en-v1.5"
        dim = 384

        def embed(self, texts, progress=None):
            return np.ones((len(texts), 384), dtype=np.float32)

    other = FaissStore(model=OtherEmbedder(), device="cpu")
    other_ids = other.add_texts(["x y z"])
    with pytest.raises(PairMismatchError, match="store was embedded with"):
        xrag.compress_ids(other, other_ids)


def test_short_training_run_lowers_stage1_loss_and_resumes(tmp_path, lm):
    corpus = tmp_path / "corpus.txt"
    passages = [
        f"Item {i}: the {w} function returns the {w} of its argument, raising ValueError "
        f"when the argument is negative or not a number."
        for i, w in enumerate(["square", "cube", "sign", "floor", "ceiling", "absolute"] * 3)
    ]
    corpus.write_text("\n\n".join(passages))
    cfg = TrainConfig(
        corpus=str(corpus),
        out=str(tmp_path / "run"),
        steps1=4,
        batch=4,
        lr1=1e-2,
        warmup=1,
        target_tokens=12,
        eval_every=1000,
        checkpoint_every=0.0,
        progress=False,
    )
    trainer = Trainer(cfg)
    fixed = trainer.train_idx[:8]
    torch.manual_seed(0)
    fresh = new_projector(trainer.manifest("1"), trainer.lm)
    with torch.no_grad():
        before = float(trainer.stage1_loss(fresh, fixed))
    torch.manual_seed(0)
    trainer.run_stage("1")
    state = json.loads((tmp_path / "run" / "stage1" / "state.json").read_text())
    assert state["step"] == 4
    trained, manifest = load_projector(tmp_path / "run" / "stage1" / "last")
    with torch.no_grad():
        after = float(trainer.stage1_loss(trained, fixed))
    assert after < before - 0.05, (before, after)
    assert manifest.retriever == RETRIEVER and manifest.training["stage"] == "1"
    optim = json.loads((tmp_path / "run" / "stage1" / "optim.json").read_text())
    assert set(optim["steps"].values()) == {4.0}  # AdamW's step count, beside its moments
    # resume: two more steps continue from step 4 with the optimizer state
    trainer.cfg.steps1 = 6
    trainer.run_stage("1")
    assert json.loads((tmp_path / "run" / "stage1" / "state.json").read_text())["step"] == 6
    optim = json.loads((tmp_path / "run" / "stage1" / "optim.json").read_text())
    assert set(optim["steps"].values()) == {6.0}  # 4 restored + 2, not a fresh optimizer
    # stage 2 loss (NLL + KL against the frozen LM reading the real text) is finite
    cache: dict = {}
    nll, kl = trainer.stage2_loss(trained, fixed[:2], cache)
    assert torch.isfinite(nll) and torch.isfinite(kl) and float(kl.detach()) >= 0
    assert len(cache) == 2


def test_shipped_projector_quality_on_heldout_passages(lm):
    """Own passage most likely among 8 soft tokens, and beats a random other passage."""
    manifest = read_manifest(SHIPPED)
    assert manifest.retriever == RETRIEVER and manifest.lm == LM
    assert Path(str(SHIPPED) + ".safetensors").stat().st_size < 5_000_000
    projector, _ = load_projector(SHIPPED, retriever=RETRIEVER, lm=LM)
    rows = [json.loads(line) for line in HELDOUT.read_text().splitlines()]  # distractor pool
    model, tok = lm
    embeds = load_sentence_transformer(RETRIEVER, device="cpu").encode(
        [r["text"] for r in rows], normalize_embeddings=True, convert_to_tensor=True
    )
    targets = [tok(r["text"], add_special_tokens=False)["input_ids"][:16] for r in rows]
    quality = probe(model, tok, projector, embeds.float(), targets, n=PROBE_N, k=8)
    fresh = Projector(384, 576, init_scale=0.135)
    untrained = probe(model, tok, fresh, embeds.float(), targets, n=8, k=8)
    assert untrained["own_first"] <= 0.375  # chance is 0.125: the probe can fail
    assert quality["own_first"] >= OWN_FIRST_MIN, quality
    assert quality["beats_random"] >= BEATS_RANDOM_MIN, quality


PROBE_N = 24  # the first 24 of the 107 held-out passages, distractors from all 107 (seeded)
OWN_FIRST_MIN = 0.4
BEATS_RANDOM_MIN = 0.75
