"""The token-classification compressor: shipped model, tiny random checkpoints, budgets, controls."""

from __future__ import annotations

import importlib.util
import random
import re
from collections import Counter

import numpy as np
import pytest

from ctxzip.budget import Budget
from ctxzip.compressors.token_classification import (
    TokenClassificationCompressor,
    load_token_classifier,
)
from ctxzip.compressors.token_classification.compressor import _llmlingua_chunks
from ctxzip.compressors.token_classification.onnx import OnnxTokenClassifier
from ctxzip.errors import InputError, ModelNotFoundError
from ctxzip.models import MINILM, load_tokenizer
from ctxzip.protect import Protect
from ctxzip.registry import get_compressor
from ctxzip.result import CompressionRequest
from ctxzip.spans import overlapping
from ctxzip.tokens import count_tokens

WORDS = [
    "river",
    "market",
    "engine",
    "policy",
    "garden",
    "signal",
    "theory",
    "ocean",
    "budget",
    "harbor",
    "village",
    "station",
    "winter",
    "metal",
    "forest",
    "doctor",
    "letter",
    "window",
    "bridge",
    "silver",
    "castle",
    "farmer",
    "planet",
    "number",
    "the",
    "a",
    "of",
    "and",
    "to",
    "in",
    "is",
    "was",
    "for",
    "on",
    "with",
    "as",
    "by",
    "at",
    "from",
]


def _text(seed: int, sentences: int) -> str:
    rng = random.Random(seed)
    out = []
    for _ in range(sentences):
        n = rng.randint(6, 18)
        words = [rng.choice(WORDS) for _ in range(n)]
        if rng.random() < 0.3:
            words.insert(rng.randint(0, n), str(rng.randint(10, 9999)))
        out.append(" ".join(words).capitalize() + rng.choice([".", ".", "?", "!"]))
    paras = [" ".join(out[i : i + 5]) for i in range(0, len(out), 5)]
    return "\n\n".join(paras)


def _whole_words(text: str, s: int, e: int) -> bool:
    """A kept span never starts or ends inside a run of letters/digits."""
    starts_inside = s > 0 and text[s - 1].isalnum() and text[s].isalnum()
    ends_inside = e < len(text) and text[e - 1].isalnum() and text[e].isalnum()
    return not starts_inside and not ends_inside


@pytest.fixture(scope="module")
def comp():
    return TokenClassificationCompressor(max_length=128, batch_size=16)


def test_registered_and_loads_shipped_head():
    c = get_compressor("token-classification")
    assert isinstance(c, TokenClassificationCompressor)
    lm = load_token_classifier()
    assert lm.model.config.num_labels == 2
    assert lm.prefix and lm.suffix  # [CLS] ... [SEP]


