"""Activation smoothing before int8: same function, tamer activations, smaller int8 error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from ctxzip.compressors.token_classification import onnx_smoothing  # noqa: E402


def _mlp(path: Path, rng: np.random.Generator) -> None:
    """x [n, 16] -> MatMul(W1) -> Relu -> MatMul(W2) -> y [n, 8], saved to `path`."""
    from onnx import TensorProto, helper, numpy_helper

    w1 = rng.normal(0, 0.3, (16, 32)).astype(np.float32)
    w2 = rng.normal(0, 0.3, (32, 8)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w1"], ["h"], "first"),
            helper.make_node("Relu", ["h"], ["r"], "relu"),
            helper.make_node("MatMul", ["r", "w2"], ["y"], "second"),
        ],
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 8])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(path))


def _inputs(rng: np.random.Generator, n: int) -> np.ndarray:
    """Activations with two outlier channels 60x the others, as transformers have."""
    x = rng.normal(0, 1, (n, 16)).astype(np.float32)
    x[:, [3, 11]] *= 60
    return x


def _run(path: Path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["y"], {"x": x})[0]


def _int8(src: Path, dst: Path) -> Path:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=True)
    return dst


def test_smoothing_keeps_the_function_and_shrinks_int8_error(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    plain = tmp_path / "plain.onnx"
    _mlp(plain, rng)
    model = onnx.load(str(plain))
    nodes = onnx_smoothing.targets(model)
    assert [n.name for n in nodes] == ["first", "second"]
    calibration = [{"x": _inputs(rng, 64)} for _ in range(4)]
    ranges = onnx_smoothing.channel_ranges(plain, [n.input[0] for n in nodes], calibration)
    assert ranges["x"].shape == (16,) and ranges["x"][3] > 20 * np.median(ranges["x"])

    onnx_smoothing.smooth(model, nodes, ranges, alpha=0.75)
    smoothed = tmp_path / "smoothed.onnx"
    onnx.save(model, str(smoothed))
    assert [n.op_type for n in model.graph.node] == ["Mul", "MatMul", "Relu", "Mul", "MatMul"]

    x = _inputs(rng, 256)  # held-out inputs
    want = _run(plain, x)
    np.testing.assert_allclose(_run(smoothed, x), want, rtol=1e-4, atol=1e-4)

    error_plain = np.abs(_run(_int8(plain, tmp_path / "p8.onnx"), x) - want).mean()
    error_smoothed = np.abs(_run(_int8(smoothed, tmp_path / "s8.onnx"), x) - want).mean()
    assert error_smoothed < 0.6 * error_plain, (error_smoothed, error_plain)


def test_skipped_and_shared_weights_are_left_alone(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    plain = tmp_path / "plain.onnx"
    _mlp(plain, rng)
    model = onnx.load(str(plain))
    assert [n.name for n in onnx_smoothing.targets(model, skip=["second"])] == ["first"]
    model.graph.node[2].input[1] = "w1"  # both products now read one weight (shape aside)
    ranges = {"x": np.ones(16, np.float32), "r": np.ones(32, np.float32)}
    before = onnx.numpy_helper.to_array(model.graph.initializer[0]).copy()
    onnx_smoothing.smooth(model, onnx_smoothing.targets(model), ranges, alpha=0.75)
    assert [n.op_type for n in model.graph.node] == ["MatMul", "Relu", "MatMul"]
    np.testing.assert_array_equal(onnx.numpy_helper.to_array(model.graph.initializer[0]), before)
