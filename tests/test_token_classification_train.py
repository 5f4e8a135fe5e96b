"""The trainer behind `ctxzip train token-classifier`: pieces that run in seconds."""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
from click.testing import CliRunner

from ctxzip.cli import cli
from ctxzip.compressors.token_classification import BASE_MODEL, weights_path
from ctxzip.compressors.token_classification.model import ADAPTED
from ctxzip.compressors.token_classification.train import (
    answer_spans,
    build_examples,
    bundled_qa,
    read_qa,
    select_top,
    split_records,
    windows,
)
from ctxzip.corpus import _pack, docstring_passages, reference_passages
from ctxzip.models import MINILM, load_tokenizer
from ctxzip.weights import load_weights, read_manifest, save_weights


def test_train_group_lists_token_classifier_and_checks_options():
    runner = CliRunner()
    listed = runner.invoke(cli, ["train", "--help"])
    assert listed.exit_code == 0 and "token-classifier" in listed.output
    bad = runner.invoke(cli, ["train", "token-classifier", "--rank", "0"])
    assert bad.exit_code == 2 and "--rank" in bad.output


def test_select_top_respects_token_budget():
    scores = np.array([0.9, 0.1, 0.8, 0.7])
    cost = np.array([2, 1, 3, 1])
    keep = select_top(scores, cost, 0.5)  # 3.5 of 7 tokens: the best words while they fit
    assert keep.tolist() == [True, False, False, False]
    assert select_top(scores, cost, 6 / 7).tolist() == [True, False, True, True]


def test_split_holds_out_whole_topics_and_training_never_sees_them():
    records = read_qa(bundled_qa())
    train, held = split_records(records)
    assert len(train) + len(held) == len(records) and 0.1 < len(held) / len(records) < 0.4
    topics = lambda rs: {r["metadata"]["topic"] for r in rs}  # noqa: E731
    assert not topics(train) & topics(held)
    exclude = {c for r in held for c in r["contexts"]}
    examples = build_examples(train, exclude, load_tokenizer(MINILM))
    assert len(examples) > 50
    assert not {e.text for e in examples} & exclude


def test_labels_mark_the_words_holding_an_answer():
    text = "Use the --ascii flag (see gzip(1)) to convert end-of-lines."
    (ex,) = build_examples(
        [{"golden_answers": ["--ascii"], "contexts": [text]}], set(), load_tokenizer(MINILM)
    )
    kept = [text[a:b] for a, b, y in zip(ex.words.start, ex.words.end, ex.label, strict=True) if y]
    assert kept == ["--ascii"]
    assert answer_spans("A b a", ["a"]) == [(0, 1), (4, 5)]


def test_windows_cover_every_token():
    for n in (1, 10, 256, 257, 1000):
        covered = np.zeros(n, bool)
        for a, b in windows(n, 256, 128):
            assert b - a <= 256
            covered[a:b] = True
        assert covered.all()


def test_passages_are_whole_paragraphs_within_bounds():
    doc = "\n\n".join(" ".join(["word"] * n) for n in (30, 30, 200, 25, 20))
    out = _pack(doc, max_words=80, min_words=40)
    assert all(40 <= len(p.split()) <= 80 for p in out)
    assert len(out) == 2  # the 200-word paragraph is skipped, never cut


def test_corpus_reads_quietly():
    """Reading the docs of deprecated aliases (typing.io, ...) must not warn: the corpus is
    also what the int8 graph calibrates on, inside users' programs."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        passages = docstring_passages()
        references = reference_passages(lambda text: len(text.split()), modules=["typing", "os"])
    assert len(passages) > 100
    assert len(references) > 100  # pydoc topics plus the two modules' docstrings


def test_shipped_weights_round_trip_and_carry_their_card(tmp_path):
    """What train.py writes (save_weights) is what the loader reads (load_weights): the
    head, one adapter pair per adapted matrix of all six layers, and a card that says
    how it was made and what it scores on held-out data."""
    tensors, manifest = load_weights(weights_path(), framework="np")
    assert tensors["classifier.weight"].shape == (2, 384)
    pairs = [k[: -len(".lora_A")] for k in tensors if k.endswith(".lora_A")]
    assert len(pairs) == 6 * len(ADAPTED)
    for name in pairs:
        a, b = tensors[f"{name}.lora_A"], tensors[f"{name}.lora_B"]
        assert a.shape[0] == b.shape[1] == manifest["rank"]
        assert np.abs(b).max() > 0  # the encoder itself was fine-tuned, not only the head
    assert manifest["base"] == BASE_MODEL
    held = manifest["held_out_answer_retained"]
    assert held["0.5"]["model"] > held["0.5"]["random words"]
    written = save_weights(tmp_path / "w.safetensors", tensors, manifest)
    again, info = load_weights(written, framework="np")
    assert read_manifest(written) == info == manifest
    for name, value in tensors.items():
        np.testing.assert_array_equal(again[name], value)
    assert weights_path().stat().st_size < 4_000_000


def test_runtime_modules_never_load_the_trainer():
    code = (
        "import sys, ctxzip.compressors.token_classification as tc; "
        "tc.TokenClassificationCompressor(); "
        "print('ctxzip.compressors.token_classification.train' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
