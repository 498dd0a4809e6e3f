"""Export models that compute values from the explained input where older rules wanted constants
(`datadep_*`): a condition, a comparison or a clip bound computed from the data.

Run from the repository root with the export environment (see models/README.md):

    /work/exportenv/bin/python models/export_datadep.py

The Keras model needs TensorFlow, which is kept in an environment of its own; its Python is taken
from $TF_PYTHON, default /work/tfenv/bin/python, and the script runs itself there with --keras:

    python3 -m venv /work/tfenv
    /work/tfenv/bin/pip install tensorflow-cpu==2.21.0 tf2onnx==1.17.0 onnx==1.23.2 \
        onnxruntime==1.32.0 scikit-learn

(scikit-learn only for models/export_keras.py's digits model; this script does not need it.)

- `datadep_audio_db_floor_ts`: an audio-style front end on a power spectrogram N x 1 x 16 x 24:
  10 * log10(clamp(x, 1e-10)), then the top-dB floor `torch.clamp(db, min=db.amax() - 80)`
  (torchaudio's AmplitudeToDB(top_db=80) for one clip: the max over the whole input), then
  Conv2d(1, 4, 3) + ReLU, a mean over time and frequency and Linear(4, 3). The TorchScript
  exporter (opset 17, do_constant_folding=False) writes the floor as Clip(db, Cast(ReduceMax(db) - 80)):
  a Clip whose lower bound depends on x.
- `datadep_keras_div_no_nan`: Keras Dense(12, relu), the activations L1-normalised with
  `tf.math.divide_no_nan(h, reduce_sum(h))`, weights below 0.1 zeroed with `tf.where(p > 0.1, p, 0)`,
  Dense(3); trained briefly on synthetic data. tf2onnx writes divide_no_nan as
  Where(Equal(sum, 0), 0, Div(h, sum)) (a condition computed from x) and the tf.where as
  Cast(Greater) * p + Cast(Not(Greater)) * 0.

Every model is checked (strict shape inference + full checker), run in onnxruntime on seeded
inputs, compared with the framework, checked to really carry its data-dependent input (the
script fails otherwise), and merged into models/manifest.json with "family": "datadep" and
"data_dependent": the nodes whose condition or bound input depends on x, as "Op[input]" strings.
`--out DIR` writes there instead (with a manifest.json of its own).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import warnings

import numpy as np
import onnx

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C

warnings.filterwarnings("ignore")

FAMILY = "datadep"
TF_PYTHON = os.environ.get("TF_PYTHON", "/work/tfenv/bin/python")

#: (op, input position) pairs whose input used to have to be constant: a condition or a bound.
_WATCHED = {("Where", 0), ("Clip", 1), ("Clip", 2)}
_COMPARISONS = {"Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual"}


def data_dependent(path: str, inputs: tuple[str, ...] = ("x",)) -> list[str]:
    """ "Op[k]" for each node whose condition / bound input k (or, for a comparison, any input)
    depends on the graph inputs, in graph order."""
    model = onnx.load(path)
    reached = set(inputs)
    found = []
    for node in model.graph.node:
        for k, name in enumerate(node.input):
            if name in reached and ((node.op_type, k) in _WATCHED or node.op_type in _COMPARISONS):
                found.append(f"{node.op_type}[{k}]")
        if any(i in reached for i in node.input):
            reached |= set(node.output)
    return found


# ----------------------------------------------------------------------------- torch


def export_torch() -> dict:
    import _torch_common as T  # also fixes torch's threads and determinism
    import torch
    from torch import nn

    class DbFloorFrontEnd(nn.Module):
        """Power spectrogram -> dB with an 80 dB floor below the clip's peak -> a small conv head."""

        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3, padding=1)
            self.fc = nn.Linear(4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:  # N x 1 x 16 x 24
            db = 10.0 * torch.log10(torch.clamp(x, min=1e-10))
            db = torch.clamp(db, min=db.amax() - 80.0)
            h = torch.relu(self.conv(db / 40.0 + 1.0))
            return self.fc(h.mean(dim=(2, 3)))

    name = "datadep_audio_db_floor_ts"
    path = C.model_path(name)
    torch.manual_seed(0)
    model = DbFloorFrontEnd().eval()
    g = np.random.default_rng(0)
    # Log-uniform power over 12 decades: the 80 dB floor binds on part of every clip.
    x = (10.0 ** g.uniform(-12, 0, (3, 1, 16, 24))).astype(np.float32)
    with torch.no_grad():
        T.export_ts(model, (torch.from_numpy(x),), path, ["x"], ["logits"], T.batch_axes(["x", "logits"], "N"))
    want = T.run_torch(model, {"x": x})
    C.check_file(path)
    diff = C.compare(name, C.ort_run(path, {"x": x}), want)
    found = data_dependent(path)
    assert "Clip[1]" in found, f"{name}: no Clip with a bound computed from x: {found}"
    return {
        name: C.describe(
            name,
            exporter=T.TS_EXPORTER,
            framework=T.FRAMEWORK,
            converter=T.TS_CONV,
            max_abs_diff=diff,
            description="audio-style front end on a power spectrogram N x 1 x 16 x 24: 10*log10(clamp(x, 1e-10)), "
            "the top-dB floor torch.clamp(db, min=db.amax() - 80) (exported as Clip with a bound from ReduceMax), "
            "Conv2d(1, 4, 3, padding=1), ReLU, mean over (freq, time), Linear(4, 3); random init (seed 0)",
            input_range=[0, 1],
            extra={"family": FAMILY, "data_dependent": found},
        )
    }


# ----------------------------------------------------------------------------- keras (in TF_PYTHON)


def export_keras() -> dict:
    import _keras_common as K  # before TensorFlow: hash seed, TF threads, determinism
    import tensorflow as tf

    keras = K.keras
    L = keras.layers

    class SafeNormalize(L.Layer):
        """h / sum(h) over the features, 0 where the sum is 0 (all units off)."""

        def call(self, h):
            return tf.math.divide_no_nan(h, tf.reduce_sum(h, axis=-1, keepdims=True))

    class Sparsify(L.Layer):
        """Weights below 0.1 set to 0."""

        def call(self, p):
            return tf.where(p > 0.1, p, tf.zeros_like(p))

    name = "datadep_keras_div_no_nan"
    path = C.model_path(name)
    K.seed(3)
    g = np.random.default_rng(3)
    X = g.standard_normal((1200, 10)).astype(np.float32)
    y = np.argmax(X[:, :3] + 0.5 * X[:, 3:6] ** 2, axis=1)
    inp = keras.Input((10,))
    h = L.Dense(12, activation="relu")(inp)
    out = L.Dense(3)(Sparsify()(SafeNormalize()(h)))
    model = keras.Model(inp, out)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    model.fit(X, y, epochs=5, batch_size=64, shuffle=True, verbose=0)

    K.convert(model, tf.TensorSpec((None, 10), tf.float32, name="x"), "logits", path)
    C.check_file(path)
    x = g.standard_normal((3, 10)).astype(np.float32)
    diff = C.compare(name, C.ort_run(path, {"x": x}), [model(x, training=False).numpy()])
    found = data_dependent(path)
    assert "Where[0]" in found, f"{name}: no Where with a condition computed from x: {found}"
    return {
        name: C.describe(
            name,
            exporter="tf2onnx",
            framework=K.FRAMEWORK,
            converter=K.CONVERTER,
            max_abs_diff=diff,
            description="Keras Dense(12, relu); tf.math.divide_no_nan(h, reduce_sum(h)) (tf2onnx: "
            "Where(Equal(sum, 0), 0, Div)); tf.where(p > 0.1, p, 0) (tf2onnx: Cast(Greater) * p + "
            "Cast(Not(Greater)) * 0); Dense(3) logits; trained 5 epochs on synthetic 3-class data",
            input_range="normal",
            extra={"family": FAMILY, "data_dependent": found},
        )
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--keras", action="store_true", help="only the Keras model (how the script runs itself in $TF_PYTHON)"
    )
    args = C.parse_args(__doc__, parser)
    if args.keras:
        C.update_manifest(export_keras())
        return
    entries = export_torch()
    C.update_manifest(entries)
    for name, entry in entries.items():
        print(f"  {name}: {entry['file_size']} bytes, ops {entry['ops']}, data-dependent {entry['data_dependent']}")
    # PYTHONHASHSEED=0 up front spares the child _keras_common's re-exec (see C.fix_hash_seed).
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    subprocess.run([TF_PYTHON, os.path.abspath(__file__), "--keras", "--out", C.OUT_DIR], check=True, env=env)


if __name__ == "__main__":
    main()
