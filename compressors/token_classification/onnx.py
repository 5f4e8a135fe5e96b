"""ONNX Runtime backend for token classifiers on CPU: exported once, fused, optionally int8.

On CPU the encoder forward is nearly all of a compression call, so the backend decides
the speed. The torch model is exported once per machine (and per checkpoint) into
ctxzip's cache with `ctxzip.models.converted_once`, then rewritten by ONNX Runtime's
transformer optimiser (one fused Attention op per layer, fused embedding/skip
LayerNorms and GELU). The fused fp32 graph computes the same function as the torch
model (logits agree to ~1e-5) and runs faster. The CPU fast path is its int8 graph:
activations smoothed on calibration text (`ctxzip.compressors.token_classification.onnx_smoothing`), then
dynamic quantisation with per-channel weights, the layers where int8 hurts most left in
fp32 (see `kept_fp32`).

Any failure here (no onnxruntime, an architecture the exporter cannot trace, a model
over ONNX's 2 GB protobuf limit) returns None and the caller keeps the torch model.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from ctxzip.compressors.token_classification.onnx_smoothing import channel_ranges, smooth, targets
from ctxzip.models import converted_once

log = logging.getLogger(__name__)

FORMAT = "tc-onnx-v4"  # bump when the export recipe changes (new cache folders)
MAX_BYTES = 1_900_000_000
FUSABLE = {"bert", "roberta", "xlm-roberta", "camembert", "electra"}
SMOOTHING_ALPHA = 0.75  # every layer int8: kept-word agreement 97.0% unsmoothed, 97.9% at 0.75

Feeds = Callable[[], Iterable[dict[str, np.ndarray]]]


class OnnxTokenClassifier:
    """Callable like a HF token classifier (`.logits`, `.hidden_states[-1]`), on ONNX Runtime."""

    def __init__(self, path: Path, threads: int, config: Any = None) -> None:
        import onnxruntime as ort

        self.config = config  # the checkpoint's HF config, as on the torch model
        self.threads = max(1, threads)

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        # Worker threads spin between the ops of one run (waking sleeping threads for each
        # of a layer's small ops cost ~15% of the fp32 forward on 2 cores) and stop the
        # moment a run returns, so they steal no CPU from whatever runs next.
        options.add_session_config_entry("session.intra_op.allow_spinning", "1")
        options.add_session_config_entry("session.force_spinning_stop", "1")
        self.path = path
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.inputs = {i.name for i in self.session.get_inputs()}

    def __call__(self, **kwargs: Any) -> SimpleNamespace:
        return self.forward(**kwargs)

    def forward(
        self, input_ids: Any, attention_mask: Any, output_hidden_states: bool = False
    ) -> SimpleNamespace:
        import torch

        ids = np.asarray(input_ids.cpu().numpy(), dtype=np.int64)
        mask = np.asarray(attention_mask.cpu().numpy(), dtype=np.int64)
        names = ["logits", "hidden"] if output_hidden_states else ["logits"]
        # One row at a time, each cut to its own length: a row's activations stay in the CPU
        # cache (a whole batch's spill out of it) and no work goes into padding.
        rows: list[list[np.ndarray]] = []
        for r in range(ids.shape[0]):
            n = int(mask[r].sum())
            n = n if n and mask[r, :n].all() else ids.shape[1]  # right padding only, else all
            feed = {"input_ids": ids[r : r + 1, :n], "attention_mask": mask[r : r + 1, :n]}
            rows.append(
                self.session.run(names, {k: v for k, v in feed.items() if k in self.inputs})
            )
        outs = [_pad_rows([row[i] for row in rows], ids.shape[1]) for i in range(len(names))]
        hidden = (torch.from_numpy(outs[1]),) if output_hidden_states else None
        return SimpleNamespace(logits=torch.from_numpy(outs[0]), hidden_states=hidden)


def _pad_rows(rows: list[np.ndarray], width: int) -> np.ndarray:
    """Stack [1, n_i, ...] outputs into [B, width, ...], zeros past each row's length."""
    out = np.zeros((len(rows), width, *rows[0].shape[2:]), dtype=rows[0].dtype)
    for r, row in enumerate(rows):
        out[r, : row.shape[1]] = row[0]
    return out


def cache_key(model_id: str, path: str, extra: bytes = b"") -> str:
    """Checkpoint identity: its id, config and weight files (size, mtime), plus `extra`."""
    digest = hashlib.sha1(f"{FORMAT}|{model_id}|{path}".encode())
    folder = Path(path)
    if folder.is_dir():
        for f in sorted(folder.iterdir()):
            if f.suffix in (".json", ".safetensors", ".bin"):
                st = f.stat()
                digest.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    digest.update(extra)
    return digest.hexdigest()[:16]


def onnx_classifier(
    model: Any, key: str, int8: bool, threads: int, calibration: Feeds
) -> OnnxTokenClassifier | None:
    """The cached (fused, optionally int8) ONNX graph of `model`; None if it cannot be made.

    `calibration` yields model inputs (typical text) for the int8 graph's smoothing; it is
    only called when that graph is built."""
    size = sum(p.numel() * p.element_size() for p in model.parameters())
    if size > MAX_BYTES:  # protobuf's 2 GB limit: do not spend minutes failing to export
        log.warning("model too large for one ONNX file (%.1f GB); using torch", size / 1e9)
        return None
    try:
        fp32 = converted_once(f"token-classifier-onnx/{key}", lambda out: _export(model, out))
        folder = fp32
        if int8:
            folder = converted_once(
                f"token-classifier-onnx/{key}-int8", lambda out: _quantise(fp32, out, calibration)
            )
        return OnnxTokenClassifier(folder / "model.onnx", threads, model.config)
    except Exception as exc:  # any export or runtime failure: keep torch
        log.warning(
            "ONNX Runtime backend unavailable (%s: %s); using torch", type(exc).__name__, exc
        )
        return None


