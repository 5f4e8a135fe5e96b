"""SmoothQuant-style activation smoothing of an ONNX graph, before dynamic int8 quantisation.

Dynamic quantisation gives each activation tensor one int8 scale. Transformer activations
have a few outlier channels (a LayerNorm dimension, a GELU unit) many times larger than
the rest, so one scale crushes every other channel to a handful of levels. Smoothing
moves that range into the weights, which are quantised per output channel and can take
it (Xiao et al., 2023): for a matrix product ``x @ W`` and per-input-channel factors
``s``, ``(x / s) @ (s[:, None] * W)`` is the same function, and with
``s = max|x|**alpha / max|W|**(1 - alpha)`` both sides have tame ranges.

Here the division is an explicit ``Mul`` inserted before each smoothed node (in a
post-LayerNorm BERT the LayerNorm output is also the residual, so it cannot absorb
``1 / s``); it costs one elementwise pass over the input, which is small next to the
product. ``max|x|`` per channel comes from running the fp32 graph on calibration inputs.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

SMOOTHABLE = ("MatMul", "Attention")  # input 0 activations, input 1 an initializer [in, out]


def targets(model: Any, skip: Iterable[str] = ()) -> list[Any]:
    """The nodes worth smoothing: matrix products of an activation and a stored weight."""
    weights = {t.name for t in model.graph.initializer}
    skipped = set(skip)
    return [
        n
        for n in model.graph.node
        if n.op_type in SMOOTHABLE and n.name not in skipped and n.input[1] in weights
    ]


def channel_ranges(
    path: Path, tensors: Sequence[str], feeds: Iterable[dict[str, np.ndarray]]
) -> dict[str, np.ndarray]:
    """max |x| per last-axis channel of each named tensor, over every feed, on the fp32 graph."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(path))
    have = {o.name for o in model.graph.output}
    for name in tensors:
        if name not in have:
            model.graph.output.append(onnx.ValueInfoProto(name=name))
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    inputs = {i.name for i in session.get_inputs()}
    ranges: dict[str, np.ndarray] = {}
    for feed in feeds:
        outs = session.run(list(tensors), {k: v for k, v in feed.items() if k in inputs})
        for name, value in zip(tensors, outs, strict=True):
            peak = np.abs(value.reshape(-1, value.shape[-1])).max(axis=0)
            ranges[name] = np.maximum(ranges[name], peak) if name in ranges else peak
    return ranges


def smooth(model: Any, nodes: Sequence[Any], ranges: dict[str, np.ndarray], alpha: float) -> None:
    """Rewrite `model` in place: each node's input divided by `s`, its weight rows times `s`."""
    from onnx import helper, numpy_helper

    graph = model.graph
    init = {t.name: t for t in graph.initializer}
    users: dict[str, int] = {}
    for n in graph.node:
        for name in n.input:
            users[name] = users.get(name, 0) + 1
    muls: dict[str, Any] = {}  # smoothed input name -> the Mul that makes it
    for node in nodes:
        weight_name = node.input[1]
        weight = numpy_helper.to_array(init[weight_name]).astype(np.float32)
        peak = ranges[node.input[0]].astype(np.float32)
        if weight.ndim != 2 or weight.shape[0] != peak.size or users[weight_name] != 1:
            continue  # a shared or oddly shaped weight: leave this node as it is
        w_peak = np.abs(weight).max(axis=1)
        s = np.power(np.maximum(peak, 1e-5), alpha) / np.power(np.maximum(w_peak, 1e-5), 1 - alpha)
        s = np.clip(s, 1e-4, 1e4).astype(np.float32)
        init[weight_name].CopyFrom(numpy_helper.from_array(weight * s[:, None], weight_name))
        # named after the weight: unique (it has one user), even where nodes have no names
        scale, smoothed = f"{weight_name}/smooth_scale", f"{weight_name}/smoothed_input"
        graph.initializer.append(numpy_helper.from_array((1.0 / s).astype(np.float32), scale))
        muls[smoothed] = helper.make_node(
            "Mul", [node.input[0], scale], [smoothed], f"{weight_name}/smooth"
        )
        node.input[0] = smoothed
    for index in reversed(range(len(graph.node))):  # each Mul right before its user
        first = graph.node[index].input[0] if graph.node[index].input else ""
        if first in muls:
            graph.node.insert(index, muls[first])
