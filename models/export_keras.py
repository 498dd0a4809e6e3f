"""Export small Keras (tf.keras, Keras 3) models to ONNX with tf2onnx (opset 17).

Run from the repository root with the export environment (see models/README.md):

    /work/exportenv/bin/python models/export_keras.py

tf2onnx 1.17's `convert.from_keras` does not work with Keras 3 models (it fails with
`KeyError: 'keras_tensor_<n>'` while mapping output names), so each model is wrapped in a
`tf.function` (inference mode) and converted with `tf2onnx.convert.from_function` -- the
same TF graph -> ONNX conversion path, without the Keras-2-only name lookup.

Writes models/keras_<name>.onnx, verifies each against Keras in onnxruntime and updates
models/manifest.json.
"""
from __future__ import annotations

import os
import sys

if os.environ.get("PYTHONHASHSEED") != "0":
    # tf2onnx de-duplicates constants through set/dict iteration over strings, so the chosen
    # initializer names depend on the hash seed; re-exec with a fixed one for byte-stable files.
    os.environ["PYTHONHASHSEED"] = "0"
    os.execv(sys.executable, [sys.executable] + sys.argv)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ.setdefault("TF_DETERMINISTIC_OPS", "1")

import re  # noqa: E402

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf2onnx  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402

tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(1)
tf.config.experimental.enable_op_determinism()
keras = tf.keras
L = keras.layers

OPSET = 17
FRAMEWORK = f"tensorflow {tf.__version__}, keras {keras.__version__}"
CONVERTER = f"tf2onnx {tf2onnx.__version__} (convert.from_function), opset {OPSET}"


def seed(s: int) -> None:
    keras.utils.set_random_seed(s)


def make_mlp():
    seed(0)
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
    seed(1)
    d = load_digits()
    X = (d.images / 16.0).astype(np.float32)[..., None]  # NHWC
    y = d.target.astype(np.int64)
    idx = np.random.default_rng(0).permutation(len(X))
    tr, te = idx[:1400], idx[1400:]
    m = keras.Sequential([
        keras.Input((8, 8, 1)),
        L.Conv2D(8, 3, padding="same", activation="relu"),
        L.MaxPooling2D(2),
        L.Flatten(),
        L.Dense(10, activation="softmax"),
    ])
    m.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    m.fit(X[tr], y[tr], epochs=5, batch_size=64, shuffle=True, verbose=0)
    acc = m.evaluate(X[te], y[te], verbose=0)[1]
    print(f"keras_cnn: held-out accuracy {acc:.3f}")
    assert acc > 0.8, acc
    return m


def make_resblock():
    seed(2)
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
            layer.set_weights([
                g.uniform(0.5, 1.5, gamma.shape).astype(np.float32),
                g.normal(0.0, 0.2, beta.shape).astype(np.float32),
                g.normal(0.0, 0.5, mean.shape).astype(np.float32),
                g.uniform(0.5, 2.0, var.shape).astype(np.float32),
            ])
    return m


_AUTO_NAME = re.compile(r"^const\w*__\d+$")


def canonicalize_constants(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Give tf2onnx's auto-numbered constant initializers stable names and order.

    tf2onnx walks sets of node objects (extract_sub_graph_nodes), so which of several
    identical constants survives its de-duplication -- and hence its name, e.g.
    `const_starts__20` vs `const_axes__22` -- changes from run to run. Renaming those
    initializers to `const__<k>` (k = order of first use) and ordering the initializers by
    first use makes the file byte-stable; values and graph structure are untouched.
    """
    g = proto.graph
    inits = {i.name: i for i in g.initializer}
    first_use = {}
    for n in g.node:
        for name in n.input:
            if name in inits and name not in first_use:
                first_use[name] = len(first_use)
    rename, k = {}, 0
    for name in sorted(first_use, key=first_use.get):
        if _AUTO_NAME.match(name):
            rename[name] = f"const__{k}"
            k += 1
    assert not set(rename.values()) & set(inits), "canonical name clash"
    ordered = sorted(g.initializer, key=lambda i: (first_use.get(i.name, len(first_use)), i.name))
    for i in ordered:
        i.name = rename.get(i.name, i.name)
    for n in g.node:
        n.input[:] = [rename.get(x, x) for x in n.input]
    g.ClearField("initializer")
    g.initializer.extend(ordered)
    return proto


def convert(model, in_shape, out_name, path):
    spec = (tf.TensorSpec((None,) + in_shape, tf.float32, name="x"),)

    @tf.function(input_signature=spec)
    def fn(x):
        return {out_name: model(x, training=False)}

    proto, _ = tf2onnx.convert.from_function(fn, input_signature=spec, opset=OPSET)
    onnx.save(canonicalize_constants(proto), path)


def main():
    normal = lambda g, s: g.standard_normal(s).astype(np.float32)  # noqa: E731
    unit = lambda g, s: g.random(s).astype(np.float32)  # noqa: E731
    specs = [
        ("keras_mlp", make_mlp(), (10,), normal, "probs",
         "Keras MLP 10 -> Dense(32, relu) -> Dense(3, softmax); trained on synthetic 3-class data", "normal"),
        ("keras_cnn", make_cnn(), (8, 8, 1), unit, "probs",
         "Keras CNN on sklearn digits, NHWC 8x8x1 (pixels/16): Conv2D(8, 3x3, same, relu) MaxPooling2D "
         "Flatten Dense(10, softmax)", [0, 1]),
        ("keras_resblock", make_resblock(), (16, 16, 3), normal, "logits",
         "Keras residual block, NHWC 16x16x3: Conv2D-BN-ReLU-Conv2D-BN + 1x1 Conv2D projection Add, ReLU, "
         "GlobalAveragePooling2D, Dense(4); random BN stats (inference mode)", "normal"),
    ]
    entries = {}
    for name, model, shape, sampler, out_name, desc, rng_desc in specs:
        path = C.model_path(name)
        convert(model, shape, out_name, path)
        C.check_file(path)
        x = sampler(np.random.default_rng(42), (3,) + shape)
        want = [model(x, training=False).numpy()]
        got = C.ort_run(path, {"x": x})
        diff = C.compare(name, got, want)
        entries[name] = C.describe(name, exporter="tf2onnx", framework=FRAMEWORK, converter=CONVERTER,
                                   max_abs_diff=diff, description=desc, input_range=rng_desc)
        print(f"  {name}: {entries[name]['file_size']} bytes, ops {entries[name]['ops']}")
    C.update_manifest(entries)


if __name__ == "__main__":
    main()