class _Wrapped:
    """(input_ids, attention_mask) -> (logits, last hidden state), for tracing."""

    @staticmethod
    def make(model: Any) -> Any:
        import torch

        class Wrapped(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.inner = model

            def forward(self, input_ids: Any, attention_mask: Any) -> Any:
                out = self.inner(
                    input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True
                )
                return out.logits, out.hidden_states[-1]

        return Wrapped().eval()


def _export(model: Any, out: Path) -> None:
    import torch

    config = model.config
    previous = getattr(config, "_attn_implementation", None)
    fusable = getattr(config, "model_type", "") in FUSABLE
    if fusable and previous not in (None, "eager"):
        model.set_attn_implementation("eager")  # the pattern ORT's optimiser fuses
    ids = torch.full((2, 16), 100, dtype=torch.long)
    mask = torch.ones_like(ids)
    raw = out / "raw.onnx"
    try:
        with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                _Wrapped.make(model),
                (ids, mask),
                str(raw),
                input_names=["input_ids", "attention_mask"],
                output_names=["logits", "hidden"],
                dynamic_axes={
                    name: {0: "batch", 1: "sequence"}
                    for name in ("input_ids", "attention_mask", "logits", "hidden")
                },
                opset_version=17,
                dynamo=False,
            )
    finally:
        model.eval()  # the exporter restores the wrapper's mode recursively
        if fusable and previous not in (None, "eager"):
            model.set_attn_implementation(previous)
    target = out / "model.onnx"
    if fusable:
        from onnxruntime.transformers.optimizer import optimize_model

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            optimised = optimize_model(
                str(raw),
                model_type="bert",
                num_heads=int(config.num_attention_heads),
                hidden_size=int(config.hidden_size),
            )
            optimised.save_model_to_file(str(target))
        raw.unlink()
    else:
        raw.rename(target)
    _check(model, target)
    (out / "config.json").write_text(json.dumps({"format": FORMAT, "int8": False}) + "\n")


def _check(model: Any, path: Path) -> None:
    """The graph must reproduce the torch logits, padding included, or it is not used."""
    import torch

    ids = torch.tensor([[101, 2023, 2003, 1037, 3231, 102], [101, 2023, 102, 0, 0, 0]])
    ids = ids.clamp(max=int(model.config.vocab_size) - 1)
    mask = (torch.arange(6) < torch.tensor([[6], [3]])).long()
    with torch.inference_mode():
        want = model(input_ids=ids, attention_mask=mask).logits.float().numpy()
    got = OnnxTokenClassifier(path, 1)(input_ids=ids, attention_mask=mask).logits.numpy()
    live = mask.numpy().astype(bool)
    if not np.allclose(got[live], want[live], atol=1e-3, rtol=1e-3):
        raise RuntimeError("exported graph disagrees with the torch model")


def kept_fp32(nodes: Any) -> list[str]:
    """Nodes the int8 graph leaves in fp32: the classifier (tiny, and its logits are the
    score) and the first and last encoder layers (every later layer inherits the first's
    error; the last feeds the classifier). Measured on the shipped model (four ~10k-token
    texts at rates 0.33 and 0.5, kept-word agreement with fp32, all smoothed): int8
    everywhere else 97.9% mean, 97.1% worst; with these two layers in fp32 98.2% / 97.7%.
    No single other layer or projection moved it by more than 0.2 points."""
    attention = [n.name for n in nodes if n.op_type in ("Attention", "QAttention")]
    layers = [int(m.group(1)) for n in nodes if (m := re.search(r"layer\.(\d+)/", n.name))]
    edges = {f"layer.{min(layers)}/", f"layer.{max(layers)}/"} if layers else set()
    edge_attention = {attention[0], attention[-1]} if attention else set()
    return [
        n.name
        for n in nodes
        if "classifier" in n.name
        or n.name in edge_attention
        or any(edge in n.name for edge in edges)
    ]


def _quantise(
    fp32: Path,
    out: Path,
    calibration: Feeds,
    alpha: float | None = SMOOTHING_ALPHA,
    keep_fp32: Callable[[Any], list[str]] = kept_fp32,
) -> None:
    """Smooth (unless `alpha` is None), then int8 all but `keep_fp32`'s nodes.
    The defaults are the shipped recipe; the int8 benchmark builds its variants here."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model = onnx.load(str(fp32 / "model.onnx"))
    keep = keep_fp32(model.graph.node)
    if alpha is not None:
        nodes = targets(model, skip=keep)
        ranges = channel_ranges(
            fp32 / "model.onnx", sorted({n.input[0] for n in nodes}), calibration()
        )
        smooth(model, nodes, ranges, alpha)
    smoothed = out / "smoothed.onnx"
    onnx.save(model, str(smoothed))
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.ERROR))  # its "consider pre-processing" notice
    try:
        quantize_dynamic(
            str(smoothed),
            str(out / "model.onnx"),
            weight_type=QuantType.QInt8,
            per_channel=True,
            nodes_to_exclude=keep,
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
    finally:
        root.setLevel(level)
        smoothed.unlink()
    meta = {"format": FORMAT, "int8": True, "smoothing_alpha": alpha}
    (out / "config.json").write_text(json.dumps(meta) + "\n")
