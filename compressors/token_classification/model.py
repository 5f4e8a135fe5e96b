"""Loading token classifiers: the checkpoint, its tokenizer, and the backend it runs on.

`load_token_classifier` returns a `LoadedModel` once per process and settings, kept in
the one model cache (`ctxzip.models.cached`, so `ctxzip.models.clear_cache` frees it).
The shipped model (`DEFAULT_MODEL`) is the packaged all-MiniLM-L6-v2 encoder fine-tuned
through low-rank adapters, plus a keep/drop head, both in
`weights/token_classifier.safetensors` (read with `ctxzip.weights`; the adapters are
merged into the encoder's weights once at load, so every backend runs a plain encoder). On CPU the model runs on ONNX Runtime when it is installed
(`ctxzip.compressors.token_classification.onnx`), else on torch; `fast=True` is int8.
"""

from __future__ import annotations

import importlib.util
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ctxzip.compressors.token_classification.onnx import cache_key, onnx_classifier
from ctxzip.corpus import docstring_passages
from ctxzip.errors import InputError, ModelNotFoundError
from ctxzip.models import (
    MINILM,
    cached,
    load_tokenizer,
    pick_device,
    pick_dtype,
    resolve_model,
)
from ctxzip.weights import load_weights, shipped

DEFAULT_MODEL = "ctxzip/minilm-l6-keep-drop"
"""The shipped model: all-MiniLM-L6-v2 with the adapters and head in `token_classifier.safetensors`."""

BASE_MODEL = MINILM
"""The shipped model's encoder (fine-tuned through the shipped low-rank adapters)."""
WEIGHTS_FILE = "weights/token_classifier.safetensors"
ADAPTED = ("query", "key", "value", "attention.output.dense", "intermediate.dense", "output.dense")
"""Suffixes of the encoder matrices the shipped adapters update (every one in all layers)."""
BACKENDS = ("auto", "onnx", "torch")


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    backend: Any  # a private copy of the fast tokenizer: no padding, no truncation
    device: str
    max_length: int
    prefix: list[int]
    suffix: list[int]
    pad_id: int


def weights_path() -> Path:
    """The shipped adapters and keep/drop head (the model card, JSON, lies beside it)."""
    return shipped("ctxzip.compressors.token_classification", WEIGHTS_FILE)


def apply_shipped(model: Any, tensors: dict[str, Any]) -> None:
    """Load the head and merge each adapter (``weight += B @ A``) into `model` in place."""
    import torch

    with torch.no_grad():
        model.classifier.weight.copy_(tensors["classifier.weight"])
        model.classifier.bias.copy_(tensors["classifier.bias"])
        for key, a in tensors.items():
            if key.endswith(".lora_A"):
                name = key[: -len(".lora_A")]
                b = tensors[f"{name}.lora_B"]
                model.get_submodule(name).weight.add_(b @ a)


def load_token_classifier(
    model_id: str = DEFAULT_MODEL,
    device: str = "auto",
    dtype: str = "auto",
    fast: bool = False,
    backend: str = "auto",
) -> LoadedModel:
    """A token classifier and its tokenizer, once per process and settings.

    On CPU, `backend="auto"` runs the model on ONNX Runtime (a fused graph exported once
    into the cache; same fp32 function, faster) when onnxruntime is installed, else on
    torch. `fast=True` means int8 dynamic quantisation on CPU (ONNX Runtime's, else
    torch's); on a GPU the default half precision is already the fast path.
    """
    if backend not in BACKENDS:
        raise InputError(f"backend must be one of {', '.join(BACKENDS)}")
    dev = pick_device(device)
    runs_on = backend if dev == "cpu" else "torch"
    key = ("token-classifier", model_id, dev, dtype, fast, runs_on)
    return cached(key, lambda: _load(model_id, dev, dtype, fast, runs_on))