@pytest.mark.parametrize("reader", ["gpt-4o", MINILM])
def test_global_rate_within_two_percent(comp, reader):
    """Property: for many texts and rates, tokens_out <= budget and >= 98% of it."""
    c = TokenClassificationCompressor(tokenizer=reader, max_length=128, batch_size=16)
    rng = random.Random(7)
    requests = []
    for i in range(10):
        text = _text(i, rng.randint(20, 45))
        requests.append(
            CompressionRequest.of(
                [text[: len(text) // 2], text[len(text) // 2 :]],
                None,
                Budget(rate=rng.uniform(0.15, 0.85)),
            )
        )
    for req, res in zip(requests, c.compress_batch(requests), strict=True):
        budget = req.budget.tokens_for(res.tokens_in)
        assert res.tokens_in >= 200
        assert res.tokens_out <= budget
        assert res.tokens_out >= 0.98 * budget, (res.tokens_out, budget)
        assert res.extra["chunks"] > 2  # long inputs were cut into windows


def test_target_tokens_budget(comp):
    text = _text(3, 40)
    res = comp.compress(text, budget=Budget(target_tokens=120))
    assert 0.98 * 120 <= res.tokens_out <= 120
    assert count_tokens(res.text, "gpt-4o") == res.tokens_out


def test_all_chunks_of_all_requests_share_batches(comp):
    lm = comp.loaded
    calls = []
    original = lm.model.forward

    def counting(*args, **kwargs):
        calls.append(kwargs["input_ids"].shape)
        return original(*args, **kwargs)

    big = TokenClassificationCompressor(max_length=128, batch_size=64)
    lm.model.forward = counting
    try:
        reqs = [
            CompressionRequest.of([_text(i, 12), _text(i + 50, 12)], None, Budget(rate=0.4))
            for i in range(3)
        ]
        results = big.compress_batch(reqs)
    finally:
        del lm.model.forward
    chunks = sum(r.extra["chunks"] for r in results)
    assert chunks >= 6
    assert len(calls) == 1 and calls[0][0] == chunks  # one padded batch, every chunk


def test_kept_text_is_made_of_original_words(comp):
    text = _text(11, 30)
    res = comp.compress(text, budget=Budget(rate=0.3))
    for s, e in res.kept[0]:
        assert text[s:e].strip() == text[s:e]
        assert _whole_words(text, s, e), (s, e, text[max(0, s - 10) : e + 10])


def test_force_strings_digits_and_protected_spans_survive():
    text = _text(5, 30)
    text = text.replace("river", "river ZX-42-alpha", 1)
    text += "\n\nSee <keep>this exact tagged region, kept verbatim</keep> and call 555-0100."
    c = TokenClassificationCompressor(
        max_length=128, force=["ZX-42-alpha"], keep_digits=True, protect=Protect(tags=("keep",))
    )
    res = c.compress(text, budget=Budget(rate=0.4))
    assert "ZX-42-alpha" in res.text
    assert "<keep>this exact tagged region, kept verbatim</keep>" in res.text
    for number in {w for w in text.replace(".", " ").split() if w.isdigit()}:
        assert number in res.text
    assert res.tokens_out <= res.budget.tokens_for(res.tokens_in)


def test_structure_kept_by_default():
    text = (
        _text(6, 20)
        + "\n\n```python\ndef f(x):\n    return x + 1\n```\n\nVisit https://example.com/a?b=1 now."
    )
    res = TokenClassificationCompressor(max_length=128).compress(text, budget=Budget(rate=0.5))
    assert "```python\ndef f(x):\n    return x + 1\n```" in res.text
    assert "https://example.com/a?b=1" in res.text


def test_drop_consecutive_separators():
    """A separator word repeating the one before it goes; the first stays, whole."""
    text = "\n".join(
        f"Section {i} about the river and the market.\n----- ----- -----" for i in range(12)
    )
    plain = TokenClassificationCompressor(keep_digits=True).compress(text, budget=Budget(rate=0.9))
    dropped = TokenClassificationCompressor(keep_digits=True, drop_consecutive=True).compress(
        text, budget=Budget(rate=0.9)
    )
    assert "----- -----" in plain.text
    assert "----- -----" not in dropped.text and "-----" in dropped.text
    assert set(dropped.text.split()) <= set(text.split())


def test_non_english_text_stays_intact(comp):
    text = (
        "東京は日本の首都です。大阪は大きな都市です。" * 8
        + "\n\n"
        + "Ελληνικά κείμενα μένουν ακέραια εδώ. Καλημέρα κόσμε και φίλοι. " * 8
        + "\n\nCafé naïve façade déjà vu über straße. " * 8
    )
    res = comp.compress(text, budget=Budget(rate=0.5))
    for s, e in res.kept[0]:
        assert text[s:e] in text
    out_chars = set(res.text) - {" ", "\n"}
    assert out_chars <= set(text)
    assert "\ufffd" not in res.text
    assert any(w in res.text for w in ("Ελληνικά", "κείμενα", "ακέραια", "Καλημέρα", "κόσμε"))


def test_question_aware_favours_query_words():
    text = _text(8, 25).replace("garden", "zeppelin")
    assert "zeppelin" in text
    query = "What about the zeppelin?"
    off = TokenClassificationCompressor(max_length=128, question_aware=False).compress(
        text, query, Budget(rate=0.15)
    )
    on = TokenClassificationCompressor(max_length=128, query_weight=1.0).compress(
        text, query, Budget(rate=0.15)
    )
    assert TokenClassificationCompressor().question_aware  # the default when a query is given
    assert on.text.count("zeppelin") == text.count("zeppelin")
    assert on.text.count("zeppelin") > off.text.count("zeppelin")


def test_context_level_pass_drops_unrelated_contexts():
    contexts = [
        "The recipe needs flour, butter, sugar and eggs. Bake the cake for forty minutes at 180 degrees.",
        "The football match ended two to one after extra time. The striker scored twice in the rain.",
        "The volcano erupted in 1883 and the ash cloud circled the planet. Krakatoa's eruption was heard far away.",
        "Stock markets fell sharply as bond yields rose. Investors moved money into gold and cash.",
    ]
    c = TokenClassificationCompressor(context_level=True, context_expand=1.5)
    res = c.compress(
        contexts, "When did Krakatoa erupt and what happened to the ash?", Budget(rate=0.3)
    )
    assert res.texts[2]  # the relevant context survives
    assert sum(1 for t in res.texts if not t) >= 2
    assert set(res.extra["contexts_dropped"]) == {i for i, t in enumerate(res.texts) if not t}
    assert res.tokens_out <= res.budget.tokens_for(res.tokens_in)


def test_per_chunk_rule_is_llmlingua_like(comp):
    text = _text(21, 40)
    c = TokenClassificationCompressor(max_length=128, per_chunk=True)
    res = c.compress(text, budget=Budget(rate=0.33))
    assert res.extra["mode"] == "per-chunk"
    assert 0.2 < res.rate < 0.5  # local percentiles: near, not exactly, the target


def _kept_word_mask(text: str, res) -> np.ndarray:
    """Per whitespace-separated word of `text`: was any of it kept?"""
    starts, ends = np.asarray([m.span() for m in re.finditer(r"\S+", text)]).T
    return overlapping(starts, ends, res.kept[0])


def test_onnx_backend_is_the_same_model_as_torch(comp):
    """The default CPU backend (fused ONNX Runtime graph) keeps exactly torch's words."""
    pytest.importorskip("onnxruntime")
    assert isinstance(comp.loaded.model, OnnxTokenClassifier)
    assert comp.loaded.model.config.num_labels == 2
    text = _text(33, 60)
    plain = TokenClassificationCompressor(max_length=128, batch_size=16, backend="torch")
    assert not isinstance(plain.loaded.model, OnnxTokenClassifier)
    a = comp.compress(text, budget=Budget(rate=0.33))
    b = plain.compress(text, budget=Budget(rate=0.33))
    assert (_kept_word_mask(text, a) == _kept_word_mask(text, b)).mean() >= 0.998


def test_int8_fast_path_agrees_with_full_precision():
    text = _text(31, 60)
    full = TokenClassificationCompressor(max_length=256).compress(text, budget=Budget(rate=0.4))
    fast = TokenClassificationCompressor(max_length=256, fast=True).compress(
        text, budget=Budget(rate=0.4)
    )
    agree = (_kept_word_mask(text, full) == _kept_word_mask(text, fast)).mean()
    assert agree >= 0.94, agree  # 95.9% on this word salad; 98.1% on the benchmark text


def test_int8_graph_keeps_the_edge_layers_fp32_and_smooths_the_rest():
    """The fast path's recipe: the classifier and the first and last encoder layers stay
    fp32; every other matrix product is smoothed (a Mul before it) and int8."""
    pytest.importorskip("onnxruntime")
    import onnx

    lm = load_token_classifier(fast=True)
    assert isinstance(lm.model, OnnxTokenClassifier)
    nodes = onnx.load(str(lm.model.path)).graph.node
    last = int(lm.model.config.num_hidden_layers) - 1
    attention = [n.name for n in nodes if n.op_type == "Attention"]
    assert attention == ["Attention_0", f"Attention_{last}"]
    fp32 = Counter(
        "classifier" if "classifier" in n.name else re.search(r"layer\.(\d+)/", n.name)[1]
        for n in nodes
        if n.op_type == "MatMul"
    )
    assert fp32 == {"0": 3, str(last): 3, "classifier": 1}  # 3 products per edge layer
    middle = last - 1
    assert sum(n.op_type == "QAttention" for n in nodes) == middle
    assert sum(n.op_type == "MatMulInteger" for n in nodes) == 3 * middle
    assert sum(n.op_type == "Mul" and n.name.endswith("/smooth") for n in nodes) == 4 * middle


def test_llmlingua_chunk_cuts():
    """Cut after the last end token that fits; none in the window: cut at the limit; an end
    token just past the window opens the next chunk."""
    ends = np.zeros(10, dtype=bool)
    ends[9] = True  # token id 9 plays "."
    ids = np.asarray([1, 1, 9, 1, 1, 1, 1, 1, 9, 1, 1, 1, 1, 1, 1, 1, 1, 9, 1])
    assert _llmlingua_chunks(ids, ends, 5) == [(0, 3), (3, 8), (8, 13), (13, 18), (18, 19)]
    assert _llmlingua_chunks(ids, ends, 100) == [(0, 19)]


def test_budget_covering_everything_skips_model(comp):
    text = "Short text."
    res = comp.compress(text, budget=Budget(rate=1.0))
    assert res.text == text and res.extra["threshold"] is None


def test_empty_context_is_kept_empty(comp):
    res = comp.compress(["", _text(2, 20)], budget=Budget(rate=0.5))
    assert res.texts[0] == "" and res.texts[1]


def test_bad_options_and_missing_model():
    with pytest.raises(InputError):
        TokenClassificationCompressor(token_to_word="median")
    with pytest.raises(InputError):
        TokenClassificationCompressor(batch_size=0)
    with pytest.raises(InputError):
        TokenClassificationCompressor(backend="tensorrt")
    with pytest.raises(ModelNotFoundError):
        TokenClassificationCompressor("no-such-org/no-such-model").compress(
            "x " * 50, budget=Budget(rate=0.5)
        )


# ------------------------------------------------------------- any checkpoint


def _tiny(tmp_path, kind: str):
    """A randomly initialised token classifier with a real (or trained-here) tokenizer."""
    import torch
    from transformers import (
        BertConfig,
        BertForTokenClassification,
        XLMRobertaConfig,
        XLMRobertaForTokenClassification,
    )

    torch.manual_seed(0)
    folder = tmp_path / kind
    if kind == "bert":
        tok = load_tokenizer(MINILM)
        cfg = BertConfig(
            vocab_size=len(tok),
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=128,
            num_labels=2,
        )
        model = BertForTokenClassification(cfg)
    else:
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
        from transformers import XLMRobertaTokenizerFast

        raw = Tokenizer(models.Unigram())
        raw.pre_tokenizer = pre_tokenizers.Metaspace()
        raw.decoder = decoders.Metaspace()
        trainer = trainers.UnigramTrainer(
            vocab_size=300,
            unk_token="<unk>",
            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
        )
        raw.train_from_iterator([_text(i, 10) for i in range(20)], trainer)
        raw.post_processor = processors.TemplateProcessing(
            single="<s> $A </s>", special_tokens=[("<s>", 0), ("</s>", 2)]
        )
        tok = XLMRobertaTokenizerFast(
            tokenizer_object=raw,
            bos_token="<s>",
            eos_token="</s>",
            pad_token="<pad>",
            unk_token="<unk>",
            mask_token="<mask>",
            cls_token="<s>",
            sep_token="</s>",
        )
        cfg = XLMRobertaConfig(
            vocab_size=len(tok),
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=130,
            num_labels=2,
            pad_token_id=1,
        )
        model = XLMRobertaForTokenClassification(cfg)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return str(folder)


@pytest.mark.parametrize("kind", ["bert", "xlm-roberta"])
def test_any_token_classification_checkpoint(tmp_path, monkeypatch, kind):
    monkeypatch.setenv("CTXZIP_CACHE_DIR", str(tmp_path / "cache"))  # its ONNX export
    folder = _tiny(tmp_path, kind)
    c = TokenClassificationCompressor(folder, batch_size=8)
    lm = c.loaded
    if importlib.util.find_spec("onnxruntime") is not None:
        assert isinstance(lm.model, OnnxTokenClassifier)  # exported, fused, checked
    assert lm.max_length == 128  # position limit (RoBERTa: 130 - 2)
    text = _text(41, 40)
    res = c.compress([text, text[:300]], budget=Budget(rate=0.4))
    assert res.extra["chunks"] >= 3
    budget = res.budget.tokens_for(res.tokens_in)
    assert 0.98 * budget <= res.tokens_out <= budget
    for s, e in res.kept[0]:
        assert _whole_words(text, s, e), (s, e, text[max(0, s - 10) : e + 10])
