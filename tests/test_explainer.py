"""Explainer end to end: completeness on real exported models, output selection, errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxshap
from tests.conftest import REPO
from tests.helpers import assert_locally_complete

MODELS = REPO / "models"
MANIFEST: dict[str, Any] = json.loads((MODELS / "manifest.json").read_text())


def _float_inputs(model: onnxshap.Model, rng: np.random.Generator, n: int, scale: float = 1.0) -> dict[str, np.ndarray]:
    feeds = {}
    for info in model.inputs:
        shape = tuple(d if isinstance(d, int) and d > 0 else n for d in info.shape or ())
        feeds[info.name] = (scale * rng.uniform(0, 1, shape)).astype(info.dtype or np.float32)
    return feeds


#: Families whose own test checks this file's contract on each of their fixtures (completeness, no
#: gradient nodes, every node's local completeness in float64), on inputs drawn like the fixture's data.
FAMILY_TESTS = {
    "qdq": "tests/test_quant.py::test_qdq_fixture_is_explained_exactly_by_default",
    "trees": "tests/test_trees_zoo.py::test_tree_model_values_match_references",
    "datadep": "tests/test_boolean_rules.py::test_datadep_fixture_explains_completely",
    "control": "tests/test_control_flow.py::test_control_fixture_matches_onnxruntime_and_explains_exactly",
}


def _explainable() -> list[str]:
    """Every model in models/ with float inputs and a batch axis 0 (token-id models: tests/test_tokens.py;
    other batch layouts and ZipMap: tests/test_layouts.py)."""
    names = []
    for name, entry in sorted(MANIFEST.items()):
        if entry.get("family") in ("layout", "index") or name.endswith("zipmap"):
            continue
        if all(i["dtype"].startswith("float") for i in entry["inputs"]):
            names.append(name)
    return names


def _generic() -> list[str]:
    """The explainable models whose family has no test of its own (FAMILY_TESTS)."""
    return [name for name in _explainable() if MANIFEST[name].get("family") not in FAMILY_TESTS]


def _is_slow(value: Any) -> bool:
    return any(m.name == "slow" for m in getattr(value, "marks", ()))


def test_every_family_test_takes_each_of_its_fixtures_by_default() -> None:
    # A family left out of the tests below must be explained, fixture by fixture, by the test named for
    # it, and not only with -m slow.
    import importlib

    for family, where in FAMILY_TESTS.items():
        path, function = where.split("::")
        test = getattr(importlib.import_module(path.removesuffix(".py").replace("/", ".")), function)
        (mark,) = [m for m in test.pytestmark if m.name == "parametrize" and m.args[0] == "name"]
        # A plain name, or pytest.param(name, marks=...) that is not marked slow.
        taken = [v if isinstance(v, str) else v.values[0] for v in mark.args[1] if not _is_slow(v)]
        family_fixtures = [name for name in _explainable() if MANIFEST[name].get("family") == family]
        assert family_fixtures and set(family_fixtures) <= set(taken), (family, set(family_fixtures) - set(taken))


def _explained_outputs(model: onnxshap.Model) -> list[str]:
    return [o.name for o in model.outputs if o.dtype is not None and o.dtype.kind == "f"]


@pytest.mark.parametrize("name", _generic())
def test_exported_model_attributions_are_complete(name: str, rng: np.random.Generator) -> None:
    model = onnxshap.load(MODELS / MANIFEST[name]["file"])
    x = _float_inputs(model, rng, 4)
    background = _float_inputs(model, rng, 16)
    explainer = onnxshap.Explainer(model, background, outputs=_explained_outputs(model))
    e = explainer.explain(x)
    assert e.max_relative_residual < 1e-5, e.max_relative_residual
    assert len(e.output_names) == e.prediction.shape[1]
    assert not e.gradient_nodes
    # Per node: every rule's local completeness on one (sample, reference) pair, for the last output,
    # fed in float64 so that rounding does not hide a rule that is off by a little (ops that compute in
    # float32 by specification, like the ai.onnx.ml ones, still round at float32 precision).
    # diagnose() takes examples: one sample with the graph's batch-of-one axis.
    sample = {k: v[:1].astype(np.float64) for k, v in x.items()}
    reference = {k: v[:1].astype(np.float64) for k, v in background.items()}
    nodes = explainer._pass.diagnose(sample, reference, len(e.all_output_names) - 1, len(e.all_output_names))
    assert_locally_complete(nodes)


@pytest.mark.slow
@pytest.mark.parametrize("n_background", [1, 100])
@pytest.mark.parametrize("name", _explainable())
def test_exported_model_complete_for_background_sizes(name: str, n_background: int, rng: np.random.Generator) -> None:
    model = onnxshap.load(MODELS / MANIFEST[name]["file"])
    x = _float_inputs(model, rng, 4)
    e = onnxshap.Explainer(model, _float_inputs(model, rng, n_background), outputs=_explained_outputs(model)).explain(x)
    assert e.max_relative_residual < 1e-5, e.max_relative_residual


def _layer_norm_model() -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 6])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 6])
    scale = numpy_helper.from_array(np.linspace(0.5, 1.5, 6).astype(np.float32), "scale")
    node = helper.make_node("LayerNormalization", ["x", "scale"], ["y"], name="ln")
    graph = helper.make_graph([node], "ln", [x], [y], [scale])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.fixture
def layer_norm_without_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    """The table as it is for an op whose forward is supported but whose composite rule is not written."""
    import dataclasses

    from onnxshap._registry import registry

    reg = registry()
    spec = reg.get("LayerNormalization")
    assert spec is not None
    monkeypatch.setitem(reg._by_op, ("", "LayerNormalization"), dataclasses.replace(spec, composite=None))


@pytest.mark.usefixtures("layer_norm_without_rule")
def test_missing_composite_rule_is_a_clear_error(rng: np.random.Generator) -> None:
    with pytest.raises(onnxshap.UnsupportedOpError, match="LayerNormalization node 'ln'.*allow_gradient_fallback"):
        onnxshap.Explainer(_layer_norm_model(), rng.normal(size=(4, 6)).astype(np.float32))


@pytest.mark.usefixtures("layer_norm_without_rule")
def test_gradient_fallback_is_opt_in_and_listed(rng: np.random.Generator) -> None:
    explainer = onnxshap.Explainer(
        _layer_norm_model(), rng.normal(size=(4, 6)).astype(np.float32), allow_gradient_fallback=True
    )
    # Gradients through a normalization are not complete: the check warns and names the node.
    with pytest.warns(UserWarning, match="plain gradients.*'ln'"):
        e = explainer.explain(rng.normal(size=(2, 6)).astype(np.float32))
    assert e.gradient_nodes == ["LayerNormalization node 'ln'"]
    assert e.max_relative_residual > 1e-3


def test_gradient_rule_by_name_is_listed(rng: np.random.Generator) -> None:
    explainer = onnxshap.Explainer(_layer_norm_model(), rng.normal(size=(4, 6)).astype(np.float32))
    assert explainer.explain(rng.normal(size=(2, 6)).astype(np.float32)).gradient_nodes == []
    by_name = onnxshap.Explainer(
        _layer_norm_model(), rng.normal(size=(4, 6)).astype(np.float32), rules={"ln": "gradient"}, check="off"
    )
    assert by_name.explain(rng.normal(size=(2, 6)).astype(np.float32)).gradient_nodes == [
        "LayerNormalization node 'ln'"
    ]


def _linear_model(n_features: int = 5, n_out: int = 2) -> tuple[onnx.ModelProto, np.ndarray]:
    rng = np.random.default_rng(3)
    w = rng.normal(size=(n_features, n_out)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "lin",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", n_features])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", n_out])],
        [numpy_helper.from_array(w, "w")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), w


def test_linear_model_gets_exact_shapley_values(rng: np.random.Generator) -> None:
    proto, w = _linear_model()
    x = rng.normal(size=(3, 5)).astype(np.float32)
    bg = rng.normal(size=(10, 5)).astype(np.float32)
    e = onnxshap.Explainer(proto, bg).explain(x)
    want = (x - bg.mean(0))[:, :, None] * w[None]
    np.testing.assert_allclose(e.values, want, rtol=1e-5, atol=1e-6)
    assert e.output_names == ["y[0]", "y[1]"]


def _relu_net() -> onnx.ModelProto:
    rng = np.random.default_rng(4)
    inits = [
        numpy_helper.from_array(rng.normal(size=s).astype(np.float32), n) for n, s in [("w1", (6, 8)), ("w2", (8, 3))]
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"]),
        helper.make_node("Relu", ["h"], ["a"], name="the_relu"),
        helper.make_node("MatMul", ["a", "w2"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "net",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 6])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 3])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_output_selection(rng: np.random.Generator) -> None:
    x = rng.normal(size=(4, 6)).astype(np.float32)
    bg = rng.normal(size=(8, 6)).astype(np.float32)
    ex = onnxshap.Explainer(_relu_net(), bg)
    full = ex.explain(x)
    one = ex.explain(x, output=2)
    some = ex.explain(x, output=[2, 0])
    np.testing.assert_allclose(one.values[..., 0], full.values[..., 2], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(some.values[..., 1], full.values[..., 0], rtol=1e-5, atol=1e-7)
    pred = ex.explain(x, output="predicted")
    idx = full.prediction.argmax(1)
    np.testing.assert_allclose(pred.values[..., 0], full.values[np.arange(4), :, idx], rtol=1e-5, atol=1e-7)
    logits = onnxshap.Explainer(_relu_net(), bg, outputs="logits").explain(x)
    assert logits.output_names == ["logits[0]", "logits[1]", "logits[2]"]
    assert logits.max_relative_residual < 1e-4


def test_chunking_and_background_sizes_agree(rng: np.random.Generator) -> None:
    x = rng.normal(size=(3, 6)).astype(np.float32)
    bg = rng.normal(size=(10, 6)).astype(np.float32)
    whole = onnxshap.Explainer(_relu_net(), bg).explain(x)
    chunked = onnxshap.Explainer(_relu_net(), bg, chunk_size=3).explain(x)
    np.testing.assert_allclose(chunked.values, whole.values, rtol=1e-5, atol=1e-7)
    for n in (1, 16, 100):
        e = onnxshap.Explainer(_relu_net(), rng.normal(size=(n, 6)).astype(np.float32)).explain(x)
        assert e.max_relative_residual < 1e-4


def test_compiles_once_per_shape(rng: np.random.Generator) -> None:
    ex = onnxshap.Explainer(_relu_net(), rng.normal(size=(8, 6)).astype(np.float32))
    ex.explain(rng.normal(size=(3, 6)).astype(np.float32))
    ex.explain(rng.normal(size=(3, 6)).astype(np.float32))
    assert ex._pass.trace_count == 1


def test_batch_sizes_share_a_bucket(rng: np.random.Generator) -> None:
    bg = rng.normal(size=(8, 6)).astype(np.float32)
    x = rng.normal(size=(6, 6)).astype(np.float32)
    ex = onnxshap.Explainer(_relu_net(), bg)
    six = ex.explain(x)
    five = ex.explain(x[:5])  # padded to the bucket of 6: no new compilation
    assert ex._pass.trace_count == 1
    np.testing.assert_allclose(five.values, six.values[:5], rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(five.prediction, six.prediction[:5])


def test_small_call_budget_splits_samples_and_background(
    rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    from onnxshap import _attribution

    bg = rng.normal(size=(10, 6)).astype(np.float32)
    x = rng.normal(size=(5, 6)).astype(np.float32)
    whole = onnxshap.Explainer(_relu_net(), bg).explain(x)
    ex = onnxshap.Explainer(_relu_net(), bg)
    examples = {"x": x[:, None]}  # the pass takes examples: each row as the batch of one the graph takes
    per_pair = ex._pass._shape_trace(examples).pair_bytes * 3 * 4
    monkeypatch.setattr(_attribution, "call_budget", lambda: 2 * per_pair)
    assert ex._pass.plan(5, 10, 3, examples) == (2, 10, 1)  # 2 samples x 1 background row per call
    split = ex.explain(x)
    np.testing.assert_allclose(split.values, whole.values, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(split.base_values, whole.base_values, rtol=1e-6)


def test_a_broken_rule_is_reported_by_node(rng: np.random.Generator) -> None:
    bg = rng.normal(size=(8, 6)).astype(np.float32)
    ex = onnxshap.Explainer(_relu_net(), bg, rules={"the_relu": "zero"})
    with pytest.raises(onnxshap.AdditivityError, match="the_relu"):
        ex.explain(rng.normal(size=(2, 6)).astype(np.float32))
    quiet = onnxshap.Explainer(_relu_net(), bg, rules={"the_relu": "zero"}, check="off")
    assert quiet.explain(rng.normal(size=(2, 6)).astype(np.float32)).max_relative_residual > 1e-3


def test_save_and_load_round_trip(tmp_path: Path, rng: np.random.Generator) -> None:
    e = onnxshap.Explainer(_relu_net(), rng.normal(size=(8, 6)).astype(np.float32)).explain(
        rng.normal(size=(2, 6)).astype(np.float32)
    )
    e.save(tmp_path / "e.npz")
    back = onnxshap.Explanation.load(tmp_path / "e.npz")
    np.testing.assert_array_equal(back.values, e.values)
    np.testing.assert_array_equal(back.base_values, e.base_values)
    assert back.output_names == e.output_names and back.input_names == e.input_names


def test_bad_inputs(rng: np.random.Generator) -> None:
    bg = rng.normal(size=(8, 6)).astype(np.float32)
    x = rng.normal(size=(2, 6)).astype(np.float32)
    with pytest.raises(onnxshap.InputError, match="empty"):
        onnxshap.Explainer(_relu_net(), bg[:0])
    with pytest.raises(onnxshap.InputError, match="astype"):
        onnxshap.Explainer(_relu_net(), bg.astype(np.float64))
    with pytest.raises(onnxshap.InputError, match="axis 1 must be 6"):
        onnxshap.Explainer(_relu_net(), bg[:, :4])
    nan_bg = bg.copy()
    nan_bg[[2, 5], 0] = np.nan
    with pytest.raises(onnxshap.InputError, match=r"row\(s\) \[2, 5\]"):
        onnxshap.Explainer(_relu_net(), nan_bg)
    ex = onnxshap.Explainer(_relu_net(), bg)
    bad_x = x.copy()
    bad_x[1, 3] = np.inf
    with pytest.raises(onnxshap.InputError, match=r"row\(s\) \[1\]"):
        ex.explain(bad_x)
    with pytest.raises(onnxshap.InputError, match="out of range"):
        ex.explain(x, output=3)
    with pytest.raises(onnxshap.InputError, match="does not exist"):
        onnxshap.Explainer(_relu_net(), bg, outputs="nope")
    with pytest.raises(onnxshap.InputError, match="does not exist"):
        onnxshap.Explainer(_relu_net(), bg, inputs="nope")


def test_save_never_leaves_a_partial_file(
    tmp_path: Path, rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    bg = rng.normal(size=(8, 6)).astype(np.float32)
    e = onnxshap.Explainer(_relu_net(), bg).explain(bg[:2])
    (tmp_path / "folder").mkdir()
    with pytest.raises(onnxshap.OutputError, match="is a directory"):
        e.save(tmp_path / "folder")
    with pytest.raises(onnxshap.OutputError, match="does not exist"):
        e.save(tmp_path / "missing" / "values.npz")

    def full_disk(fh: Any, **arrays: Any) -> None:
        fh.write(b"PK partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez", full_disk)
    with pytest.raises(onnxshap.OutputError, match="No space left on device"):
        e.save(tmp_path / "values.npz")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder"]


def test_baseline_token_outside_the_table_is_refused() -> None:
    model = REPO / "models" / "seq_text_cnn_ts.onnx"  # a table of 100+ rows
    for token in (10**6, -1000):
        with pytest.raises(onnxshap.InputError, match=rf"baseline_token={token} is outside the table"):
            onnxshap.Explainer(model, baseline_token=token)