def _load(model_id: str, dev: str, dtype: str, fast: bool, backend: str) -> LoadedModel:
    import torch
    from tokenizers import Tokenizer
    from transformers import AutoConfig, AutoModelForTokenClassification
    from transformers.utils import logging as hf_logging

    torch_dtype = pick_dtype(dtype, dev)
    is_shipped = model_id == DEFAULT_MODEL
    source = BASE_MODEL if is_shipped else model_id
    path = resolve_model(source)
    try:
        config = AutoConfig.from_pretrained(path)
        kwargs: dict[str, Any] = {"num_labels": 2} if is_shipped else {}
        level = hf_logging.get_verbosity()
        if is_shipped:  # the head is loaded below: no "classifier weights missing" report
            hf_logging.set_verbosity_error()
        try:
            model = AutoModelForTokenClassification.from_pretrained(
                path, dtype=torch.float32, trust_remote_code=False, **kwargs
            )
        finally:
            hf_logging.set_verbosity(level)
    except OSError as exc:
        raise ModelNotFoundError(
            f"token classifier {model_id!r} is not available here ({exc.__class__.__name__}); "
            "pass a local folder or allow Hugging Face Hub downloads"
        ) from exc
    except ValueError as exc:
        raise ModelNotFoundError(
            f"{model_id!r} is not a token-classification model: {exc}"
        ) from exc
    if int(getattr(model.config, "num_labels", 0)) < 2:
        raise ModelNotFoundError(f"{model_id!r} has fewer than 2 labels; label 1 must mean keep")
    if is_shipped:
        tensors, _ = load_weights(weights_path(), framework="pt")
        apply_shipped(model, tensors)
    model.eval()
    tokenizer = load_tokenizer(source)
    fast_backend = getattr(tokenizer, "backend_tokenizer", None)
    if fast_backend is None:
        raise ModelNotFoundError(f"{model_id!r} has no fast tokenizer (offsets are needed)")
    words = Tokenizer.from_str(fast_backend.to_str())
    words.no_padding()
    words.no_truncation()
    words.encode_special_tokens = True  # "[SEP]" in a document is text, not a control token
    # the model's own special tokens around one sequence, e.g. [CLS] x [SEP] or <s> x </s>
    bare = words.encode("hello", add_special_tokens=False).ids
    wrapped = words.encode("hello", add_special_tokens=True).ids
    cut = next(i for i in range(len(wrapped)) if wrapped[i : i + len(bare)] == bare)
    limit = int(getattr(config, "max_position_embeddings", 512) or 512)
    if getattr(config, "model_type", "") in ("roberta", "xlm-roberta", "camembert"):
        limit -= 2  # RoBERTa positions start after the padding index
    model_max = getattr(tokenizer, "model_max_length", limit) or limit
    max_length = int(min(limit, model_max if model_max < 1_000_000 else limit, 512))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    prefix, suffix = wrapped[:cut], wrapped[cut + len(bare) :]
    runner: Any = None
    if dev == "cpu" and backend != "torch":

        def calibration() -> list[dict[str, np.ndarray]]:
            return calibration_feeds(words, prefix, suffix, max_length)

        runner = _onnx_runner(
            model, model_id, str(path), fast, is_shipped, backend == "onnx", calibration
        )
    if runner is not None:
        model = runner
    elif fast and dev == "cpu":
        model = quantize_int8(model)
    else:
        model = model.to(device=dev, dtype=torch_dtype)
    return LoadedModel(
        model,
        tokenizer,
        words,
        dev,
        max_length,
        prefix,
        suffix,
        int(pad_id),
    )


def _onnx_runner(
    model: Any,
    model_id: str,
    path: str,
    int8: bool,
    is_shipped: bool,
    required: bool,
    calibration: Callable[[], list[dict[str, np.ndarray]]],
) -> Any:
    """The model on ONNX Runtime (None: not installed or not exportable, keep torch)."""
    import torch

    if importlib.util.find_spec("onnxruntime") is None:
        if required:
            raise ModelNotFoundError("backend='onnx' needs onnxruntime (pip install onnxruntime)")
        return None
    extra = weights_path().read_bytes() if is_shipped else b""
    key = cache_key(model_id, path, extra)
    runner = onnx_classifier(model, key, int8, torch.get_num_threads(), calibration)
    if runner is None and required:
        raise ModelNotFoundError(f"{model_id!r} could not be exported to ONNX")
    return runner


def calibration_feeds(
    backend: Any, prefix: list[int], suffix: list[int], max_length: int, windows: int = 16
) -> list[dict[str, np.ndarray]]:
    """Full model windows of calibration text (standard-library
    docstrings): what the int8 graph's smoothing measures activation ranges on."""
    width = max_length - len(prefix) - len(suffix)
    ids: list[int] = []
    for passage in docstring_passages():
        ids.extend(backend.encode(passage + "\n\n", add_special_tokens=False).ids)
        if len(ids) >= width * windows:
            break
    feeds = []
    for a in range(0, min(len(ids), width * windows), width):
        row = np.asarray([*prefix, *ids[a : a + width], *suffix], dtype=np.int64)[None]
        feeds.append({"input_ids": row, "attention_mask": np.ones_like(row)})
    return feeds


def quantize_int8(model: Any) -> Any:
    """Dynamic int8 (per-channel weights) for the encoder's linear layers.

    Two kinds stay in full precision because int8 there moves the keep scores most:
    the feed-forward down-projections (their GELU inputs have outliers that per-tensor
    activation scales crush) and the classifier itself (tiny, and its logits are the score).
    """
    import torch
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    head = {n for n, _ in model.named_children()} - {"dropout"}
    spec = {
        name: per_channel_dynamic_qconfig
        for name, mod in model.named_modules()
        if isinstance(mod, torch.nn.Linear)
        and name not in head
        and not (name.endswith("output.dense") and "attention" not in name)
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao's deprecation notice, once per load
        return quantize_dynamic(model, spec, dtype=torch.qint8)
