"""Forward parity with onnxruntime on whole models: the real exports in models/ (the quantised ones in
tests/test_quant.py) and the nine light model-zoo graphs shipped inside the onnx wheel."""

from __future__ import annotations

import gc
import json
from pathlib import Path

import numpy as np
import onnx
import pytest

import onnxshap
from tests.conftest import REPO
from tests.helpers import random_feeds, run_ort

MANIFEST = json.loads((REPO / "models" / "manifest.json").read_text())
LIGHT = sorted((Path(onnx.__file__).parent / "backend" / "test" / "data" / "light").glob("*.onnx"))


#: Loading a quantised fixture costs seconds; tests/test_quant.py::test_qdq_fixture_matches_onnxruntime_exactly
#: compares them with onnxruntime bit for bit, on more rows than here.
PARITY_ELSEWHERE = {"qdq"}


@pytest.mark.parametrize("name", sorted(n for n, e in MANIFEST.items() if e.get("family") not in PARITY_ELSEWHERE))
def test_exported_model_matches_onnxruntime(name: str, rng: np.random.Generator) -> None:
    path = REPO / "models" / MANIFEST[name]["file"]
    model = onnxshap.load(path)
    feeds = random_feeds(model, rng, batch=3)
    ours = model.run(feeds)
    theirs = run_ort(onnx.load(path), feeds)
    for out in model.output_names:
        if isinstance(theirs[out], list):  # ZipMap: one {label: probability} dict per row
            assert [sorted(d) for d in ours[out]] == [sorted(d) for d in theirs[out]]
            for mine, ref in zip(ours[out], theirs[out]):
                np.testing.assert_allclose(
                    [mine[k] for k in sorted(ref)], [ref[k] for k in sorted(ref)], rtol=1e-5, atol=1e-6
                )
        elif ours[out].dtype.kind == "f":
            np.testing.assert_allclose(ours[out], theirs[out], rtol=1e-5, atol=1e-6, err_msg=out)
        else:
            np.testing.assert_array_equal(ours[out], theirs[out], err_msg=out)


@pytest.fixture
def previous_model_freed() -> None:
    """Free the previous light model before the next one loads: a Model and its jitted forward refer to
    each other, so only the cycle collector frees them, and VGG-19 (575 MB of weights) was still held
    while ZFNet-512 (350 MB) loaded (the process peaked at 2.2 GB)."""
    gc.collect()


@pytest.mark.usefixtures("previous_model_freed")
@pytest.mark.parametrize("path", LIGHT, ids=[p.stem for p in LIGHT])
def test_light_zoo_model_matches_onnxruntime(path: Path, rng: np.random.Generator) -> None:
    proto = onnx.load(path)
    model = onnxshap.load(proto)
    # These graphs end in a softmax over constant weights (nearly uniform), so also compare its input.
    last = model.graph.nodes[-1]
    probe = last.inputs[0]
    extended = onnx.ModelProto.FromString(proto.SerializeToString())
    extended.graph.output.append(onnx.helper.make_empty_tensor_value_info(probe))
    feeds = random_feeds(model, rng, batch=1)
    ours = model.run(feeds, [*model.output_names, probe])
    theirs = run_ort(extended, feeds)
    for out in ours:
        scale = float(np.max(np.abs(theirs[out]))) or 1.0
        np.testing.assert_allclose(ours[out], theirs[out], rtol=1e-4, atol=1e-5 * scale, err_msg=out)
