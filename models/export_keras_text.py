"""Export small Keras token-id text classifiers to ONNX with tf2onnx (opset 17).

Run from the repository root with the export environment (see models/README.md):

    /work/exportenv/bin/python models/export_keras_text.py

Models: Sequential([Embedding(1000, 64), Conv1D(32, 3, relu), Global{Max,Average}Pooling1D,
Dense(1, sigmoid)]) over int32 token ids of length 50, trained for a few epochs on synthetic
data. Conversion goes through a `tf.function` + `tf2onnx.convert.from_function` exactly as in
export_keras.py (whose settings and seeding this script reuses). Writes models/keras_text_{gmp,gap}.onnx,
verifies each against Keras in onnxruntime and updates models/manifest.json (every entry
carries "family": "sequence").
"""
from __future__ import annotations

import os
import sys

if os.environ.get("PYTHONHASHSEED") != "0":
    # tf2onnx's constant de-duplication depends on the hash seed (see export_keras.py).
    os.environ["PYTHONHASHSEED"] = "0"
    os.execv(sys.executable, [sys.executable] + sys.argv)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ.setdefault("TF_DETERMINISTIC_OPS", "1")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import re  # noqa: E402

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf2onnx  # noqa: E402

import _common as C  # noqa: E402
import export_keras as K  # noqa: E402  (thread/determinism settings, seed, versions)

keras = tf.keras
L = keras.layers

OPSET = K.OPSET
FRAMEWORK = K.FRAMEWORK
CONVERTER = K.CONVERTER
FAMILY = "sequence"

VOCAB = 1000
EMBED_DIM = 64
SEQ_LEN = 50
IDS_DTYPE = tf.int32  # Keras' own index dtype for Embedding; the ONNX input keeps it


def make_data(g, n):
    """Token ids in [0, VOCAB); label 1 when ids 1..40 outnumber ids 41..80."""
    X = g.integers(0, VOCAB, (n, SEQ_LEN)).astype(np.int32)
    pos = ((X >= 1) & (X <= 40)).sum(1)
    neg = ((X >= 41) & (X <= 80)).sum(1)
    return X, (pos > neg).astype(np.float32)


def make_model(pool, seed):
    K.seed(seed)
    g = np.random.default_rng(seed)
    X, y = make_data(g, 2000)
    m = keras.Sequential([
        keras.Input((SEQ_LEN,), dtype="int32"),
        L.Embedding(VOCAB, EMBED_DIM),
        L.Conv1D(32, 3, activation="relu"),
        pool(),
        L.Dense(1, activation="sigmoid"),
    ])
    m.compile(optimizer=keras.optimizers.Adam(1e-2), loss="binary_crossentropy", metrics=["accuracy"])
    m.fit(X[:1600], y[:1600], epochs=3, batch_size=64, shuffle=True, verbose=0)
    acc = m.evaluate(X[1600:], y[1600:], verbose=0)[1]
    print(f"{pool.__name__}: held-out accuracy {acc:.3f}")
    return m


# tf2onnx's auto-numbered constant names come in more shapes than export_keras.py's pattern
# covers: here de-duplication sometimes keeps `axes_const__73__74` (and sometimes a `const__<n>`)
# for the same Squeeze axes, run to run. Match every `...const...__<n>` initializer name.
_AUTO_NAME = re.compile(r"^\w*const\w*__\d+$")


def canonicalize_constants(proto: onnx.ModelProto) -> onnx.ModelProto:
    """export_keras.canonicalize_constants with the wider auto-name pattern above."""
    g = proto.graph
    inits = {i.name: i for i in g.initializer}
    first_use = {}
    for n in g.node:
        for name in n.input:
            if name in inits and name not in first_use:
                first_use[name] = len(first_use)
    auto = [n for n in sorted(first_use, key=first_use.get) if _AUTO_NAME.match(n)]
    rename = {name: f"const__{k}" for k, name in enumerate(auto)}
    assert not set(rename.values()) & (set(inits) - set(rename)), "canonical name clash"
    ordered = sorted(g.initializer, key=lambda i: (first_use.get(i.name, len(first_use)), i.name))
    for i in ordered:
        i.name = rename.get(i.name, i.name)
    for n in g.node:
        n.input[:] = [rename.get(x, x) for x in n.input]
    g.ClearField("initializer")
    g.initializer.extend(ordered)
    return proto


def convert(model, out_name, path):
    spec = (tf.TensorSpec((None, SEQ_LEN), IDS_DTYPE, name="x"),)

    @tf.function(input_signature=spec)
    def fn(x):
        return {out_name: model(x, training=False)}

    proto, _ = tf2onnx.convert.from_function(fn, input_signature=spec, opset=OPSET)
    onnx.save(canonicalize_constants(proto), path)


def main():
    specs = [
        ("keras_text_gmp", make_model(L.GlobalMaxPooling1D, 20), "GlobalMaxPooling1D"),
        ("keras_text_gap", make_model(L.GlobalAveragePooling1D, 21), "GlobalAveragePooling1D"),
    ]
    entries = {}
    for name, model, pool_name in specs:
        path = C.model_path(name)
        convert(model, "prob", path)
        C.check_file(path)
        diffs = []
        for seed_, n in ((42, 3), (7, 7)):
            x = np.random.default_rng(seed_).integers(0, VOCAB, (n, SEQ_LEN)).astype(np.int32)
            want = [model(x, training=False).numpy()]
            got = C.ort_run(path, {"x": x})
            diffs.append(C.compare(f"{name} (batch {n})", got, want))
        desc = (f"Keras token-id text classifier: int32 ids N x {SEQ_LEN} -> Embedding({VOCAB}, {EMBED_DIM}), "
                f"Conv1D(32, 3, relu), {pool_name}, Dense(1, sigmoid); trained briefly on synthetic data")
        entries[name] = C.describe(
            name, exporter="tf2onnx", framework=FRAMEWORK, converter=CONVERTER, max_abs_diff=diffs[0],
            description=desc, input_range=[0, VOCAB - 1],
            extra={"family": FAMILY, "seq_len": SEQ_LEN, "vocab_size": VOCAB, "embedding_dim": EMBED_DIM})
        e = entries[name]
        print(f"  {name}: {e['file_size']} bytes, {e['num_nodes']} nodes, inputs "
              f"{[(i['name'], i['dtype'], i['shape']) for i in e['inputs']]}, ops {e['ops']}")
        assert e["file_size"] < 300_000, e["file_size"]
    C.update_manifest(entries)


if __name__ == "__main__":
    main()
