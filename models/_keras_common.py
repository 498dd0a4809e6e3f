"""Keras/tf2onnx helpers of the export scripts: settings, seeding, the conversion.

Import it before anything imports TensorFlow: it re-executes the script with PYTHONHASHSEED=0
(see _common.fix_hash_seed), quiets TensorFlow and hides any GPU, then makes TensorFlow
single-threaded and deterministic. Only used by models/export_*.py.

tf2onnx 1.17's `convert.from_keras` does not work with Keras 3 models (it fails with
`KeyError: 'keras_tensor_<n>'` while mapping output names), so each model is wrapped in a
`tf.function` (inference mode) and converted with `tf2onnx.convert.from_function`: the same
TF graph -> ONNX conversion path, without the Keras-2-only name lookup.
"""

from __future__ import annotations

import os
import re

import _common as C

C.fix_hash_seed()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ.setdefault("TF_DETERMINISTIC_OPS", "1")

import onnx
import tensorflow as tf
import tf2onnx

tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(1)
tf.config.experimental.enable_op_determinism()
keras = tf.keras

OPSET = 17
FRAMEWORK = f"tensorflow {tf.__version__}, keras {keras.__version__}"
CONVERTER = f"tf2onnx {tf2onnx.__version__} (convert.from_function), opset {OPSET}"

#: tf2onnx's auto-numbered constant initializer names, e.g. `const_starts__20`, `const__3`.
AUTO_NAME = re.compile(r"^const\w*__\d+$")
#: Wider: also `axes_const__73__74`, which de-duplication sometimes keeps (and sometimes a
#: `const__<n>`) for the same Squeeze axes, run to run, in the text models.
AUTO_NAME_ANY = re.compile(r"^\w*const\w*__\d+$")


def seed(s: int) -> None:
    """Seed Python, numpy and TensorFlow (keras.utils.set_random_seed)."""
    keras.utils.set_random_seed(s)


def canonicalize_constants(proto: onnx.ModelProto, auto_name: re.Pattern[str] = AUTO_NAME) -> onnx.ModelProto:
    """Give tf2onnx's auto-numbered constant initializers stable names and order (in place).

    tf2onnx walks sets of node objects (extract_sub_graph_nodes), so which of several
    identical constants survives its de-duplication -- and hence its name, e.g.
    `const_starts__20` vs `const_axes__22` -- changes from run to run. Renaming the
    initializers whose name matches `auto_name` to `const__<k>` (k = order of first use) and
    ordering the initializers by first use makes the file byte-stable; values and graph
    structure are untouched.
    """
    g = proto.graph
    inits = {i.name: i for i in g.initializer}
    first_use: dict[str, int] = {}
    for n in g.node:
        for name in n.input:
            if name in inits and name not in first_use:
                first_use[name] = len(first_use)
    auto = [n for n in sorted(first_use, key=first_use.get) if auto_name.match(n)]
    rename = {name: f"const__{k}" for k, name in enumerate(auto)}
    # A renamed name may take a canonical one that another renamed initializer gives up.
    assert not set(rename.values()) & (set(inits) - set(rename)), "canonical name clash"
    ordered = sorted(g.initializer, key=lambda i: (first_use.get(i.name, len(first_use)), i.name))
    for i in ordered:
        i.name = rename.get(i.name, i.name)
    for n in g.node:
        n.input[:] = [rename.get(x, x) for x in n.input]
    g.ClearField("initializer")
    g.initializer.extend(ordered)
    return proto


def convert(
    model: keras.Model, spec: tf.TensorSpec, out_name: str, path: str, auto_name: re.Pattern[str] = AUTO_NAME
) -> None:
    """Convert `model` (one input, `spec`; one output, `out_name`) in inference mode to `path`,
    opset 17, with canonicalize_constants(auto_name)."""
    sig = (spec,)

    @tf.function(input_signature=sig)
    def fn(x):
        return {out_name: model(x, training=False)}

    proto, _ = tf2onnx.convert.from_function(fn, input_signature=sig, opset=OPSET)
    onnx.save(canonicalize_constants(proto, auto_name), path)
