"""Index inputs: float ids cast to integers before an embedding lookup, and one-hot encoded ids
(OneHot, or Equal against a range then Cast), explained at their first float tensor with values
summed back per id position."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxshap
from onnxshap import cli
from onnxshap._tokens import find_embeddings, float_id_inputs
from tests.conftest import REPO
from tests.helpers import assert_locally_complete, player_shapley, run_ort

MODELS = REPO / "models"
MANIFEST = json.loads((MODELS / "manifest.json").read_text())
INDEX_MODELS = sorted(name for name, entry in MANIFEST.items() if entry.get("family") == "index")


def _ids(entry: dict, rng: np.random.Generator, n: int) -> np.ndarray:
    info = entry["inputs"][0]
    low, high = entry["input_range"]
    return rng.integers(low, high + 1, size=(n, info["shape"][1])).astype(info["dtype"])


def test_fixtures_are_there() -> None:
    encodings = {MANIFEST[n]["encoding"] for n in INDEX_MODELS}
    assert encodings == {"float_ids_embedding", "equal_range", "onehot_op"}, INDEX_MODELS


@pytest.mark.parametrize("name", INDEX_MODELS)
def test_index_model_explained_per_position_and_complete(name: str, rng: np.random.Generator) -> None:
    entry = MANIFEST[name]
    path = MODELS / entry["file"]
    model = onnxshap.load(path)
    x, background = _ids(entry, rng, 2), _ids(entry, rng, 8)
    ours = model.run({"x": x})["logits"]
    np.testing.assert_allclose(ours, run_ort(onnx.load(path), {"x": x})["logits"], rtol=1e-5, atol=1e-6)

    explainer = onnxshap.Explainer(model, background)
    (lookup,) = explainer.embeddings
    assert explainer.inputs == [lookup.tensor]  # the float ids are not explained as floats
    assert lookup.kind == ("embedding" if entry["encoding"] == "float_ids_embedding" else "one_hot")
    e = explainer.explain(x)
    n, length = x.shape
    k = len(e.output_names)
    assert e.input_names == ["x"] and e.values.shape == (n, length, k)
    np.testing.assert_array_equal(e.data, x)
    per_channel = e.embedding_values["x"]
    if lookup.kind == "one_hot":
        assert per_channel.shape == (n, length, entry["vocab_size"], k)
    else:
        assert per_channel.shape == (n, length, entry["embedding_dim"], k)
    np.testing.assert_allclose(per_channel.sum(axis=2), e.values, rtol=1e-5, atol=1e-6)
    assert e.max_relative_residual < 1e-5, e.max_relative_residual
    assert np.abs(e.values).sum() > 0
    # Per node local completeness on one (sample, reference) pair; diagnose() takes examples.
    nodes = explainer._pass.diagnose({"x": x[:1]}, {"x": background[:1]}, k - 1, k)
    assert_locally_complete(nodes, atol=1e-6)


def test_one_hot_tensor_named_in_inputs_gives_the_per_channel_values(rng: np.random.Generator) -> None:
    entry = MANIFEST["index_bytes_equal_ts"]
    model = onnxshap.load(MODELS / entry["file"])
    x, background = _ids(entry, rng, 2), _ids(entry, rng, 8)
    default = onnxshap.Explainer(model, background)
    tensor = default.embeddings[0].tensor
    by_name = onnxshap.Explainer(model, background, inputs=[tensor]).explain(x)
    e = default.explain(x)
    np.testing.assert_allclose(by_name.values, e.embedding_values["x"], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(by_name.values.sum(axis=2), e.values, rtol=1e-5, atol=1e-6)


def test_baseline_byte_equals_a_background_of_that_byte(rng: np.random.Generator) -> None:
    entry = MANIFEST["index_bytes_onehot_ts"]
    model = onnxshap.load(MODELS / entry["file"])
    x = _ids(entry, rng, 2)
    pad = entry["vocab_size"] - 1
    with_token = onnxshap.Explainer(model, baseline_token=pad).explain(x)
    with_rows = onnxshap.Explainer(model, np.full((1, x.shape[1]), pad, np.int32)).explain(x)
    np.testing.assert_allclose(with_token.values, with_rows.values, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(with_token.base_values, with_rows.base_values, rtol=1e-6)
    assert with_token.max_relative_residual < 1e-5


def test_float_ids_must_be_whole_and_in_the_table(rng: np.random.Generator) -> None:
    entry = MANIFEST["index_float_ids_ts"]
    model = onnxshap.load(MODELS / entry["file"])
    background = _ids(entry, rng, 4)
    bad = background.copy()
    bad[2, 1] = 3.5
    with pytest.raises(
        onnxshap.InputError, match=r"background for 'x' holds values that are not integers \(row\(s\) \[2\]"
    ):
        onnxshap.Explainer(model, bad)
    explainer = onnxshap.Explainer(model, background)
    x = _ids(entry, rng, 2)
    x[1, 0] = entry["vocab_size"]
    with pytest.raises(onnxshap.InputError, match=r"outside the embedding table of 50 rows \(row\(s\) \[1\]"):
        explainer.explain(x)
    # Naming the float input in inputs= explains it at its lookup too.
    assert [e.tensor for e in onnxshap.Explainer(model, background, inputs=["x"]).embeddings] == explainer.inputs


# ----------------------------------------------------------------------------- brute force, tiny models
def _model(nodes: list, x_type: int, inits: list, n_out: int) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "index",
        [helper.make_tensor_value_info("x", x_type, ["N", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", n_out])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return onnx.shape_inference.infer_shapes(model)


def _float_ids_linear(rng: np.random.Generator) -> onnx.ModelProto:
    """x float [N, 3] -> Cast(int64) -> Gather(table 6 x 2) -> Reshape [N, 6] -> MatMul [6, 1]."""
    inits = [
        numpy_helper.from_array(rng.standard_normal((6, 2)).astype(np.float32), "table"),
        numpy_helper.from_array(np.array([-1, 6], np.int64), "flat"),
        numpy_helper.from_array(rng.standard_normal((6, 1)).astype(np.float32), "w"),
    ]
    nodes = [
        helper.make_node("Cast", ["x"], ["ids"], to=TensorProto.INT64),
        helper.make_node("Gather", ["table", "ids"], ["emb"], axis=0),
        helper.make_node("Reshape", ["emb", "flat"], ["h"]),
        helper.make_node("MatMul", ["h", "w"], ["y"]),
    ]
    return _model(nodes, TensorProto.FLOAT, inits, 1)


def _equal_range_max(rng: np.random.Generator) -> onnx.ModelProto:
    """x int32 [N, 3] -> Equal(x[..., None], range(5)) -> Cast(float) -> MatMul [5, 1] -> max over positions:
    each position scores its id, the output is the best score (the max game over positions)."""
    inits = [
        numpy_helper.from_array(np.array([2], np.int64), "last"),
        numpy_helper.from_array(np.arange(5, dtype=np.int32), "range"),
        numpy_helper.from_array(rng.standard_normal((5, 1)).astype(np.float32), "w"),
    ]
    nodes = [
        helper.make_node("Unsqueeze", ["x", "last"], ["xu"]),
        helper.make_node("Equal", ["xu", "range"], ["hot"]),
        helper.make_node("Cast", ["hot"], ["onehot"], to=TensorProto.FLOAT),
        helper.make_node("MatMul", ["onehot", "w"], ["score"]),
        helper.make_node("ReduceMax", ["score"], ["best"], axes=[1], keepdims=0),
        helper.make_node("Identity", ["best"], ["y"]),
    ]
    return _model(nodes, TensorProto.INT32, inits, 1)


def _onehot_op_linear(rng: np.random.Generator) -> onnx.ModelProto:
    """x int64 [N, 3] -> OneHot(depth 5, float on/off values) -> Reshape [N, 15] -> MatMul [15, 2]."""
    inits = [
        numpy_helper.from_array(np.array([5], np.int64), "depth"),
        numpy_helper.from_array(np.array([0.0, 1.0], np.float32), "onoff"),
        numpy_helper.from_array(np.array([-1, 15], np.int64), "flat"),
        numpy_helper.from_array(rng.standard_normal((15, 2)).astype(np.float32), "w"),
    ]
    nodes = [
        helper.make_node("OneHot", ["x", "depth", "onoff"], ["onehot"], axis=-1),
        helper.make_node("Reshape", ["onehot", "flat"], ["h"]),
        helper.make_node("MatMul", ["h", "w"], ["y"]),
    ]
    return _model(nodes, TensorProto.INT64, inits, 2)


@pytest.mark.parametrize(
    ("build", "dtype", "high", "kind"),
    [
        (_float_ids_linear, np.float32, 6, "embedding"),
        (_equal_range_max, np.int32, 5, "one_hot"),
        (_onehot_op_linear, np.int64, 5, "one_hot"),
    ],
    ids=["float_ids_gather", "equal_range_max", "onehot_op"],
)
def test_per_position_values_are_the_shapley_values_over_positions(build, dtype, high, kind, rng) -> None:
    # Linear in the lookup (and the max rule's exact max game): the per-position values are the exact
    # Shapley values of the game "position i holds the sample's id or the reference's", averaged
    # over the references.
    proto = build(rng)
    x = np.array([[0, 3, 4]], dtype)
    background = np.array([[4, 1, 4], [2, 2, 0]], dtype)
    explainer = onnxshap.Explainer(onnxshap.load(proto), background)
    assert [e.kind for e in explainer.embeddings] == [kind]
    e = explainer.explain(x)
    assert e.values.shape == (1, 3, e.prediction.shape[1])
    for j in range(e.prediction.shape[1]):

        def game(z: np.ndarray, j: int = j) -> float:
            return float(run_ort(proto, {"x": z[None].astype(dtype)})["y"][0, j])

        expected = np.mean([player_shapley(game, x[0], r) for r in background], axis=0)
        np.testing.assert_allclose(e.values[0, :, j], expected, rtol=1e-5, atol=1e-6)
    assert e.max_relative_residual < 1e-5


def test_elementwise_equal_and_mixed_float_use_are_not_index_inputs() -> None:
    # x == c with c as wide as x compares, it does not encode: no lookup, and a clear error.
    inits = [
        numpy_helper.from_array(np.arange(3, dtype=np.int32), "c"),
        numpy_helper.from_array(np.ones((3, 1), np.float32), "w"),
    ]
    nodes = [
        helper.make_node("Equal", ["x", "c"], ["same"]),
        helper.make_node("Cast", ["same"], ["f"], to=TensorProto.FLOAT),
        helper.make_node("MatMul", ["f", "w"], ["y"]),
    ]
    model = onnxshap.load(_model(nodes, TensorProto.INT32, inits, 1))
    assert find_embeddings(model) == {}
    with pytest.raises(onnxshap.InputError, match="no id input .* one-hot encoding"):
        onnxshap.Explainer(model, np.zeros((1, 3), np.int32))
    # A float input that is also used as a float is not an id input.
    inits = [
        numpy_helper.from_array(np.ones((6, 1), np.float32), "table"),
        numpy_helper.from_array(np.ones((3, 1), np.float32), "w"),
    ]
    nodes = [
        helper.make_node("Cast", ["x"], ["ids"], to=TensorProto.INT64),
        helper.make_node("Gather", ["table", "ids"], ["emb"], axis=0),
        helper.make_node("Squeeze", ["emb"], ["e"]),
        helper.make_node("Add", ["e", "x"], ["h"]),
        helper.make_node("MatMul", ["h", "w"], ["y"]),
    ]
    assert float_id_inputs(onnxshap.load(_model(nodes, TensorProto.FLOAT, inits, 1)).graph) == []


def test_inspect_names_the_index_inputs(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["inspect", str(MODELS / "index_float_ids_ts.onnx")]) == 0
    out = capsys.readouterr().out
    assert "index input: 'x' (integer-valued floats) -> embedding lookup '/emb/Gather_output_0' (50 rows" in out
    assert "Gather                       x1    rule: none (constant)" in out
    assert cli.main(["inspect", str(MODELS / "index_bytes_onehot_ts.onnx")]) == 0
    out = capsys.readouterr().out
    assert "index input: 'x' (integer ids) -> one-hot '/Cast_1_output_0' (257 channels, OneHot node" in out
