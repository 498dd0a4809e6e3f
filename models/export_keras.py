"""Export small Keras (tf.keras, Keras 3) models to ONNX with tf2onnx (opset 17).

Run from the repository root with the export environment (see models/README.md):

    /work/exportenv/bin/python models/export_keras.py

Conversion: a `tf.function` + `tf2onnx.convert.from_function` (see _keras_common.py for why not
`convert.from_keras`). Writes models/keras_<name>.onnx, verifies each against Keras in
onnxruntime and updates models/manifest.json. `--out DIR` writes there instead (with a
manifest.json of its own).
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C
import _keras_common as K
import numpy as np
import tensorflow as tf
from sklearn.datasets import load_digits

keras = K.keras
L = keras.layers


def make_mlp():
    K.seed(0)
    g = np.random.default_rng(0)
    X = g.standard_normal((1500, 10)).astype(np.float32)
    W = g.standard_normal((10, 3))
    y = np.argmax(np.tanh(X @ W) + 0.5 * (X[:, :3] ** 2), axis=1)
    m = keras.Sequential([keras.Input((10,)), L.Dense(32, activation="relu"), L.Dense(3, activation="softmax")])
    m.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    m.fit(X[:1200], y[:1200], epochs=10, batch_size=64, shuffle=True, verbose=0)
    acc = m.evaluate(X[1200:], y[1200:], verbose=0)[1]
    print(f"keras_mlp: held-out accuracy {acc:.3f}")
    return m


def make_cnn():
    K.seed(1)
    d = load_digits()
    X = (d.images / 16.0).astype(np.float32)[..., None]  # NHWC
    y = d.target.astype(np.int64)
    idx = np.random.default_rng(0).permutation(len(X))
    tr, te = idx[:1400], idx[1400:]
    m = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            L.Conv2D(8, 3, padding="same", activation="relu"),
            L.MaxPooling2D(2),
            L.Flatten(),
            L.Dense(10, activation="softmax"),
        ]
    )
    m.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    m.fit(X[tr], y[tr], epochs=5, batch_size=64, shuffle=True, verbose=0)
    acc = m.evaluate(X[te], y[te], verbose=0)[1]
    print(f"keras_cnn: held-out accuracy {acc:.3f}")
    assert acc > 0.8, acc
    return m


def make_resblock():
    K.seed(2)
    inp = keras.Input((16, 16, 3))
    h = L.Conv2D(8, 3, padding="same", use_bias=False)(inp)
    h = L.BatchNormalization()(h)
    h = L.ReLU()(h)
    h = L.Conv2D(8, 3, padding="same", use_bias=False)(h)
    h = L.BatchNormalization()(h)
    h = L.Add()([h, L.Conv2D(8, 1)(inp)])
    h = L.ReLU()(h)
    h = L.GlobalAveragePooling2D()(h)
    out = L.Dense(4)(h)
    m = keras.Model(inp, out)
    g = np.random.default_rng(2)
    for layer in m.layers:
        if isinstance(layer, L.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights(
                [
                    g.uniform(0.5, 1.5, gamma.shape).astype(np.float32),
                    g.normal(0.0, 0.2, beta.shape).astype(np.float32),
                    g.normal(0.0, 0.5, mean.shape).astype(np.float32),
                    g.uniform(0.5, 2.0, var.shape).astype(np.float32),
                ]
            )
    return m


def main():
    C.parse_args(__doc__)
    normal, unit = C.normal, C.unit
    specs = [
        (
            "keras_mlp",
            make_mlp(),
            (10,),
            normal,
            "probs",
            "Keras MLP 10 -> Dense(32, relu) -> Dense(3, softmax); trained on synthetic 3-class data",
            "normal",
        ),
        (
            "keras_cnn",
            make_cnn(),
            (8, 8, 1),
            unit,
            "probs",
            (
                "Keras CNN on sklearn digits, NHWC 8x8x1 (pixels/16): Conv2D(8, 3x3, same, relu) MaxPooling2D "
                "Flatten Dense(10, softmax)"
            ),
            [0, 1],
        ),
        (
            "keras_resblock",
            make_resblock(),
            (16, 16, 3),
            normal,
            "logits",
            (
                "Keras residual block, NHWC 16x16x3: Conv2D-BN-ReLU-Conv2D-BN + 1x1 Conv2D projection Add, ReLU, "
                "GlobalAveragePooling2D, Dense(4); random BN stats (inference mode)"
            ),
            "normal",
        ),
    ]
    entries = {}
    for name, model, shape, sampler, out_name, desc, rng_desc in specs:
        path = C.model_path(name)
        K.convert(model, tf.TensorSpec((None,) + shape, tf.float32, name="x"), out_name, path)
        C.check_file(path)
        x = sampler(np.random.default_rng(42), (3,) + shape)
        want = [model(x, training=False).numpy()]
        got = C.ort_run(path, {"x": x})
        diff = C.compare(name, got, want)
        entries[name] = C.describe(
            name,
            exporter="tf2onnx",
            framework=K.FRAMEWORK,
            converter=K.CONVERTER,
            max_abs_diff=diff,
            description=desc,
            input_range=rng_desc,
        )
        print(f"  {name}: {entries[name]['file_size']} bytes, ops {entries[name]['ops']}")
    C.update_manifest(entries)


if __name__ == "__main__":
    main()
