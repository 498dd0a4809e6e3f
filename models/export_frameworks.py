"""Save tiny framework models (not ONNX) for the `onnxshap convert` tests and examples.

Run from the repository root with the export environment (see models/README.md):

    /work/exportenv/bin/python models/export_frameworks.py            # all frameworks
    /work/exportenv/bin/python models/export_frameworks.py torch      # only some: torch keras sklearn

Writes, under models/frameworks/:

- keras_mlp.keras   Keras 3 native format: Input(6) -> Dense(8, relu) -> Dense(3, softmax)
- keras_mlp.h5      the same model in the legacy HDF5 format
- keras_cnn.keras   NHWC 8x8x1 -> Conv2D(4, 3x3, relu) -> MaxPooling2D(2) -> Flatten -> Dense(3, softmax)
- torch_cnn.pt      TorchScript (torch.jit.trace): N x 1 x 8 x 8 -> Conv2d(1, 4, 3) ReLU MaxPool2d(2)
                    Flatten Linear(3) Softmax. TorchScript stores no input shape: convert needs
                    `--input-shape 1,8,8`.
- torch_mlp.pt2     torch.export.save of an MLP 6 -> 8 (tanh) -> 3 with a dynamic batch dimension
                    (loading a .pt2 unpickles, so convert needs `--trust-pickle`)
- sklearn_logreg.joblib   Pipeline(StandardScaler, LogisticRegression), 6 features, 3 classes
- sklearn_mlp_regressor.pkl  MLPRegressor((8,), tanh), 6 features -> 1 target (plain pickle)

Weights come from fixed seeds (Keras and PyTorch models are untrained; the scikit-learn models
are fitted on seeded synthetic data), so the files are small and reproducible from this script.
The tests only need the files, never this script.
"""

from __future__ import annotations

import os
import sys

if os.environ.get("PYTHONHASHSEED") != "0":
    os.environ["PYTHONHASHSEED"] = "0"
    os.execv(sys.executable, [sys.executable] + sys.argv)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import pickle
import warnings

import numpy as np

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "frameworks")


def _report(name: str) -> None:
    print(f"  {name}: {os.path.getsize(os.path.join(OUT, name))} bytes")


def export_keras() -> None:
    import keras

    L = keras.layers
    keras.utils.set_random_seed(0)
    mlp = keras.Sequential(
        [keras.Input((6,), name="x"), L.Dense(8, activation="relu"), L.Dense(3, activation="softmax")]
    )
    mlp.save(os.path.join(OUT, "keras_mlp.keras"))
    _report("keras_mlp.keras")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Keras warns that HDF5 is a legacy format: that is the point here
        mlp.save(os.path.join(OUT, "keras_mlp.h5"))
    _report("keras_mlp.h5")
    keras.utils.set_random_seed(1)
    cnn = keras.Sequential(
        [
            keras.Input((8, 8, 1), name="x"),
            L.Conv2D(4, 3, activation="relu"),
            L.MaxPooling2D(2),
            L.Flatten(),
            L.Dense(3, activation="softmax"),
        ]
    )
    cnn.save(os.path.join(OUT, "keras_cnn.keras"))
    _report("keras_cnn.keras")


def export_torch() -> None:
    import torch
    from torch import nn

    torch.manual_seed(0)
    cnn = nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 3 * 3, 3), nn.Softmax(dim=1)
    ).eval()
    traced = torch.jit.trace(cnn, torch.rand(2, 1, 8, 8))
    torch.jit.save(traced, os.path.join(OUT, "torch_cnn.pt"))
    _report("torch_cnn.pt")

    class MLP(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.hidden = nn.Linear(6, 8)
            self.out = nn.Linear(8, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.out(torch.tanh(self.hidden(x)))

    torch.manual_seed(1)
    mlp = MLP().eval()
    batch = torch.export.Dim("batch", min=1, max=4096)
    program = torch.export.export(mlp, (torch.randn(2, 6),), dynamic_shapes={"x": {0: batch}})
    torch.export.save(program, os.path.join(OUT, "torch_mlp.pt2"))
    _report("torch_mlp.pt2")


def export_sklearn() -> None:
    import joblib
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPRegressor
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    g = np.random.default_rng(0)
    X = g.standard_normal((300, 6)) * [1, 2, 0.5, 3, 1, 1] + [0, 1, -1, 2, 0, 5]
    y = np.argmax(np.stack([X[:, 0] + X[:, 1], X[:, 2] - 0.3 * X[:, 3], 0.5 * X[:, 4] ** 2], 1), 1)
    logreg = Pipeline([("scale", StandardScaler()), ("clf", LogisticRegression(max_iter=500))]).fit(X, y)
    joblib.dump(logreg, os.path.join(OUT, "sklearn_logreg.joblib"))
    _report("sklearn_logreg.joblib")
    target = 1.5 * X[:, 0] - 0.7 * X[:, 1] + np.sin(X[:, 2])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning: a tiny fixture, not a good regressor
        mlpr = MLPRegressor(hidden_layer_sizes=(8,), activation="tanh", max_iter=200, random_state=0).fit(X, target)
    with open(os.path.join(OUT, "sklearn_mlp_regressor.pkl"), "wb") as f:
        pickle.dump(mlpr, f)
    _report("sklearn_mlp_regressor.pkl")


def main(argv: list[str]) -> None:
    exporters = {"keras": export_keras, "torch": export_torch, "sklearn": export_sklearn}
    chosen = argv or list(exporters)
    unknown = [c for c in chosen if c not in exporters]
    if unknown:
        raise SystemExit(f"unknown framework(s) {unknown}; choose from {list(exporters)}")
    os.makedirs(OUT, exist_ok=True)
    for name in chosen:
        print(f"{name}:")
        exporters[name]()


if __name__ == "__main__":
    main(sys.argv[1:])
