"""The trainer behind `ctxzip train token-classifier`: pieces that run in seconds."""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
from click.testing import CliRunner

from ctxzip.cli import cli
from ctxzip.compressors.token_classification import BASE_MODEL, head_path
from ctxzip.compressors.token_classification.train import (
    TEACHER,
    rank_targets,
    select_top,
    train_head,
)
from ctxzip.corpus import _pack, docstring_passages, reference_passages
from ctxzip.weights import load_weights, read_manifest, save_weights


def test_train_group_lists_token_classifier_and_checks_options():
    runner = CliRunner()
    listed = runner.invoke(cli, ["train", "--help"])
    assert listed.exit_code == 0 and "token-classifier" in listed.output
    bad = runner.invoke(cli, ["train", "token-classifier", "--passages", "3"])
    assert bad.exit_code == 2 and "--passages" in bad.output


def test_rank_targets_are_percentiles_with_shared_ties():
    ranks = rank_targets(np.array([3.0, 1.0, 2.0, 2.0]))
    assert ranks.tolist() == [1.0, 0.0, 0.5, 0.5]


def test_select_top_respects_token_budget():
    scores = np.array([0.9, 0.1, 0.8, 0.7])
    cost = np.array([2, 1, 3, 1])
    keep = select_top(scores, cost, 0.5)  # 3.5 of 7 tokens: the best words while they fit
    assert keep.tolist() == [True, False, False, False]
    assert select_top(scores, cost, 6 / 7).tolist() == [True, False, True, True]


def test_head_training_is_seeded_and_learns_a_linear_signal():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 16)).astype(np.float32)
    direction = rng.normal(size=16)
    target = 1 / (1 + np.exp(-(x @ direction)))
    noisy = x + rng.normal(scale=0.05, size=x.shape).astype(np.float32)
    w1, b1 = train_head(x, noisy, target, epochs=120, seed=3)
    w2, b2 = train_head(x, noisy, target, epochs=120, seed=3)
    assert np.array_equal(w1, w2) and np.array_equal(b1, b2)
    keep_logit = x @ (w1[1] - w1[0])
    assert np.corrcoef(keep_logit, x @ direction)[0, 1] > 0.9


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


def test_shipped_head_round_trips_through_ctxzip_weights(tmp_path):
    """The head train.py writes (save_weights) is what the loader reads (load_weights)."""
    head, manifest = load_weights(head_path(), framework="np")
    assert sorted(head) == ["classifier.bias", "classifier.weight"]
    assert head["classifier.weight"].shape == (2, 384) and head["classifier.bias"].shape == (2,)
    assert manifest["base"] == BASE_MODEL and manifest["teacher"] == TEACHER
    written = save_weights(tmp_path / "head.safetensors", head, manifest)
    again, info = load_weights(written, framework="np")
    assert read_manifest(written) == info == manifest
    for name, value in head.items():
        np.testing.assert_array_equal(again[name], value)


def test_runtime_modules_never_load_the_trainer():
    code = (
        "import sys, ctxzip.compressors.token_classification as tc; "
        "tc.TokenClassificationCompressor(); "
        "print('ctxzip.compressors.token_classification.train' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
