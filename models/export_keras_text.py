"""Export small Keras token-id text classifiers to ONNX with tf2onnx (opset 17).

Run from the repository root with the export environment (see models/README.md):

    /work/exportenv/bin/python models/export_keras_text.py

Models: Sequential([Embedding(1000, 64), Conv1D(32, 3, relu), Global{Max,Average}Pooling1D,
Dense(1, sigmoid)]) over int32 token ids of length 50, trained for a few epochs on synthetic
data. Conversion goes through a `tf.function` + `tf2onnx.convert.from_function` exactly as in
export_keras.py (both use _keras_common.py), with a wider pattern for tf2onnx's constant names
(_keras_common.AUTO_NAME_ANY). Writes models/keras_text_{gmp,gap}.onnx, verifies each against
Keras in onnxruntime and updates models/manifest.json (every entry carries "family":
"sequence"). `--out DIR` writes there instead (with a manifest.json of its own).
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C
import _keras_common as K
import numpy as np
import tensorflow as tf

keras = K.keras
L = keras.layers

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
    m = keras.Sequential(
        [
            keras.Input((SEQ_LEN,), dtype="int32"),
            L.Embedding(VOCAB, EMBED_DIM),
            L.Conv1D(32, 3, activation="relu"),
            pool(),
            L.Dense(1, activation="sigmoid"),
        ]
    )
    m.compile(optimizer=keras.optimizers.Adam(1e-2), loss="binary_crossentropy", metrics=["accuracy"])
    m.fit(X[:1600], y[:1600], epochs=3, batch_size=64, shuffle=True, verbose=0)
    acc = m.evaluate(X[1600:], y[1600:], verbose=0)[1]
    print(f"{pool.__name__}: held-out accuracy {acc:.3f}")
    return m


def main():
    C.parse_args(__doc__)
    specs = [
        ("keras_text_gmp", make_model(L.GlobalMaxPooling1D, 20), "GlobalMaxPooling1D"),
        ("keras_text_gap", make_model(L.GlobalAveragePooling1D, 21), "GlobalAveragePooling1D"),
    ]
    entries = {}
    for name, model, pool_name in specs:
        path = C.model_path(name)
        K.convert(model, tf.TensorSpec((None, SEQ_LEN), IDS_DTYPE, name="x"), "prob", path, K.AUTO_NAME_ANY)
        C.check_file(path)
        diffs = []
        for seed_, n in ((42, 3), (7, 7)):
            x = np.random.default_rng(seed_).integers(0, VOCAB, (n, SEQ_LEN)).astype(np.int32)
            want = [model(x, training=False).numpy()]
            got = C.ort_run(path, {"x": x})
            diffs.append(C.compare(f"{name} (batch {n})", got, want))
        desc = (
            f"Keras token-id text classifier: int32 ids N x {SEQ_LEN} -> Embedding({VOCAB}, {EMBED_DIM}), "
            f"Conv1D(32, 3, relu), {pool_name}, Dense(1, sigmoid); trained briefly on synthetic data"
        )
        entries[name] = C.describe(
            name,
            exporter="tf2onnx",
            framework=K.FRAMEWORK,
            converter=K.CONVERTER,
            max_abs_diff=diffs[0],
            description=desc,
            input_range=[0, VOCAB - 1],
            extra={"family": FAMILY, "seq_len": SEQ_LEN, "vocab_size": VOCAB, "embedding_dim": EMBED_DIM},
        )
        e = entries[name]
        print(
            f"  {name}: {e['file_size']} bytes, {e['num_nodes']} nodes, inputs "
            f"{[(i['name'], i['dtype'], i['shape']) for i in e['inputs']]}, ops {e['ops']}"
        )
        assert e["file_size"] < 300_000, e["file_size"]
    C.update_manifest(entries)


if __name__ == "__main__":
    main()
