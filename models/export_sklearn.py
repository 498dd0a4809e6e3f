"""Export small scikit-learn pipelines to ONNX with skl2onnx (opset 17, ai.onnx.ml 3).

Run from the repository root with the export environment (see models/README.md):

    /work/exportenv/bin/python models/export_sklearn.py

Writes models/sklearn_<name>.onnx, verifies each against scikit-learn in onnxruntime and
updates models/manifest.json. Note scikit-learn computes in float64 while the ONNX graphs
take float32 input (FloatTensorType), so the diffs include float32 rounding.
"""

from __future__ import annotations

import os
import sys

if os.environ.get("PYTHONHASHSEED") != "0":
    # keep any hash-order-dependent naming in the converter byte-stable
    os.environ["PYTHONHASHSEED"] = "0"
    os.execv(sys.executable, [sys.executable] + sys.argv)

import warnings

import numpy as np
import onnx
import skl2onnx
import sklearn
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C

warnings.filterwarnings("ignore")

N_FEATURES = 6
TARGET_OPSET = {"": 17, "ai.onnx.ml": 3}
FRAMEWORK = f"scikit-learn {sklearn.__version__}"
CONVERTER = f"skl2onnx {skl2onnx.__version__}, target_opset {{'': 17, 'ai.onnx.ml': 3}}"


def data_cls():
    g = np.random.default_rng(0)
    X = g.standard_normal((1200, N_FEATURES)) * [1, 2, 0.5, 3, 1, 1] + [0, 1, -1, 2, 0, 5]
    s = np.stack([X[:, 0] + 0.5 * X[:, 1], X[:, 2] * 2 - 0.3 * X[:, 3], 0.5 * X[:, 4] ** 2 - 0.5], 1)
    return X, np.argmax(s + 0.3 * g.standard_normal(s.shape), 1)


def data_reg():
    g = np.random.default_rng(1)
    X = g.standard_normal((1000, N_FEATURES)) * [1, 2, 0.5, 3, 1, 1] + [0, 1, -1, 2, 0, 5]
    y = 1.5 * X[:, 0] - 0.7 * X[:, 1] + 0.2 * X[:, 3] + np.sin(X[:, 2]) + 0.1 * g.standard_normal(len(X))
    return X, y


def to_onnx(model, path, options=None):
    # name= fixes the graph name (skl2onnx otherwise uses a random uuid4 hex)
    onx = convert_sklearn(
        model,
        name=os.path.basename(path)[: -len(".onnx")],
        initial_types=[("x", FloatTensorType([None, N_FEATURES]))],
        target_opset=TARGET_OPSET,
        options=options,
    )
    onnx.save(onx, path)


def sk_outputs(model, x, kind, zipmap=False):
    x64 = x.astype(np.float64)
    if kind == "cls":
        label = model.predict(x64).astype(np.int64)
        proba = model.predict_proba(x64).astype(np.float32)
        return [label, proba]
    return [model.predict(x64).reshape(len(x), -1).astype(np.float32)]


def main():
    Xc, yc = data_cls()
    Xr, yr = data_reg()
    mlp = Pipeline(
        [
            ("scaler", StandardScaler()),
            ("mlp", MLPClassifier(hidden_layer_sizes=(16,), activation="relu", max_iter=500, random_state=0)),
        ]
    ).fit(Xc, yc)
    logreg = Pipeline([("scaler", StandardScaler()), ("logreg", LogisticRegression(max_iter=1000))]).fit(Xc, yc)
    linreg = Pipeline([("scaler", StandardScaler()), ("linreg", LinearRegression())]).fit(Xr, yr)
    mlpr = MLPRegressor(hidden_layer_sizes=(16, 8), activation="tanh", max_iter=500, random_state=0).fit(Xr, yr)
    print(
        f"sklearn_mlp train acc {mlp.score(Xc, yc):.3f}; sklearn_logreg train acc {logreg.score(Xc, yc):.3f}; "
        f"sklearn_linreg R2 {linreg.score(Xr, yr):.3f}; sklearn_mlp_regressor R2 {mlpr.score(Xr, yr):.3f}"
    )

    no_zipmap = {"zipmap": False}
    specs = [
        (
            "sklearn_mlp",
            mlp,
            "cls",
            {id(mlp): no_zipmap},
            (
                "Pipeline(StandardScaler, MLPClassifier(16, relu)), 6 features, 3 classes; outputs label + "
                "probabilities tensor (zipmap=False)"
            ),
        ),
        (
            "sklearn_mlp_zipmap",
            mlp,
            "cls_zipmap",
            None,
            (
                "Same pipeline as sklearn_mlp converted with the default ZipMap: probabilities are a "
                "sequence of {class: prob} maps"
            ),
        ),
        (
            "sklearn_logreg",
            logreg,
            "cls",
            {id(logreg): no_zipmap},
            (
                "Pipeline(StandardScaler, LogisticRegression), 6 features, 3 classes (multinomial); "
                "label + probabilities tensor (zipmap=False)"
            ),
        ),
        ("sklearn_linreg", linreg, "reg", None, "Pipeline(StandardScaler, LinearRegression), 6 features -> 1 target"),
        (
            "sklearn_mlp_regressor",
            mlpr,
            "reg",
            None,
            "MLPRegressor(hidden (16, 8), tanh), 6 features -> 1 target, unscaled inputs",
        ),
    ]
    # inputs are drawn like the training data (feature-wise shifted/scaled normals)
    x = (
        np.random.default_rng(42).standard_normal((3, N_FEATURES)) * [1, 2, 0.5, 3, 1, 1] + [0, 1, -1, 2, 0, 5]
    ).astype(np.float32)
    entries = {}
    for name, model, kind, options, desc in specs:
        path = C.model_path(name)
        to_onnx(model, path, options)
        C.check_file(path)
        got = C.ort_run(path, {"x": x})
        if kind == "cls_zipmap":
            classes = list(model.classes_)
            got = [got[0], np.array([[d[c] for c in classes] for d in got[1]], dtype=np.float32)]
            want = sk_outputs(model, x, "cls")
        else:
            want = sk_outputs(model, x, kind)
        diff = C.compare(name, got, want)
        entries[name] = C.describe(
            name,
            exporter="skl2onnx",
            framework=FRAMEWORK,
            converter=CONVERTER,
            max_abs_diff=diff,
            description=desc,
            input_range="normal (per-feature scale [1,2,0.5,3,1,1], shift [0,1,-1,2,0,5])",
        )
        print(
            f"  {name}: {entries[name]['file_size']} bytes, ops {entries[name]['ops']}, "
            f"outputs {[(o['name'], o['shape'], o['dtype']) for o in entries[name]['outputs']]}"
        )
    C.update_manifest(entries)


if __name__ == "__main__":
    main()
